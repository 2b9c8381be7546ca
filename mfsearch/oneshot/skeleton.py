"""What a supernet must hold for a space: the shareable knobs, the largest shapes, the block slots.

A weight-sharing supernet contains every architecture of a space when each architecture uses a
*part* of its tensors: leading token rows and columns, leading channels, leading blocks of each
stage. That holds for the knobs in :data:`SHARED` only; any other field (activation, bridges,
projections, arrangement, Former / FFN, groups, width multiplier, strides, any field added later)
changes the operator itself and must be one value over the space, or the space is refused with
one line naming the field.

Sub-networks for training come from :func:`mfsearch.space.sample.sample_config` with a suggester
(largest, smallest, or a seeded numpy ``Generator``), so conditions and base values follow the
space file exactly as a stand-alone search reads it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..fields import load_yaml, located
from ..models import BlockConfig, ConfigError, MobileFormerConfig
from ..models.config import make_divisible
from ..space.sample import STAGE_DEFAULTS, Suggest, sample_config
from ..space.spec import Dist, Knob, Space

#: Top-level fields whose values share weights (leading rows / columns / channels, or no weights at all).
SHARED = ("num_tokens", "token_dim", "stem", "head", "bridge_heads")
SHARED_LITE = ("out", "e1")
SHARED_STAGE = ("out", "depth", "e1", "down_e1", "down_e2")
SHARED_TEXT = ", ".join([*SHARED, *(f"lite.{k}" for k in SHARED_LITE), *(f"stages[].{k}" for k in SHARED_STAGE)])
#: config fields whose operators the supernet does not build: only this value is accepted
NOT_BUILT = {"former_gate": False, "f2m_gate": False}
SAMPLE_TRIES = 64  # random sub-networks: bounded resampling of configs the rules refuse


@dataclass(frozen=True)
class Slot:
    """One block position of the supernet and its largest shapes.

    ``kind`` is lite, down (stride-2 Mobile-Former block) or mf (stride 1); ``e1`` / ``e2`` are the
    largest depthwise multipliers (lite, down), ``hidden`` the largest stride-1 hidden width.
    """

    stage: int
    kind: str
    stride: int
    cin: int
    cout: int
    e1: int = 0
    e2: int = 0
    hidden: int = 0


@dataclass(frozen=True)
class Skeleton:
    """The largest shapes of a space's supernet and the configs that bound it."""

    num_tokens: int
    token_dim: int
    stem: int
    head: int
    lite: Slot
    slots: tuple[Slot, ...]  # after the lite block, stage by stage
    stage_strides: tuple[int, ...]
    largest: MobileFormerConfig
    smallest: MobileFormerConfig

    @property
    def last_width(self) -> int:
        """Largest width of the last block (the last block of any sub-network sits in the last stage)."""
        return (self.slots[-1] if self.slots else self.lite).cout

    def stage_slots(self, stage: int) -> list[int]:
        return [i for i, s in enumerate(self.slots) if s.stage == stage]


def values(k: Knob, fallback: Any = None) -> list:
    """The values a knob can take (both ends of a continuous range; the fallback when conditional)."""
    if not isinstance(k, Dist):
        return [k]
    if k.kind == "choice":
        vals = list(k.values)
    elif k.kind == "int":
        vals = list(range(int(k.low), int(k.high) + 1, int(k.step or 1)))
    elif k.step is None:
        vals = [k.low, k.high]
    else:
        vals = [k.low + k.step * i for i in range(int((k.high - k.low) / k.step + 1e-9) + 1)]
    if k.when and fallback is not None:
        vals.append(fallback)
    return vals


def _varies(vals: list) -> bool:
    return len({json.dumps(v, sort_keys=True, default=str) if not isinstance(v, (int, float)) else float(v)
                for v in vals}) > 1


def _refuse(space: Space, field: str, rule: str) -> InputError:
    lines: dict[str, int] = {}
    if space.path and Path(space.path).is_file():
        try:
            lines = load_yaml(space.path)[1]
        except InputError:
            lines = {}
    return located(space.path or space.name, lines, field, rule)


def check_shareable(space: Space) -> None:
    """Raise :class:`InputError` naming the first field that varies but cannot share weights."""
    base = space.base_config
    rule = (f"varies across the space; one-shot search shares weights only for {SHARED_TEXT}; fix it to one "
            "value or use evaluation.strategy: standalone")
    for name, k in space.knobs.items():
        if name not in SHARED and _varies(values(k, getattr(base, name))):
            raise _refuse(space, f"space.{name}", rule)
    for name, k in (space.lite or {}).items():
        if name not in SHARED_LITE and _varies(values(k, getattr(base.blocks[0], name))):
            raise _refuse(space, f"space.lite.{name}", rule)
    for i, st in enumerate(space.stages or ()):
        for name, k in st.items():
            if name not in SHARED_STAGE and _varies(values(k, STAGE_DEFAULTS.get(name))):
                raise _refuse(space, f"space.stages[{i}].{name}", rule)
    groups = values(space.knobs.get("groups", base.groups))[0]  # one value by now
    if groups != 1:
        where = "space.groups" if "groups" in space.knobs else "base"
        raise _refuse(space, where, f"groups is {groups}; one-shot search needs groups: 1 (grouped pointwise "
                      "convs and their channel shuffles do not share weights by leading channels)")
    for name, default in NOT_BUILT.items():  # operators the supernet does not build (yet): refused, not ignored
        value = values(space.knobs[name])[0] if name in space.knobs else getattr(base, name)
        if value != default:
            where = f"space.{name}" if name in space.knobs else "base"
            raise _refuse(space, where, f"{name} is {value!r}; the one-shot supernet builds only {name}: {default!r}; "
                          "use evaluation.strategy: standalone for this space")


# ----------------------------------------------------------------------------- suggesters


def extreme_suggest(pick: str, bridge_heads: int | None = None) -> Suggest:
    """Every knob at its largest (``pick='max'``) or smallest value; ``bridge_heads`` as given."""

    def suggest(name: str, d: Dist) -> Any:
        if name == "bridge_heads" and bridge_heads is not None:
            return bridge_heads
        vals = values(d)
        return max(vals) if pick == "max" else min(vals)

    return suggest


def numpy_suggest(rng: np.random.Generator) -> Suggest:
    """Uniform values from a numpy ``Generator`` (one draw per knob, in file order)."""

    def suggest(name: str, d: Dist) -> Any:
        if d.kind == "choice":
            return d.values[int(rng.integers(len(d.values)))]
        if d.kind == "int":
            step = int(d.step or 1)
            return int(d.low) + step * int(rng.integers((int(d.high) - int(d.low)) // step + 1))
        if d.step:
            return d.low + d.step * int(rng.integers(int((d.high - d.low) / d.step + 1e-9) + 1))
        return float(rng.uniform(d.low, d.high))

    return suggest


def extreme_config(space: Space, pick: str, num_classes: int) -> MobileFormerConfig:
    """The largest or smallest sub-network (the first bridge-head choice that builds)."""
    heads = values(space.knobs.get("bridge_heads", space.base_config.bridge_heads))
    error: ConfigError | None = None
    for h in heads:
        try:
            return sample_config(space, extreme_suggest(pick, h), num_classes)
        except ConfigError as e:
            error = error or e
    assert error is not None
    kind = "largest" if pick == "max" else "smallest"
    raise _refuse(space, "space", f"the {kind} sub-network cannot be built ({error.field}: {error.rule}); "
                  "one-shot search trains it at every step")


def random_config(space: Space, rng: np.random.Generator, num_classes: int) -> MobileFormerConfig:
    """A uniformly sampled sub-network (configs the rules refuse are redrawn, at most SAMPLE_TRIES times)."""
    for _ in range(SAMPLE_TRIES):
        try:
            return sample_config(space, numpy_suggest(rng), num_classes)
        except ConfigError:
            continue
    raise RuntimeError(f"{space.name}: no buildable sub-network in {SAMPLE_TRIES} draws")


# ----------------------------------------------------------------------------- the skeleton


def skeleton(space: Space, num_classes: int = 1000) -> Skeleton:
    """Largest shapes of ``space`` (refusing knobs that cannot share weights)."""
    check_shareable(space)
    base = space.base_config
    largest = extreme_config(space, "max", num_classes)
    smallest = extreme_config(space, "min", num_classes)

    def top(name: str) -> list:
        return values(space.knobs.get(name, getattr(base, name)), getattr(base, name))

    heads = top("bridge_heads")

    def width(vals: list) -> int:
        """Largest width ``cfg.width`` gives any of ``vals`` (``make_divisible`` grows with its argument)."""
        if largest.width_mult == 1.0:
            return max(int(v) for v in vals)
        return max(make_divisible(v * largest.width_mult, max(4, largest.groups, h)) for v in vals for h in heads)

    stem = width(top("stem"))
    b0 = base.blocks[0]
    lk = space.lite or {}
    lite_out = width(values(lk.get("out", b0.out), b0.out))
    lite_e1 = max(int(v) for v in values(lk.get("e1", b0.e1), b0.e1))
    lite_stride = values(lk.get("stride", b0.stride), b0.stride)[0]
    lite = Slot(-1, "lite", lite_stride, stem, lite_out, e1=lite_e1)
    slots: list[Slot] = []
    strides: list[int] = []
    cin = lite_out
    for i, st in enumerate(_stages(space)):
        def cap(name: str, st: dict = st) -> list:
            return values(st.get(name, STAGE_DEFAULTS.get(name)), STAGE_DEFAULTS.get(name))

        stride = int(cap("stride")[0])
        out, depth = width(cap("out")), max(int(v) for v in cap("depth"))
        e1 = max(cap("e1"))
        strides.append(stride)
        for j in range(depth):
            if j == 0 and stride == 2:
                slots.append(Slot(i, "down", 2, cin, out, max(int(v) for v in cap("down_e1")),
                                  max(int(v) for v in cap("down_e2"))))
            else:
                slots.append(Slot(i, "mf", 1, cin, out, hidden=round(cin * e1)))
            cin = out
    return Skeleton(max(int(v) for v in top("num_tokens")), max(int(v) for v in top("token_dim")), stem,
                    max(int(v) for v in top("head")), lite, tuple(slots), tuple(strides), largest, smallest)


def _stages(space: Space) -> list[dict[str, Knob]]:
    """The space's stages; without a ``stages`` section, each block of the base is a fixed stage of one."""
    if space.stages is not None:
        return [dict(st) for st in space.stages]
    out = []
    for b in space.base_config.blocks[1:]:
        st: dict[str, Knob] = {"out": b.out, "depth": 1, "stride": b.stride}
        if b.stride == 2:
            st.update(down_e1=int(b.e1), down_e2=b.e2)
        else:
            st["e1"] = b.e1
        out.append(st)
    return out


# ----------------------------------------------------------------------------- configs -> slots


def assign_slots(sk: Skeleton, cfg: MobileFormerConfig) -> list[int]:
    """The slot of every block after the lite one; ``ValueError`` when ``cfg`` is not a sub-network.

    A config's blocks split into the stages in order (stride-2 stages start with their down block,
    all blocks of a stage share one width); when two stride-1 stages make the split ambiguous, the
    earlier stage takes as many blocks as it can.
    """
    widths = cfg.channels()
    blocks = list(zip(cfg.blocks[1:], widths[1:]))
    n_stages = len(sk.stage_strides)
    per_stage = [sk.stage_slots(i) for i in range(n_stages)]
    memo: dict[tuple[int, int], list[int] | None] = {}

    def fits(slot: Slot, b: BlockConfig, ci: int, co: int) -> bool:
        if ci > slot.cin or co > slot.cout or b.stride != slot.stride:
            return False
        if slot.kind == "down":
            return int(b.e1) <= slot.e1 and b.e2 <= slot.e2
        return round(ci * b.e1) <= slot.hidden

    def rec(bi: int, si: int) -> list[int] | None:
        if si == n_stages:
            return [] if bi == len(blocks) else None
        if (bi, si) in memo:
            return memo[(bi, si)]
        found = None
        ids = per_stage[si]
        for k in range(min(len(ids), len(blocks) - bi), 0, -1):
            group = blocks[bi:bi + k]
            if len({b.out for b, _ in group}) == 1 and all(fits(sk.slots[s], b, ci, co)
                                                           for s, (b, (ci, co)) in zip(ids, group)):
                rest = rec(bi + k, si + 1)
                if rest is not None:
                    found = ids[:k] + rest
                    break
        memo[(bi, si)] = found
        return found

    slots = rec(0, 0)
    if slots is None:
        raise ValueError(f"not a sub-network of this supernet: the blocks of {cfg.summary()} do not fit its stages")
    return slots


def check_fits(sk: Skeleton, cfg: MobileFormerConfig) -> None:
    """``ValueError`` naming the first field of ``cfg`` outside the supernet (other than the block list)."""
    const = sk.largest
    for f in dataclasses.fields(MobileFormerConfig):  # dropout holds no weights and is off when a sub-network is scored
        if f.name in (*SHARED, "blocks", "name", "num_classes", "dropout"):
            continue
        if getattr(cfg, f.name) != getattr(const, f.name):
            raise ValueError(f"not a sub-network of this supernet: {f.name} is {getattr(cfg, f.name)!r}, "
                             f"the supernet's is {getattr(const, f.name)!r}")
    b0, (ci, co) = cfg.blocks[0], cfg.channels()[0]
    limits = {"num_tokens": (cfg.num_tokens, sk.num_tokens), "token_dim": (cfg.token_dim, sk.token_dim),
              "stem": (ci, sk.stem), "head": (cfg.head, sk.head), "lite.out": (co, sk.lite.cout),
              "lite.e1": (int(b0.e1), sk.lite.e1)}
    for name, (v, cap) in limits.items():
        if v > cap:
            raise ValueError(f"not a sub-network of this supernet: {name} is {v}, at most {cap}")
    if b0.stride != sk.lite.stride:
        raise ValueError(f"not a sub-network of this supernet: lite.stride is {b0.stride}, not {sk.lite.stride}")


__all__ = ["SHARED", "Skeleton", "Slot", "assign_slots", "check_fits", "check_shareable", "extreme_config",
           "numpy_suggest", "random_config", "skeleton", "values"]
