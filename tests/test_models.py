"""Every knob value builds, runs forward and backward at 32 and 224, and trains every parameter."""

import dataclasses

import pytest
import torch

import mfsearch
from mfsearch.models import MobileFormerConfig
from mfsearch.models.random import random_config

BASE = mfsearch.get_config("mobile_former_52m").replace(num_classes=10)

KNOBS = [
    ("activation", v) for v in ("dyrelu", "relu", "relu6", "prelu", "hswish")
] + [
    ("bridges", v) for v in ("both", "mobile_to_former", "former_to_mobile", "none")
] + [
    ("projections", "full"), ("final_bridge_projections", "full"), ("gate", False), ("former_gate", True),
    ("f2m_gate", True), ("former", False), ("ffn", False), ("former_heads", 8),
    ("bridge_heads", 1), ("bridge_heads", 4), ("arrangement", "serial"), ("groups", 4), ("width_mult", 0.75),
    ("num_tokens", 1), ("num_tokens", 12), ("token_dim", 64),
]


def knob_configs() -> list[tuple[str, MobileFormerConfig]]:
    out = [(f"{k}={v}", BASE.replace(**{k: v})) for k, v in KNOBS]
    out.append(("mobile_only", BASE.replace(num_tokens=0, bridges="none", former=False, activation="relu")))
    out.append(("serial_full_relu6", BASE.replace(arrangement="serial", projections="full", activation="relu6")))
    out += [(f"random{s}", random_config(s, max_blocks=6, num_classes=10)) for s in range(6)]
    return out


CONFIGS = knob_configs()


@pytest.mark.parametrize("size", [32, 224])
@pytest.mark.parametrize("name,cfg", CONFIGS, ids=[n for n, _ in CONFIGS])
def test_forward_backward_every_param_gets_grad(name, cfg, size):
    model = mfsearch.create_model(cfg)
    model.train()
    x = torch.randn(2, 3, size, size)
    out = model(x)
    assert out.shape == (2, cfg.num_classes)
    assert torch.isfinite(out).all()
    out.logsumexp(dim=1).sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert no_grad == []


def test_knob_list_covers_every_value():
    seen = {}
    for _, cfg in CONFIGS:
        for f in ("activation", "bridges", "projections", "final_bridge_projections", "arrangement", "gate",
                  "former_gate", "f2m_gate", "former", "ffn"):
            seen.setdefault(f, set()).add(getattr(cfg, f))
    assert seen["activation"] == {"dyrelu", "relu", "relu6", "prelu", "hswish"}
    assert seen["bridges"] == {"both", "mobile_to_former", "former_to_mobile", "none"}
    assert seen["projections"] == {"light", "full"} and seen["arrangement"] == {"parallel", "serial"}
    assert seen["final_bridge_projections"] == {"light", "full"}
    assert seen["gate"] == seen["former_gate"] == seen["f2m_gate"] == seen["former"] == seen["ffn"] == {True, False}


def test_serial_bridge_reads_block_output_parallel_reads_input():
    par = mfsearch.create_model(BASE)
    ser = mfsearch.create_model(BASE.replace(arrangement="serial"))
    # block 3 of the 52M is down(12->24): parallel M->F sees 12 channels, serial sees 24
    assert par.blocks[2].m2f.q.out_features == 12
    assert ser.blocks[2].m2f.q.out_features == 24


def test_importing_the_model_family_loads_no_heavy_dependency():
    """``import mfsearch.models`` (a fresh interpreter) pulls in none of the search / analysis stack."""
    import subprocess
    import sys

    heavy = ("optuna", "pandas", "matplotlib", "ray")
    code = f"import sys, mfsearch.models; print(','.join(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "", f"imported: {out.stdout.strip()}"


def test_gate_switch_changes_the_function():
    torch.manual_seed(0)
    a = mfsearch.create_model(BASE).eval()
    b = mfsearch.create_model(BASE.replace(gate=False)).eval()
    b.load_state_dict({k: v for k, v in a.state_dict().items() if ".gate." not in k})
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(a(x), b(x))


def test_dyrelu_at_half_is_relu():
    from mfsearch.models.mobile_former import DyReLU

    act = DyReLU(8, 16)
    torch.nn.init.zeros_(act.fc2.weight)
    torch.nn.init.zeros_(act.fc2.bias)  # hsigmoid(0) = 0.5
    x = torch.randn(3, 8, 5, 5)
    assert torch.equal(act(x, torch.randn(3, 16)), torch.relu(x))


def test_create_model_overrides_and_dict():
    m = mfsearch.create_model("mobile_former_26m", num_classes=7, dropout=0.0)
    assert m.head.classifier.out_features == 7 and m.cfg.dropout == 0.0
    d = dataclasses.asdict(mfsearch.get_config("mobile_former_96m"))
    assert d["num_tokens"] == 4
    m2 = mfsearch.create_model(mfsearch.get_config("mobile_former_96m").to_dict(), num_classes=3)
    assert m2.cfg.arch_id == mfsearch.get_config("mobile_former_96m").arch_id


FAST_CASES = [mfsearch.get_config(n) for n in mfsearch.list_models()] + [random_config(s) for s in range(6)]


@pytest.mark.parametrize("cfg", FAST_CASES, ids=lambda c: c.arch_id)
def test_fast_kernels_compute_the_plain_function(cfg):
    """Small-map depthwise / pointwise paths and the DY-ReLU autograd function: same outputs and gradients
    in float64, channels-first and channels_last (the training step's layout)."""
    from mfsearch.models.mobile_former import plain_kernels

    torch.manual_seed(0)
    model = mfsearch.create_model(cfg, num_classes=10, dropout=0.0).double()
    params = list(model.parameters())
    for size, fmt in ((32, torch.contiguous_format), (64, torch.contiguous_format), (32, torch.channels_last)):
        model.to(memory_format=fmt)
        x = torch.randn(3, 3, size, size, dtype=torch.float64).contiguous(memory_format=fmt).requires_grad_()
        for train in (True, False):
            model.train(train)
            fast = model(x)
            fast_grads = torch.autograd.grad(fast.square().sum(), [x, *params], allow_unused=True)
            with plain_kernels():
                plain = model(x)
                plain_grads = torch.autograd.grad(plain.square().sum(), [x, *params], allow_unused=True)
            torch.testing.assert_close(fast, plain, rtol=1e-10, atol=1e-12)
            for a, b in zip(fast_grads, plain_grads):
                assert (a is None) == (b is None)
                if a is not None:
                    torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9 * max(1.0, b.abs().max().item()))


def test_small_map_pointwise_equals_conv():
    from mfsearch.models.mobile_former import pointwise_small

    torch.manual_seed(0)
    for cin, cout, size, bias in [(8, 16, 1, False), (16, 8, 2, True), (5, 7, 1, True), (12, 12, 3, False)]:
        conv = torch.nn.Conv2d(cin, cout, 1, bias=bias).double()
        for fmt in (torch.contiguous_format, torch.channels_last):
            x = torch.randn(4, cin, size, size, dtype=torch.float64).contiguous(memory_format=fmt)
            torch.testing.assert_close(pointwise_small(x, conv), conv(x), rtol=1e-12, atol=1e-12)


def test_small_map_depthwise_equals_conv_for_every_shape():
    from mfsearch.models.mobile_former import depthwise_small

    torch.manual_seed(0)
    for c, mult, size, stride in [(8, 1, 1, 1), (8, 1, 2, 1), (8, 1, 2, 2), (8, 2, 2, 2), (6, 3, 1, 2), (4, 1, 1, 2)]:
        conv = torch.nn.Conv2d(c, c * mult, 3, stride, 1, groups=c, bias=True).double()
        x = torch.randn(2, c, size, size, dtype=torch.float64)
        torch.testing.assert_close(depthwise_small(x, conv), conv(x), rtol=1e-12, atol=1e-12)


def test_small_map_kernels_train_after_an_inference_mode_call():
    """The depthwise taps are cached: a first call under inference_mode must not poison later training."""
    from mfsearch.models import mobile_former as mf

    mf._TAPS.clear()
    model = mfsearch.create_model("mobile_former_26m", num_classes=10)
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        model.eval()(x)
    model.train()(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def _dyrelu_case(fmt, dtype=torch.float64):
    torch.manual_seed(0)
    x = torch.randn(2, 8, 12, 10, dtype=dtype).contiguous(memory_format=fmt).requires_grad_()
    a1 = (torch.rand(2, 8, 1, 1, dtype=dtype) * 2).requires_grad_()
    a2 = (torch.rand(2, 8, 1, 1, dtype=dtype) * 2 - 1).requires_grad_()
    return x, a1, a2


def _dyrelu_grads(fn, x, a1, a2):
    y = fn(x, a1, a2)
    g = torch.empty_like(y).copy_(torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape))  # y's layout
    return (y, *torch.autograd.grad(y, [x, a1, a2], g))


@pytest.mark.parametrize("fmt", [torch.channels_last, torch.contiguous_format], ids=["channels_last", "contiguous"])
def test_fused_cpu_dyrelu_computes_the_plain_function(monkeypatch, fmt):
    """The compiled DY-ReLU kernels (large CPU maps): same output, gradients and layout as the plain ops."""
    from mfsearch.models import mobile_former as mf

    monkeypatch.delenv(mf.FUSED_ENV, raising=False)
    monkeypatch.setattr(mf, "FUSED_MIN_NUMEL", 1)  # a small map takes the fused path, for a fast compile
    monkeypatch.setattr(mf, "_FUSED", {})
    x, a1, a2 = _dyrelu_case(fmt)
    assert mf._use_fused(x)
    fused = _dyrelu_grads(mf._DyReLUFn.apply, x, a1, a2)
    assert mf._FUSED["kernels"] is not None, "the compiled kernels failed and fell back to eager"
    plain = _dyrelu_grads(lambda x, a1, a2: torch.maximum(x * a1, x * a2), x, a1, a2)
    for a, b in zip(fused, plain):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert fused[0].stride() == x.stride() and fused[1].stride() == x.stride()


def test_fused_cpu_dyrelu_falls_back_to_eager_with_one_warning(monkeypatch):
    from mfsearch.models import mobile_former as mf

    def broken(*args):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(mf, "FUSED_MIN_NUMEL", 1)
    monkeypatch.setattr(mf, "_FUSED", {"kernels": (broken, broken)})
    x, a1, a2 = _dyrelu_case(torch.channels_last)
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler"):
        out = _dyrelu_grads(mf._DyReLUFn.apply, x, a1, a2)
    assert mf._FUSED["kernels"] is None and not mf._use_fused(x)
    plain = _dyrelu_grads(lambda x, a1, a2: torch.maximum(x * a1, x * a2), x, a1, a2)
    for a, b in zip(out, plain):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_fused_cpu_dyrelu_opt_out(monkeypatch):
    from mfsearch.models import mobile_former as mf

    monkeypatch.setenv(mf.FUSED_ENV, "0")
    monkeypatch.setattr(mf, "FUSED_MIN_NUMEL", 1)
    monkeypatch.setattr(mf, "_FUSED", {})
    assert not mf._use_fused(_dyrelu_case(torch.channels_last)[0])
