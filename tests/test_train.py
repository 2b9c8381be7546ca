"""The training step: one entry point (``TrainStep.step``), and the CUDA-graph replay of a whole step."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

import mfsearch
from mfsearch.errors import InputError
from mfsearch.evaluation.settings import Evaluation
from mfsearch.evaluation.train import GRAPH_WARMUP_STEPS, TrainStep, train_and_evaluate
from mfsearch.space import load_space


def _batches(n: int, device: str, size: int = 32, batch: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(batch, 3, size, size, generator=g).to(device),
             torch.randint(0, 10, (batch,), generator=g).to(device)) for _ in range(n)]


def _trainer(device: str, **ev) -> TrainStep:
    torch.manual_seed(0)
    model = mfsearch.create_model("mobile_former_26m", num_classes=10, dropout=0.0)
    ev = Evaluation(lr=2e-3, weight_decay=0.05, label_smoothing=0.1, precision="fp32", device=device, **ev)
    return TrainStep(model, ev, torch.device(device), total=20, warmup=3)


def test_step_is_loss_then_update():
    a, b = _trainer("cpu"), _trainer("cpu")
    assert not a.graphs  # graphs are a CUDA feature
    for x, y in _batches(4, "cpu"):
        la = a.step(x, y)
        lb = b.loss(x, y)
        b.backward_step(lb)
        assert not la.requires_grad
        torch.testing.assert_close(la, lb.detach(), rtol=0, atol=0)
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    assert a.sched.get_last_lr() == b.sched.get_last_lr()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_cuda_graph_step_trains_like_the_eager_step():
    graphed, eager = _trainer("cuda"), _trainer("cuda", cuda_graphs=False)
    assert graphed.graphs and not eager.graphs
    batches = _batches(GRAPH_WARMUP_STEPS + 6, "cuda")
    for x, y in batches:
        torch.testing.assert_close(graphed.step(x, y), eager.step(x, y), rtol=1e-3, atol=1e-4)
    assert graphed._graph is not None, "the step was never captured"
    # a batch of another shape runs eagerly beside the graph
    x, y = _batches(1, "cuda", batch=5)[0]
    torch.testing.assert_close(graphed.step(x, y), eager.step(x, y), rtol=1e-3, atol=1e-4)
    for p, q in zip(graphed.model.parameters(), eager.model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4)
    for m, n in zip(graphed.model.buffers(), eager.model.buffers()):  # BatchNorm statistics move in the graph
        torch.testing.assert_close(m, n, rtol=1e-3, atol=1e-4)
    assert float(graphed.sched.get_last_lr()[0]) == pytest.approx(eager.sched.get_last_lr()[0])


def test_cuda_graphs_setting(tmp_path, tiny_space):
    on = load_space(tiny_space(tmp_path))
    off = load_space(tiny_space(tmp_path, evaluation={"cuda_graphs": False}))
    assert on.evaluation.cuda_graphs and not off.evaluation.cuda_graphs
    assert on.evaluation.eval_id() == off.evaluation.eval_id()  # same results, stored together
    with pytest.raises(InputError, match="evaluation.cuda_graphs"):
        load_space(tiny_space(tmp_path, evaluation={"cuda_graphs": "sometimes"}))


TINY_EV = Evaluation(image_size=16, train_size=256, val_size=128, epochs=2, batch_size=64, lr=0.01, augment=False,
                     warmup_epochs=0.1, threads=1, seed=0)


def test_evaluating_after_every_epoch_does_not_change_training():
    cfg = mfsearch.get_config("mobile_former_26m")
    assert cfg.dropout > 0  # the head's dropout draws from the global RNG in train mode (BN recalibration)
    every = train_and_evaluate(cfg, TINY_EV)
    once = train_and_evaluate(cfg, TINY_EV, evaluate_every_epoch=False)
    assert [("val_acc" in h) for h in every.history] == [True, True]
    assert [("val_acc" in h) for h in once.history] == [False, True]
    assert once.accuracy == every.accuracy
    assert once.history[-1]["train_loss"] == every.history[-1]["train_loss"]  # the same second epoch, bit for bit
    assert once.eval_s < every.eval_s


def test_deterministic_setting_trains_under_deterministic_algorithms_and_restores(tmp_path, tiny_space):
    seen = []
    ev = dataclasses.replace(TINY_EV, epochs=1, augment=True, deterministic=True)
    assert not torch.are_deterministic_algorithms_enabled()
    res = train_and_evaluate(mfsearch.get_config("mobile_former_26m"), ev,
                             report=lambda step, m: seen.append(torch.are_deterministic_algorithms_enabled()))
    assert seen == [True] and 0 <= res.accuracy <= 100
    assert not torch.are_deterministic_algorithms_enabled()
    assert load_space(tiny_space(tmp_path, evaluation={"deterministic": True})).evaluation.deterministic
    with pytest.raises(InputError, match="evaluation.deterministic"):
        load_space(tiny_space(tmp_path, evaluation={"deterministic": "yes"}))


# eval_ids of the shipped files: new fields enter the hash only off their defaults, so stored results stay found.
# The macs spaces ship val_size 5000 since the proxy sweep (0690aee35625); their earlier proxy (val_size 1000)
# keeps its id 286cf287a99b, computed before evaluation.deterministic existed.
SHIPPED_EVAL_IDS = {"spaces/macs150.yaml": "0690aee35625", "spaces/macs300.yaml": "0690aee35625",
                    "spaces/macs50.yaml": "0690aee35625", "spaces/tiny.yaml": "b4f1ec47db21",
                    "experiments/activation.yaml": "0690aee35625",  # evaluation: {from: spaces/macs300.yaml}
                    "experiments/tokens_294m.yaml": "0690aee35625"}


def test_eval_ids_of_shipped_settings_are_unchanged(load):
    from mfsearch.ablation import load_experiment

    root = Path(__file__).parent.parent
    for rel, eid in SHIPPED_EVAL_IDS.items():
        load = load_space if rel.startswith("spaces/") else load_experiment
        assert load(root / rel).evaluation.eval_id() == eid, rel
    assert Evaluation().eval_id() == "34d27605e045" and Evaluation(precision="bf16").eval_id() == "c9635e52640e"
    base = load_space(root / "spaces/macs300.yaml").evaluation
    for how in ({"deterministic": True}, {"threads": 2}, {"deterministic": True, "threads": 1}):
        assert dataclasses.replace(base, **how).eval_id() == base.eval_id(), how  # how, not what: stored together
    assert dataclasses.replace(base, val_size=1000).eval_id() == "286cf287a99b"  # the proxy shipped before
    assert dataclasses.replace(base, val_size=1000).eval_id() != base.eval_id()
