"""The seven paper models as registered presets (docs/architecture.md §3; Chen et al., CVPR 2022, Table 1)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .config import MobileFormerConfig, down, lite, mf


@dataclass(frozen=True)
class PaperFigures:
    """What the paper reports for a model (224x224, ImageNet-1k)."""

    params_m: float
    macs_m: int
    top1: float
    lr: float
    weight_decay: float
    dropout: float


PAPER: dict[str, PaperFigures] = {
    "mobile_former_508m": PaperFigures(14.0, 508, 79.3, 1e-3, 0.20, 0.3),
    "mobile_former_294m": PaperFigures(11.4, 294, 77.9, 1e-3, 0.20, 0.3),
    "mobile_former_214m": PaperFigures(9.4, 214, 76.7, 9e-4, 0.15, 0.2),
    "mobile_former_151m": PaperFigures(7.6, 151, 75.2, 9e-4, 0.10, 0.2),
    "mobile_former_96m": PaperFigures(4.6, 96, 72.8, 8e-4, 0.10, 0.2),
    "mobile_former_52m": PaperFigures(3.5, 52, 68.7, 8e-4, 0.10, 0.2),
    "mobile_former_26m": PaperFigures(3.2, 26, 64.0, 8e-4, 0.08, 0.1),
}

_REGISTRY: dict[str, Callable[[], MobileFormerConfig]] = {}


def register_model(fn: Callable[[], MobileFormerConfig]) -> Callable[[], MobileFormerConfig]:
    """Register a config factory under its function name."""
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return list(_REGISTRY)


def get_config(name: str) -> MobileFormerConfig:
    """The config of a registered model; an unknown name lists the known ones."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]()


def _cfg(name: str, stem: int, blocks: list, m: int, d: int, head: int, **kw) -> MobileFormerConfig:
    return MobileFormerConfig(
        stem=stem, blocks=tuple(blocks), head=head, num_tokens=m, token_dim=d,
        dropout=PAPER[name].dropout, name=name, **kw,
    )


@register_model
def mobile_former_508m() -> MobileFormerConfig:
    return _cfg("mobile_former_508m", 24, [
        lite(24, 24, 2, 1), down(24, 40, 6, 4), mf(40, 40, 3), down(40, 72, 6, 4), mf(72, 72, 3),
        down(72, 128, 6, 4), mf(128, 128, 4), mf(128, 176, 6), mf(176, 176, 6), down(176, 240, 6, 4),
        mf(240, 240, 6), mf(240, 240, 6),
    ], 6, 192, 1920)


@register_model
def mobile_former_294m() -> MobileFormerConfig:
    return _cfg("mobile_former_294m", 16, [
        lite(16, 16, 2, 1), down(16, 24, 6, 4), mf(24, 24, 4), down(24, 48, 6, 4), mf(48, 48, 4),
        down(48, 96, 6, 4), mf(96, 96, 4), mf(96, 128, 6), mf(128, 128, 6), down(128, 192, 6, 4),
        mf(192, 192, 6), mf(192, 192, 6),
    ], 6, 192, 1920)


@register_model
def mobile_former_214m() -> MobileFormerConfig:
    return _cfg("mobile_former_214m", 12, [
        lite(12, 12, 2, 1), down(12, 20, 6, 4), mf(20, 20, 3), down(20, 40, 6, 4), mf(40, 40, 4),
        down(40, 80, 6, 4), mf(80, 80, 4), mf(80, 112, 6), mf(112, 112, 6), down(112, 160, 6, 4),
        mf(160, 160, 6), mf(160, 160, 6),
    ], 6, 192, 1600)


@register_model
def mobile_former_151m() -> MobileFormerConfig:
    return _cfg("mobile_former_151m", 12, [
        lite(12, 12, 2, 1), down(12, 16, 6, 4), mf(16, 16, 3), down(16, 32, 6, 4), mf(32, 32, 3),
        down(32, 64, 6, 4), mf(64, 64, 4), mf(64, 88, 6), mf(88, 88, 6), down(88, 128, 6, 4),
        mf(128, 128, 6), mf(128, 128, 6),
    ], 6, 192, 1280)


@register_model
def mobile_former_96m() -> MobileFormerConfig:
    return _cfg("mobile_former_96m", 12, [
        lite(12, 12, 2, 1), down(12, 16, 6, 4), down(16, 32, 6, 4), mf(32, 32, 3), down(32, 64, 6, 4),
        mf(64, 64, 4), mf(64, 88, 6), down(88, 128, 6, 4), mf(128, 128, 6),
    ], 4, 128, 1280)


_52M_BLOCKS = [
    lite(8, 12, 3, 2), mf(12, 12, 3), down(12, 24, 6, 4), mf(24, 24, 3), down(24, 48, 6, 4),
    mf(48, 48, 4), mf(48, 64, 6), down(64, 96, 6, 4), mf(96, 96, 6),
]


@register_model
def mobile_former_52m() -> MobileFormerConfig:
    return _cfg("mobile_former_52m", 8, _52M_BLOCKS, 3, 128, 1024)


@register_model
def mobile_former_26m() -> MobileFormerConfig:
    return _cfg("mobile_former_26m", 8, _52M_BLOCKS, 3, 128, 1024, groups=4)
