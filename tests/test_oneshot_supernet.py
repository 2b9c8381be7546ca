"""The weight-sharing supernet: every sub-network equals the ordinary model carrying its sliced weights.

float64 is the correctness proof: the supernet run at ``cfg`` and ``extract(cfg)`` give the same
logits (eval and train mode) and the same gradients for the shared weights, over a seeded sample
covering every elastic knob at both ends; the extracted model's MACs equal fvcore and
``complexity(cfg)``; a sub-network takes the matching parts of the concatenated tensors.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from fvcore.nn import FlopCountAnalysis

from mfsearch.errors import InputError
from mfsearch.models import ConfigError, complexity, count_params
from mfsearch.oneshot import Supernet
from mfsearch.oneshot.skeleton import numpy_suggest
from mfsearch.space import load_space
from mfsearch.space.parse import space_from_data
from mfsearch.space.sample import knob_dists, sample_config

logging.getLogger("fvcore").setLevel(logging.ERROR)
SPACE = Path(__file__).resolve().parents[1] / "spaces" / "tiny_oneshot.yaml"
CLASSES = 10
SIZE = 16


def variant(tmp_path: Path | None = None, **space_changes) -> object:
    """The tiny one-shot space with some ``space`` knobs changed (written to ``tmp_path`` when given)."""
    data = yaml.safe_load(SPACE.read_text())
    data["space"].update(space_changes)
    # the supernet refuses what it cannot share whatever the strategy (with oneshot, loading the file refuses it
    # already: tests/test_oneshot_search.py)
    data["evaluation"]["strategy"] = "standalone"
    if tmp_path is None:
        return space_from_data(data, "tiny_oneshot_variant.yaml", {})
    p = tmp_path / "variant.yaml"
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_space(p)


def sample(space, seed: int, n: int) -> tuple[list, dict[str, set]]:
    """``n`` buildable configs from a seeded numpy Generator, and the knob values they used."""
    rng = np.random.default_rng(seed)
    inner = numpy_suggest(rng)
    cfgs, seen = [], defaultdict(set)
    while len(cfgs) < n:
        used = {}

        def suggest(name, d, used=used):
            used[name] = inner(name, d)
            return used[name]

        try:
            cfgs.append(sample_config(space, suggest, CLASSES))
        except ConfigError:
            continue
        for k, v in used.items():
            seen[k].add(v)
    return cfgs, seen


def randomize_norms(net: torch.nn.Module) -> None:
    """Non-trivial BatchNorm statistics and affine parameters (fresh ones would hide a slicing error)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                for t, lo, hi in ((m.running_mean, -0.5, 0.5), (m.running_var, 0.5, 2.0), (m.weight, 0.5, 1.5),
                                  (m.bias, -0.3, 0.3)):
                    t.copy_(torch.rand(t.shape, generator=g, dtype=t.dtype) * (hi - lo) + lo)


def make_net(space) -> Supernet:
    torch.manual_seed(0)
    net = Supernet(space, CLASSES).double()
    randomize_norms(net)
    return net


def inputs(batch: int = 6) -> torch.Tensor:
    return torch.randn(batch, 3, SIZE, SIZE, dtype=torch.float64, generator=torch.Generator().manual_seed(2))


def assert_same_logits(net: Supernet, cfgs: list) -> None:
    x = inputs()
    net.eval()
    outs = []
    for cfg in cfgs:
        model = net.extract(cfg).eval()
        a, b = net(x, cfg), model(x)
        assert a.shape == (x.shape[0], CLASSES)
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10, msg=cfg.summary())
        outs.append(a)
    assert all(not torch.allclose(outs[0], o) for o in outs[1:]), "different sub-networks gave the same logits"


def test_sample_covers_every_elastic_knob_at_both_ends_and_matches_the_extracted_model():
    space = load_space(SPACE)
    net = make_net(space)
    cfgs, seen = sample(space, seed=0, n=24)
    dists = knob_dists(space)
    assert {"num_tokens", "token_dim", "stem", "head", "bridge_heads", "lite.out", "lite.e1", "stages.0.down_e1",
            "stages.0.down_e2", "stages.1.depth", "stages.1.e1"} <= set(dists)
    for name, d in dists.items():
        lo, hi = min(d.bounds()), max(d.bounds())
        assert {lo, hi} <= seen[name], f"{name}: the sample misses an end ({sorted(seen[name])} of [{lo}, {hi}])"
    assert_same_logits(net, [net.largest, net.smallest, *cfgs])


@pytest.mark.parametrize("changes", [
    {"activation": "prelu", "projections": "full", "arrangement": "serial", "gate": False},
    {"activation": "hswish", "bridges": "mobile_to_former", "former": False},
    {"bridges": "former_to_mobile", "ffn": False, "width_mult": 0.75},
    {"bridges": "none", "former": False, "activation": "relu6"},
], ids=["prelu-full-serial-nogate", "hswish-m2f-noformer", "f2m-noffn-width0.75", "nobridges-relu6"])
def test_constant_variants_match_the_extracted_model(changes):
    space = variant(**changes)
    net = make_net(space)
    cfgs, _ = sample(space, seed=1, n=5)
    assert_same_logits(net, [net.largest, net.smallest, *cfgs])


def _grads_of(net: Supernet, cfg) -> dict[str, torch.Tensor]:
    """The supernet's gradient sliced like the sub-network's weights (the same index sets as its weights)."""
    with torch.no_grad():
        saved = [p.detach().clone() for p in net.parameters()]
        for p in net.parameters():
            p.copy_(p.grad if p.grad is not None else torch.zeros_like(p))
        out = {k: v.clone() for k, v in net.state_of(cfg).items()}
        for p, s in zip(net.parameters(), saved):
            p.copy_(s)
    return out


@pytest.mark.parametrize("which", ["largest", "random", "smallest"])
def test_train_mode_same_logits_gradients_and_statistics(which):
    space = load_space(SPACE)
    net = make_net(space).train()
    cfg = {"largest": net.largest, "smallest": net.smallest}.get(which) or sample(space, seed=3, n=1)[0][0]
    model = net.extract(cfg).train()
    x = inputs(8)
    y = torch.arange(8) % CLASSES
    torch.manual_seed(5)  # the same dropout mask in both
    a = net(x, cfg)
    torch.manual_seed(5)
    b = model(x)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    torch.nn.functional.cross_entropy(a, y).backward()
    torch.nn.functional.cross_entropy(b, y).backward()
    grads = _grads_of(net, cfg)
    n_checked = 0
    for name, p in model.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, rtol=0, atol=1e-10, msg=name)
        n_checked += 1
    assert n_checked == len(list(model.parameters()))
    # no gradient reaches weights outside the sub-network
    total = sum(p.grad.abs().sum() for p in net.parameters() if p.grad is not None)
    torch.testing.assert_close(total, sum(p.grad.abs().sum() for p in model.parameters()), rtol=1e-12, atol=0)
    # BatchNorm statistics moved alike (the supernet's slices are the sub-network's)
    state = net.state_of(cfg)
    for name, buf in model.named_buffers():
        torch.testing.assert_close(state[name], buf, rtol=0, atol=1e-12, msg=name)


def fvcore_macs(model, size: int) -> int:
    fa = FlopCountAnalysis(model.eval(), torch.zeros(1, 3, size, size))
    fa.unsupported_ops_warnings(False)
    fa.uncalled_modules_warnings(False)
    return int(fa.total())


def test_extracted_model_complexity_equals_fvcore_and_the_config():
    space = load_space(SPACE)
    torch.manual_seed(0)
    net = Supernet(space, CLASSES)
    cfgs, _ = sample(space, seed=4, n=4)
    for cfg in [net.largest, net.smallest, *cfgs]:
        model = net.extract(cfg)
        assert model.cfg == cfg
        for size in (SIZE, 224) if cfg in (net.largest, net.smallest) else (224,):
            cx = complexity(cfg, size)
            assert complexity(model.cfg, size) == cx
            assert fvcore_macs(model, size) == cx.macs, (cfg.summary(), size)
        assert count_params(model) == complexity(cfg).params


def test_sub_networks_take_the_matching_parts_of_concatenated_tensors():
    """DY-ReLU's [h1, h2] rows, the head FC's [pooled 6C, token 0] columns, depthwise multiplier channels."""
    space = load_space(SPACE)
    net = Supernet(space, CLASSES).double()
    with torch.no_grad():
        for p in [*net.parameters(), *net.buffers()]:
            p.copy_(torch.arange(p.numel(), dtype=p.dtype).view(p.shape))
    sk = net.skeleton
    cfg = net.smallest  # stem 8, lite e1 1 (of 2), stage 0 down e1/e2 1 (of 2), token_dim 16 (of 32)
    state = net.state_of(cfg)
    (ci, co) = cfg.channels()[1]
    down = net.blocks[1].mobile  # slot 0: the down block of stage 0
    e1_max, e2_max = sk.slots[0].e1, sk.slots[0].e2
    e1, e2 = int(cfg.blocks[1].e1), cfg.blocks[1].e2
    h1 = [c * e1_max + j for c in range(ci) for j in range(e1)]
    torch.testing.assert_close(state["blocks.1.mobile.conv1.conv.weight"], down.conv1.conv.weight[h1])
    torch.testing.assert_close(state["blocks.1.mobile.conv1.bn.running_var"], down.conv1.bn.running_var[h1])
    torch.testing.assert_close(state["blocks.1.mobile.conv2.conv.weight"], down.conv2.conv.weight[:co, h1])
    h1_max = sk.slots[0].cin * e1_max  # DY-ReLU rows: [h1 of every channel, h2 of every channel]
    torch.testing.assert_close(state["blocks.1.mobile.act1.fc2.bias"],
                               down.act1.fc2.bias[h1 + [h1_max + i for i in h1]])
    h2 = [c * e2_max + j for c in range(co) for j in range(e2)]
    h2_max = sk.slots[0].cout * e2_max
    torch.testing.assert_close(state["blocks.1.mobile.act2.fc2.bias"],
                               down.act2.fc2.bias[h2 + [h2_max + i for i in h2]])
    (ci2, _), b2 = cfg.channels()[2], cfg.blocks[2]  # stage 1's first block (slot 2, stride 1): leading channels
    hid, hid_max = round(ci2 * b2.e1), sk.slots[2].hidden
    assert b2.stride == 1 and hid < hid_max
    d, r = cfg.token_dim, cfg.token_dim // cfg.dyrelu_reduction
    rows = [*range(hid), *range(hid_max, hid_max + hid)]
    torch.testing.assert_close(state["blocks.2.mobile.act1.fc2.weight"], net.blocks[3].mobile.act1.fc2.weight[rows, :r])
    torch.testing.assert_close(state["blocks.1.mobile.act1.fc1.weight"], down.act1.fc1.weight[:r, :d])
    c_last = cfg.channels()[-1][1]
    cols = list(range(6 * c_last)) + [6 * sk.last_width + j for j in range(d)]
    torch.testing.assert_close(state["head.fc.weight"], net.head.fc.weight[:cfg.head, cols])
    torch.testing.assert_close(state["tokens"], net.tokens[:cfg.num_tokens, :d])
    lite_h = [c * sk.lite.e1 + j for c in range(cfg.channels()[0][0]) for j in range(int(cfg.blocks[0].e1))]
    torch.testing.assert_close(state["blocks.0.conv1.conv.weight"], net.blocks[0].conv1.conv.weight[lite_h])


def test_a_config_outside_the_supernet_is_refused():
    space = load_space(SPACE)
    net = Supernet(space, CLASSES)
    with pytest.raises(ValueError, match="activation is 'relu'"):
        net.plan(net.largest.replace(activation="relu"))
    with pytest.raises(ValueError, match="token_dim is 64, at most 32"):
        net.plan(net.largest.replace(token_dim=64))
    blocks = list(net.largest.blocks)
    blocks.insert(3, blocks[2])  # a third block in stage 0 (at most two)
    with pytest.raises(ValueError, match="do not fit its stages"):
        net.plan(net.largest.replace(blocks=blocks))


@pytest.mark.parametrize("changes, field", [
    ({"activation": {"choice": ["dyrelu", "relu"]}}, "space.activation"),
    ({"projections": {"choice": ["light", "full"]}}, "space.projections"),
    ({"dropout": {"choice": [0.0, 0.1]}}, "space.dropout"),
    ({"stages": [{"out": 16, "depth": 1, "stride": {"choice": [1, 2]}}]}, "space.stages[0].stride"),
    ({"lite": {"out": 8, "e1": 1, "stride": {"choice": [1, 2]}}}, "space.lite.stride"),
])
def test_a_space_varying_an_unshareable_field_is_refused_with_one_line(tmp_path, changes, field):
    space = variant(tmp_path, **changes)
    with pytest.raises(InputError) as e:
        Supernet(space, CLASSES)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"{tmp_path / 'variant.yaml'}:")
    assert f": {field}: varies across the space; one-shot search shares weights only for num_tokens" in msg
    assert msg.endswith("fix it to one value or use evaluation.strategy: standalone")


def test_grouped_pointwise_convs_are_refused(tmp_path):
    space = variant(tmp_path, groups=4, stem=8, head=64)
    with pytest.raises(InputError, match=r"variant.yaml:\d+: space.groups: groups is 4; one-shot search needs"):
        Supernet(space, CLASSES)


def test_a_field_given_as_a_one_value_distribution_is_constant(tmp_path):
    space = variant(tmp_path, activation={"choice": ["dyrelu"]}, groups={"choice": [1]}, gate={"choice": [True]})
    net = Supernet(space, CLASSES)
    assert net.largest.activation == "dyrelu" and net.largest.groups == 1
