"""The benchmark's plain eager baseline computes the same function as mfsearch's Mobile-Former."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch
import torch.nn.functional as F

from mfsearch.models import MobileFormer, MobileFormerConfig, get_config

BASELINE = Path(__file__).parent.parent / "benchmarks" / "baseline_mobile_former.py"
MODELS = ("mobile_former_294m", "mobile_former_52m")


def _baseline_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("baseline_mobile_former", BASELINE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


baseline = _baseline_module()


def _randomise(model: torch.nn.Module, seed: int) -> None:
    """Non-trivial weights and BatchNorm statistics (the default init leaves much of the net near identity)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            r = torch.randn(t.shape, generator=gen, dtype=torch.float64)
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=gen, dtype=torch.float64) + 0.5)
            elif name.endswith("running_mean") or (t.dim() == 1 and not name.endswith(".weight")):
                t.copy_(0.1 * r)
            elif t.dim() == 1:
                t.copy_(1.0 + 0.1 * r)
            else:
                t.copy_(r / t[0].numel() ** 0.5)


def _pair(cfg: MobileFormerConfig) -> tuple[torch.nn.Module, torch.nn.Module]:
    ref = MobileFormer(cfg).double()
    _randomise(ref, 0)
    base = baseline.BaselineMobileFormer(cfg).double()
    base.load_state_dict(ref.state_dict(), strict=True)
    return ref, base


@pytest.mark.parametrize("num_classes", [10, 1000])
@pytest.mark.parametrize("name", MODELS)
def test_same_logits(name: str, num_classes: int) -> None:
    cfg = get_config(name).replace(num_classes=num_classes, dropout=0.0)
    ref, base = _pair(cfg)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for size, batch in ((224, 2), (32, 3)):
            x = torch.randn(batch, 3, size, size, generator=gen, dtype=torch.float64)
            for train in (False, True):
                ref.train(train)
                base.train(train)
                want, got = ref(x), base(x)
                assert got.shape == (batch, num_classes)
                assert want.abs().max() > 1e-2  # a meaningful comparison
                msg = lambda m, s=size, t=train: f"{s}px train={t}: {m}"
                torch.testing.assert_close(got, want, rtol=0.0, atol=1e-10, msg=msg)


@pytest.mark.parametrize("name", MODELS)
def test_same_gradients(name: str) -> None:
    cfg = get_config(name).replace(num_classes=10, dropout=0.0)
    ref, base = _pair(cfg)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(3, 3, 32, 32, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 10, (3,), generator=gen)
    for model in (ref, base):
        model.train()
        F.cross_entropy(model(x), y).backward()
    grads = dict(base.named_parameters())
    # a few gradients are zero in exact arithmetic (key biases of Former->Mobile: the softmax over tokens
    # ignores them), so the absolute floor follows the largest gradient of the model
    atol = 1e-10 * max(p.grad.abs().max().item() for p in ref.parameters())
    for pname, p in ref.named_parameters():
        g = grads[pname].grad
        assert g is not None and p.grad is not None, pname
        torch.testing.assert_close(g, p.grad, rtol=1e-7, atol=atol, msg=lambda m, n=pname: f"{n}: {m}")


def test_rejects_unsupported_configs() -> None:
    cfg = get_config("mobile_former_52m")
    for change in ({"activation": "relu"}, {"bridges": "none"}, {"projections": "full"}, {"groups": 4}):
        with pytest.raises(NotImplementedError):
            baseline.BaselineMobileFormer(cfg.replace(**change))
