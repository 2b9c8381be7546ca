"""How a search evaluates an architecture, by name (``evaluation.strategy``), and the settings each one reads.

- ``standalone`` (the default): train it from scratch with the ``evaluation:`` settings
  (:func:`mfsearch.evaluation.train.train_and_evaluate`).
- ``oneshot``: score it as a sub-network of a weight-sharing supernet trained once
  (:mod:`mfsearch.oneshot`), with the ``oneshot:`` section below.

Adding a strategy is one entry in :data:`STRATEGIES` (its name and the function that evaluates a
config) plus that function. Its module may also define two hooks, found by name (:func:`strategy_hook`):
``prepare(space, run_dir, log)``, run by an engine once per process before the first trial (the
one-shot strategy trains or loads its supernet there), and ``unsupported(space, cfg) -> str | None``,
why a reference model cannot be evaluated this way (it is then left out of the search, saying why).

The ``oneshot:`` section: supernet training and sub-network scoring settings.

Separate from ``evaluation`` (which trains stand-alone models): a supernet trains longer, several
sub-networks per step. Data, batch size, weight decay, warm-up and label smoothing come from
``evaluation``; only what differs is set here.

```yaml
oneshot:
  epochs: 6                 # supernet training epochs
  subnets: 2                # random sub-networks per step, beside the largest and the smallest
  lr: 0.006                 # default: evaluation.lr
  recalibration_batches: 2  # training batches that re-estimate a scored sub-network's BN statistics
  val_images: 500           # scoring: the first N validation images (default: all of them)
```
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..fields import load_yaml, located

#: name -> "module:function" of a function ``(cfg, space, report, every_epoch) -> dict`` giving the
#: evaluated part of a trial record (``accuracy``, ``history``, ``fidelity``...); imported when used
STRATEGIES: dict[str, str] = {
    "standalone": "mfsearch.search.objective:standalone",
    "oneshot": "mfsearch.oneshot.strategy:evaluate",
}


def strategy(name: str) -> Any:
    """The evaluation function of strategy ``name``; an unknown name is one line listing the known ones."""
    import importlib

    try:
        module, function = STRATEGIES[name].split(":")
    except KeyError:
        raise InputError(f"evaluation.strategy: unknown strategy {name!r}; known: {', '.join(STRATEGIES)}") from None
    return getattr(importlib.import_module(module), function)


def strategy_hook(name: str, hook: str) -> Any:
    """The optional hook ``hook`` (``prepare``, ``unsupported``) of strategy ``name``'s module, or None."""
    import importlib

    module = STRATEGIES[name].split(":")[0]
    return getattr(importlib.import_module(module), hook, None)


@dataclass(frozen=True)
class OneShotSettings:
    """Supernet training (``epochs``, ``subnets``, ``lr``) and scoring (``recalibration_batches``, ``val_images``)."""

    epochs: int = 6
    subnets: int = 2
    lr: float | None = None
    recalibration_batches: int = 2
    val_images: int | None = None

    def training(self) -> dict[str, Any]:
        """The settings that change the trained weights (part of the supernet's cache key)."""
        return {"epochs": self.epochs, "subnets": self.subnets, "lr": self.lr}


_INTS = {"epochs": (1, 10_000), "subnets": (0, 64), "recalibration_batches": (1, 10_000),
         "val_images": (1, 10**7)}


def parse_oneshot(raw: Any, path: str | Path = "", lines: dict[str, int] | None = None) -> OneShotSettings:
    """Validate a ``oneshot`` mapping (None: the defaults); errors are one ``file:line: field: rule`` line."""
    lines = lines or {}

    def err(fld: str, rule: str) -> InputError:
        return located(path, lines, f"oneshot.{fld}" if fld else "oneshot", rule)

    if raw is None:
        return OneShotSettings()
    if not isinstance(raw, dict):
        raise err("", f"must be a mapping, got {type(raw).__name__}")
    known = [f.name for f in dataclasses.fields(OneShotSettings)]
    for k in raw:
        if k not in known:
            raise err(str(k), f"unknown key; known keys are {', '.join(sorted(known))}")
    kw: dict[str, Any] = {}
    for k, (lo, hi) in _INTS.items():
        if k in raw:
            v = raw[k]
            if v is None and k == "val_images":
                kw[k] = None
                continue
            if not isinstance(v, int) or isinstance(v, bool):
                raise err(k, f"must be an integer, got {v!r}")
            if not lo <= v <= hi:
                raise err(k, f"must be in [{lo}, {hi}], got {v}")
            kw[k] = v
    if "lr" in raw and raw["lr"] is not None:
        v = raw["lr"]
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or not 1e-7 <= v <= 1e6:
            raise err("lr", f"must be a number in [1e-07, 1e+06], got {v!r}")
        kw["lr"] = float(v)
    return OneShotSettings(**kw)


def oneshot_settings(space: Any) -> OneShotSettings:
    """The ``oneshot`` settings of a loaded :class:`~mfsearch.space.spec.Space` (defaults when absent)."""
    raw = space.raw.get("oneshot") if isinstance(space.raw, dict) else None
    lines: dict[str, int] = {}
    if raw is not None and space.path and Path(space.path).is_file():
        lines = load_yaml(space.path)[1]
    return parse_oneshot(raw, space.path, lines)


__all__ = ["STRATEGIES", "OneShotSettings", "oneshot_settings", "parse_oneshot", "strategy", "strategy_hook"]
