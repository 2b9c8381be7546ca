"""Turning a space's knobs into a concrete :class:`MobileFormerConfig` (define-by-run)."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, Protocol

from ..models import BlockConfig, ConfigError, MobileFormerConfig
from .spec import Dist, Space

Suggest = Callable[[str, Dist], Any]
#: values a stage knob takes when the space file leaves it out (or its condition is not met)
STAGE_DEFAULTS = {"e1": 4, "stride": 2, "down_e1": 6, "down_e2": 4}


class TrialLike(Protocol):
    def suggest_categorical(self, name: str, choices: Any) -> Any: ...
    def suggest_int(self, name: str, low: int, high: int, step: int = 1, log: bool = False) -> int: ...
    def suggest_float(self, name: str, low: float, high: float, step: float | None = None,
                      log: bool = False) -> float: ...


def optuna_suggest(trial: TrialLike) -> Suggest:
    """A suggester backed by an Optuna trial (samplers see every knob as a parameter)."""

    def suggest(name: str, d: Dist) -> Any:
        if d.kind == "choice":
            return trial.suggest_categorical(name, list(d.values))
        if d.kind == "int":
            return trial.suggest_int(name, int(d.low), int(d.high), step=int(d.step or 1), log=d.log)
        return trial.suggest_float(name, d.low, d.high, step=d.step, log=d.log)

    return suggest


def random_suggest(seed: int) -> Suggest:
    """A seeded uniform suggester (no Optuna): smoke tests and quick looks at a space."""
    r = random.Random(seed)

    def suggest(name: str, d: Dist) -> Any:
        if d.kind == "choice":
            return r.choice(d.values)
        if d.kind == "int":
            step = int(d.step or 1)
            return int(d.low) + step * r.randint(0, (int(d.high) - int(d.low)) // step)
        if d.step:
            n = int((d.high - d.low) / d.step + 1e-9)
            return d.low + d.step * r.randint(0, n)
        return r.uniform(d.low, d.high)

    return suggest


def fixed_suggest(pick: str) -> Suggest:
    """Always the first (``pick='low'``) or last (``'high'``) value of each knob."""

    def suggest(name: str, d: Dist) -> Any:
        vals = d.bounds()
        return vals[0] if pick == "low" else vals[-1]

    return suggest


def _value(name: str, k: Any, suggest: Suggest, known: dict[str, Any]) -> Any:
    if not isinstance(k, Dist):
        return k
    for cond, allowed in k.when:
        if known.get(cond) not in allowed:
            return None  # condition not met: the knob keeps its base value
    return suggest(name, k)


def sample_config(space: Space, suggest: Suggest, num_classes: int = 1000) -> MobileFormerConfig:
    """One config of ``space``; raises :class:`ConfigError` when the sampled values cannot be built."""
    base = space.base_config
    known: dict[str, Any] = base.to_dict()
    changes: dict[str, Any] = {}
    for k, v in space.knobs.items():
        val = _value(k, v, suggest, known)
        if val is not None:
            changes[k] = val
            known[k] = val
    blocks = list(base.blocks)
    if space.lite is not None:
        b0 = blocks[0]
        lk = {k: _value(f"lite.{k}", v, suggest, known) for k, v in space.lite.items()}
        blocks[0] = BlockConfig("lite", lk.get("out") or b0.out, lk.get("e1") or b0.e1, lk.get("stride") or b0.stride)
    if space.stages is not None:
        blocks = blocks[:1]
        for i, st in enumerate(space.stages):
            s = {k: _value(f"stages.{i}.{k}", v, suggest, known) for k, v in st.items()}
            out, depth = s["out"], s["depth"]
            e1 = s.get("e1") or STAGE_DEFAULTS["e1"]
            stride = s.get("stride") or STAGE_DEFAULTS["stride"]
            if stride == 2:
                blocks.append(BlockConfig("mf", out, s.get("down_e1") or STAGE_DEFAULTS["down_e1"], 2,
                                          s.get("down_e2") or STAGE_DEFAULTS["down_e2"]))
                depth -= 1
            blocks += [BlockConfig("mf", out, e1, 1) for _ in range(depth)]
    changes["blocks"] = tuple(blocks)
    changes["num_classes"] = num_classes
    cfg = base.replace(**changes)
    return cfg.replace(name="")


def check_space_buildable(space: Space) -> tuple[str, str] | None:
    """``(field, rule)`` when neither the low nor the high corner of the space can be built."""
    errors = []
    for pick in ("low", "high"):
        try:
            sample_config(space, fixed_suggest(pick))
            return None
        except ConfigError as e:
            errors.append(e)
    for seed in range(8):
        try:
            sample_config(space, random_suggest(seed))
            return None
        except ConfigError as e:
            errors.append(e)
    e = errors[0]
    return ("space", f"no sampled config can be built ({e.field}: {e.rule})")


def knob_dists(space: Space) -> dict[str, Dist]:
    """The knobs a sampler sees (parameter name -> distribution), in file order."""
    out = {k: v for k, v in space.knobs.items() if isinstance(v, Dist)}
    out.update({f"lite.{k}": v for k, v in (space.lite or {}).items() if isinstance(v, Dist)})
    for i, st in enumerate(space.stages or ()):
        out.update({f"stages.{i}.{k}": v for k, v in st.items() if isinstance(v, Dist)})
    return out
