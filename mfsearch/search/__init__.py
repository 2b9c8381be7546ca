"""Search engines over space files (Optuna on one machine, Ray Tune on a cluster), writing to the results store.

The registries (:data:`~mfsearch.search.engines.ENGINES`, :data:`~mfsearch.search.samplers.SAMPLERS`)
import nothing heavy, so space files are checked against them without loading an engine; the rest
of this package's public names load on first use.
"""

from __future__ import annotations

from typing import Any

_LAZY = {"OptunaSearch": "optuna_engine", "SearchSummary": "optuna_engine", "open_study": "optuna_engine",
         "evaluate": "objective", "objective_values": "objective", "make_sampler": "samplers",
         "SAMPLERS": "samplers", "ENGINES": "engines", "run_engine": "engines"}


def __getattr__(name: str) -> Any:
    if name == "repair":
        from ..space.repair import repair

        return repair
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'mfsearch.search' has no attribute {name!r}")


__all__ = ["ENGINES", "SAMPLERS", "OptunaSearch", "SearchSummary", "evaluate", "make_sampler", "objective_values",
           "open_study", "repair", "run_engine"]
