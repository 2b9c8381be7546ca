"""Zero-cost proxies: definitions against literal reference computations, determinism, no side effects."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mfsearch.evaluation.train import proxy_data
from mfsearch.evaluation.zero_cost import DESCRIPTIONS, PROXIES, batch_from, init_model, score, scores
from mfsearch.models import MobileFormer, complexity, count_params, get_config
from mfsearch.models.mobile_former import ConvBN
from mfsearch.space import load_space

BASE = get_config("mobile_former_26m").replace(num_classes=10)
SMALL = get_config("mobile_former_52m").replace(num_classes=10, width_mult=0.5, num_tokens=2, token_dim=64)
CONFIGS = {
    "26m": BASE,
    "52m_small_relu": SMALL.replace(activation="relu"),
    "serial_full_hswish": SMALL.replace(arrangement="serial", projections="full", activation="hswish"),
    "mobile_only": SMALL.replace(num_tokens=0, bridges="none", former=False, activation="relu6"),
}


def make_batch(n: int = 8, size: int = 16, classes: int = 10, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g), torch.randint(0, classes, (n,), generator=g)


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    return make_batch()


@pytest.fixture(scope="module")
def base_scores(batch) -> dict[str, float]:
    x, y = batch
    return scores(BASE, x, y)


def test_names_and_descriptions():
    assert PROXIES == ("synflow", "grad_norm", "snip", "jacob_cov", "naswot", "params", "macs")
    assert set(DESCRIPTIONS) == set(PROXIES)
    assert all(d and "\n" not in d for d in DESCRIPTIONS.values())


@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_proxy_finite_and_deterministic(name, batch):
    cfg = CONFIGS[name]
    x, y = batch
    first = scores(cfg, x, y)
    assert list(first) == list(PROXIES)
    assert all(isinstance(v, float) and math.isfinite(v) for v in first.values()), first
    assert scores(cfg, x, y) == first


def test_scores_equal_one_by_one(batch, base_scores):
    x, y = batch
    assert {n: score(n, BASE, x, y) for n in PROXIES} == base_scores
    reordered = scores(BASE, x, y, names=("naswot", "snip", "macs", "synflow"))
    assert list(reordered) == ["naswot", "snip", "macs", "synflow"]
    assert reordered == {n: base_scores[n] for n in reordered}


def test_seed_changes_the_initialisation(batch, base_scores):
    x, y = batch
    other = scores(BASE, x, y, names=("grad_norm", "naswot"), seed=1)
    assert other["grad_norm"] != base_scores["grad_norm"]
    assert other["naswot"] != base_scores["naswot"]


def test_init_model_matches_manual_seed():
    torch.manual_seed(3)
    ref = MobileFormer(BASE)
    got = init_model(BASE, seed=3)
    for (n1, a), (n2, b) in zip(ref.state_dict().items(), got.state_dict().items()):
        assert n1 == n2 and torch.equal(a, b), n1


def test_no_side_effects(batch, base_scores):
    x0, y0 = batch
    x = x0.clone().requires_grad_(True)
    y = y0.clone()
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    got = scores(BASE, x, y)
    assert torch.equal(torch.get_rng_state(), state)
    assert x.grad is None and y.grad is None
    assert torch.equal(x.detach(), x0) and torch.equal(y, y0)
    assert got == base_scores  # x requiring grad changes nothing
    with torch.no_grad():  # the gradient proxies switch gradients on for themselves
        assert scores(BASE, x0, y0) == base_scores
    assert torch.is_grad_enabled()


def test_params_and_macs_are_the_baselines():
    macs = []
    for size in (16, 32):
        x, y = make_batch(size=size)
        got = scores(SMALL, x, y, names=("params", "macs"))
        assert got["params"] == count_params(MobileFormer(SMALL)) == complexity(SMALL, input_size=size).params
        assert got["macs"] == complexity(SMALL, input_size=size).macs
        macs.append(got["macs"])
    assert macs[1] > macs[0]  # MACs follow the input size


def test_synflow_grows_with_width():
    x, y = make_batch(n=2)
    values = [score("synflow", BASE.replace(width_mult=w), x, y) for w in (0.5, 1.0, 1.5)]
    assert values[0] < values[1] < values[2]


# ---------------------------------------------------------------------------- literal references


def reference_model(cfg, seed: int = 0) -> MobileFormer:
    torch.manual_seed(seed)
    return MobileFormer(cfg.replace(dropout=0.0))  # same weights: dropout has no parameters


def test_synflow_reference(batch, base_scores):
    model = reference_model(BASE).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.abs())
    model(torch.ones(1, 3, 16, 16, dtype=torch.float64)).sum().backward()
    ref = sum((p * p.grad).abs().sum().item() for p in model.parameters() if p.grad is not None)
    assert base_scores["synflow"] == pytest.approx(ref, rel=1e-9)


def test_grad_norm_and_snip_reference(batch, base_scores):
    x, y = batch
    model = reference_model(BASE).train()
    F.cross_entropy(model(x), y).backward()
    params = [p for p in model.parameters() if p.grad is not None]
    assert len(params) == len(list(model.parameters()))
    assert base_scores["grad_norm"] == pytest.approx(sum(p.grad.norm().item() for p in params), rel=1e-5)
    assert base_scores["snip"] == pytest.approx(sum((p * p.grad).abs().sum().item() for p in params), rel=1e-5)


def test_jacob_cov_reference(batch, base_scores):
    x, _ = batch
    model = reference_model(BASE).train()
    xg = x.clone().requires_grad_(True)
    model(xg).backward(torch.ones(x.shape[0], 10))
    jac = xg.grad.reshape(x.shape[0], -1).numpy().astype(np.float64)
    v = np.linalg.eigvalsh(np.corrcoef(jac))
    ref = -np.sum(np.log(v + 1e-5) + 1.0 / (v + 1e-5))
    assert base_scores["jacob_cov"] == pytest.approx(ref, rel=1e-9)


def naswot_reference(cfg, x: torch.Tensor) -> float:
    model = reference_model(cfg).train()
    n = x.shape[0]
    k = np.zeros((n, n))

    def hook(_m, _i, out):
        c = (out > 0).reshape(n, -1).numpy().astype(np.float64)
        k[:] += c @ c.T + (1.0 - c) @ (1.0 - c).T

    for m in model.modules():
        if isinstance(m, ConvBN):
            m.register_forward_hook(hook)
    with torch.no_grad():
        model(x)
    return float(np.linalg.slogdet(k)[1])


def test_naswot_reference(batch, base_scores):
    x, _ = batch
    assert base_scores["naswot"] == pytest.approx(naswot_reference(BASE, x), rel=1e-9)
    assert base_scores["naswot"] > 0.0  # a nonsingular integer kernel has det >= 1


def test_naswot_identical_inputs_give_a_singular_kernel(batch, base_scores):
    x, y = batch
    same = x[:1].expand_as(x).clone()
    assert score("naswot", BASE, same, y) == -math.inf
    pair = x.clone()
    pair[1] = pair[0]  # one repeated example is enough: two equal rows in K
    assert score("naswot", BASE, pair, y) == -math.inf
    assert math.isfinite(base_scores["naswot"])
    assert score("jacob_cov", BASE, same, y) < base_scores["jacob_cov"] - 1e4  # perfectly correlated Jacobians


# ---------------------------------------------------------------------------- errors and data


def test_unknown_name_lists_the_valid_ones(batch):
    x, y = batch
    with pytest.raises(ValueError) as err:
        score("zen", BASE, x, y)
    assert all(n in str(err.value) for n in PROXIES)
    with pytest.raises(ValueError, match="synflow"):
        scores(BASE, x, y, names=("params", "nope"))


def test_bad_batches_are_rejected(batch):
    x, y = batch
    with pytest.raises(ValueError, match="labels"):
        score("grad_norm", BASE.replace(num_classes=3), x, y)
    with pytest.raises(ValueError, match="at least 2"):
        score("naswot", BASE, x[:1], y[:1])
    with pytest.raises(ValueError, match="int64"):
        score("snip", BASE, x, y.int())


def test_batch_from_tiny_space():
    ev = load_space("spaces/tiny.yaml").evaluation
    loader = proxy_data(ev).train
    loader.set_epoch(5)
    x, y, num_classes = batch_from(ev, 32)
    assert loader.epoch == 5
    assert x.shape == (32, 3, 16, 16) and x.dtype == torch.float32 and y.shape == (32,) and y.dtype == torch.int64
    assert num_classes == 10 and 0 <= int(y.min()) and int(y.max()) < num_classes
    assert len(set(y.tolist())) > 1 and torch.isfinite(x).all()
    x2, y2, _ = batch_from(ev, 32)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    first, labels = next(iter(loader))  # epoch 5 order differs from epoch 0's
    assert not torch.equal(first[:32], x) or not torch.equal(labels[:32], y)
    with pytest.raises(ValueError, match="fewer than"):
        batch_from(ev, 10_000)
