"""Loading the authors' released ImageNet checkpoints into mfsearch's model.

The released implementation names its weights differently (``features.3.conv1.0.weight``,
``features.3.hyper1.hyper.2.bias``, ``features.3.local_global.alpha.0.weight``, ...).
:func:`released_key_map` gives the exact name-for-name correspondence for a config and
:func:`load_released_checkpoint` reads a ``.pth`` / ``.pth.tar`` (plain state dict, or wrapped
in ``state_dict`` / ``model``) safely (``weights_only=True``) and loads it. Besides the released
paper models, the map covers the variants that implementation builds by its switches: ReLU6 in place
of DY-ReLU, full projections inside the blocks, and its three dynamic gates.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from os import PathLike
from typing import Any

import torch
from torch import Tensor, nn

from .._utils import open_regular_file
from ..errors import InputError
from .config import MobileFormerConfig

_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model; the message names the offending keys."""


def _conv_bn(dst: dict, src: str, to: str) -> None:
    dst[f"{src}.0.weight"] = f"{to}.conv.weight"
    for k in _BN:
        dst[f"{src}.1.{k}"] = f"{to}.bn.{k}"


def _linear(dst: dict, src: str, to: str) -> None:
    dst[f"{src}.weight"] = f"{to}.weight"
    dst[f"{src}.bias"] = f"{to}.bias"


def _m2f(dst: dict, src: str, to: str, cfg: MobileFormerConfig, full: bool) -> None:
    if cfg.gate:
        _linear(dst, f"{src}.alpha.0", f"{to}.gate")
    _linear(dst, f"{src}.q", f"{to}.q")
    _linear(dst, f"{src}.proj", f"{to}.proj")
    _linear(dst, f"{src}.layer_norm", f"{to}.norm")
    if full:  # the feature-side key and value 1x1 convs (bias-free)
        dst[f"{src}.k.weight"] = f"{to}.k.weight"
        dst[f"{src}.v.weight"] = f"{to}.v.weight"


def _former(dst: dict, src: str, to: str, cfg: MobileFormerConfig) -> None:
    _linear(dst, f"{src}.q", f"{to}.q")
    if cfg.former_gate:
        _linear(dst, f"{src}.alpha.0", f"{to}.gate")
    _linear(dst, f"{src}.channel_mlp", f"{to}.proj")
    _linear(dst, f"{src}.layer_norm", f"{to}.norm1")
    if cfg.ffn:
        _linear(dst, f"{src}.ffn.0", f"{to}.fc1")
        _linear(dst, f"{src}.ffn.2", f"{to}.fc2")
        _linear(dst, f"{src}.ffn_norm", f"{to}.norm2")


def _f2m(dst: dict, src: str, to: str, cfg: MobileFormerConfig) -> None:
    if cfg.f2m_gate:
        _linear(dst, f"{src}.alpha.0", f"{to}.gate")
    _linear(dst, f"{src}.k", f"{to}.k")
    _linear(dst, f"{src}.proj", f"{to}.v")
    if cfg.projections == "full":  # query 1x1 conv on the map, output 1x1 conv ("fuse") after the attention
        dst[f"{src}.q.weight"] = f"{to}.q.weight"
        dst[f"{src}.fuse.weight"] = f"{to}.proj.weight"


def released_key_map(cfg: MobileFormerConfig) -> dict[str, str]:
    """Released state-dict name -> mfsearch state-dict name, for the variants the authors' code builds.

    Covered: DY-ReLU or ReLU6 (their "no DY-ReLU" switch: a plain ReLU6 and no token MLP in place of each
    DY-ReLU), light or full projections inside the blocks (the final bridge is always light there), the
    three dynamic gates (Mobile->Former, Former, Former->Mobile), the parallel arrangement.
    """
    if cfg.activation not in ("dyrelu", "relu6"):
        raise CheckpointError(f"the authors' implementation builds activation dyrelu or relu6, not {cfg.activation}")
    if cfg.arrangement != "parallel":
        raise CheckpointError("the authors' implementation builds the parallel arrangement only")
    if cfg.final_bridge_projections != "light":
        raise CheckpointError("the authors' implementation builds a light final Mobile->Former bridge only "
                              "(final_bridge_projections: light)")
    dyrelu = cfg.activation == "dyrelu"
    out: dict[str, str] = {"tokens.weight": "tokens"}
    _conv_bn(out, "stem", "stem")
    for i, b in enumerate(cfg.blocks):
        s, t = f"features.{i}", f"blocks.{i}"
        if b.kind == "lite":
            _conv_bn(out, f"{s}.conv", f"{t}.conv1")  # conv.0 / conv.1
            out[f"{s}.conv.4.weight"] = f"{t}.conv2.conv.weight"
            for k in _BN:
                out[f"{s}.conv.5.{k}"] = f"{t}.conv2.bn.{k}"
            continue
        convs = ("conv1", "conv2", "conv3", "conv4") if b.stride == 2 else ("conv1", "conv2", "conv3")
        hypers = (("hyper1", "act1"), ("hyper3", "act2")) if b.stride == 2 else (("hyper1", "act1"), ("hyper2", "act2"))
        for c in convs:
            _conv_bn(out, f"{s}.{c}", f"{t}.mobile.{c}")
        if dyrelu:  # with ReLU6 the token MLPs do not exist
            for h, a in hypers:
                _linear(out, f"{s}.{h}.hyper.0", f"{t}.mobile.{a}.fc1")
                _linear(out, f"{s}.{h}.hyper.2", f"{t}.mobile.{a}.fc2")
        if cfg.m2f:
            _m2f(out, f"{s}.local_global", f"{t}.m2f", cfg, cfg.projections == "full")
        if cfg.former:
            _former(out, f"{s}.global_block", f"{t}.former", cfg)
        if cfg.f2m:
            _f2m(out, f"{s}.global_local", f"{t}.f2m", cfg)
    if cfg.m2f:
        _m2f(out, "local_global", "final_m2f", cfg, False)
    out["classifier.conv.1.weight"] = "head.conv.conv.weight"
    for k in _BN:
        out[f"classifier.conv.2.{k}"] = f"head.conv.bn.{k}"
    _linear(out, "classifier.fc.0", "head.fc")
    for k in _BN:
        out[f"classifier.fc.1.{k}"] = f"head.bn.{k}"
    _linear(out, "classifier.classifier.1", "head.classifier")
    return out


def _unwrap(obj: Any) -> Mapping[str, Tensor]:
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    return _check_state(obj)


def _check_state(obj: Any) -> Mapping[str, Tensor]:
    """``obj`` if it maps parameter names to tensors; otherwise a :class:`CheckpointError` naming the first misfit."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"checkpoint holds a {type(obj).__name__}, not a state dict")
    for k, v in obj.items():
        if not isinstance(k, str):
            raise CheckpointError(f"checkpoint key {k!r} ({type(k).__name__}) is not a parameter name: a state dict "
                                  "maps names (str) to tensors")
        if not isinstance(v, Tensor):
            raise CheckpointError(f"checkpoint entry {k!r} holds a {type(v).__name__}, not a tensor")
    return obj


def _read(source: str | PathLike) -> Any:
    """``torch.load(weights_only=True)`` of a regular file; every failure is one :class:`CheckpointError` line."""
    try:
        f = open_regular_file(source, "checkpoint file")  # a FIFO would block torch.load forever
    except InputError as e:
        raise CheckpointError(str(e)) from None
    with f:
        try:
            return torch.load(f, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - hostile, corrupt or truncated files: one clear message
            found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
            if isinstance(e, pickle.UnpicklingError) and found:  # objects beyond tensors: refused, never run
                raise CheckpointError(f"{source}: not a plain weights checkpoint (a state dict of tensors): it refers "
                                      f"to {found[1]}; load only state dicts of tensors") from None
            detail = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            if isinstance(e, pickle.UnpicklingError) or "weights_only" in detail:
                detail = "not a PyTorch checkpoint, or a damaged one"
            raise CheckpointError(f"{source}: cannot be read as a checkpoint ({detail})") from None


def load_released_checkpoint(
    model: nn.Module, source: str | PathLike | Mapping[str, Any], strict: bool = True
) -> tuple[list[str], list[str]]:
    """Load a released checkpoint (path or state dict) into an mfsearch ``MobileFormer``.

    Returns ``(missing, unexpected)`` mfsearch key names; with ``strict`` any of either,
    or a shape mismatch, raises :class:`CheckpointError` naming the keys.
    """
    obj: Any = source if isinstance(source, Mapping) else _read(source)
    cfg: MobileFormerConfig = model.cfg  # type: ignore[assignment]
    try:
        raw = _unwrap(obj)
    except CheckpointError as e:
        raise CheckpointError(str(e) if isinstance(source, Mapping) else f"{source}: {e}") from None
    key_map = released_key_map(cfg)
    raw = {k[7:] if k.startswith("module.") else k: v for k, v in raw.items()}
    unexpected = [k for k in raw if k not in key_map]
    converted = {key_map[k]: v for k, v in raw.items() if k in key_map}
    own = model.state_dict()
    if model.head is None:  # features_only backbone: drop the classifier head
        converted = {k: v for k, v in converted.items() if not k.startswith("head.")}
    missing = [k for k in own if k not in converted]
    bad = [
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in converted.items()
        if k in own and v.shape != own[k].shape
    ]
    if strict and (missing or unexpected or bad):
        parts = []
        if missing:
            parts.append(f"missing: {', '.join(missing[:10])}")
        if unexpected:
            parts.append(f"unexpected: {', '.join(unexpected[:10])}")
        if bad:
            parts.append(f"shape mismatch: {', '.join(bad[:10])}")
        raise CheckpointError("checkpoint does not fit the model; " + "; ".join(parts))
    with torch.no_grad():
        for k, v in converted.items():
            if k in own and v.shape == own[k].shape:
                own[k].copy_(v)
    return missing, unexpected
