"""The search engines, by name: one entry each (``search.engine`` in a space file, ``--engine``).

An engine runs a study's remaining trials and returns a
:class:`~mfsearch.search.optuna_engine.SearchSummary`; every engine proposes, checks and records
through the same study, so any engine can continue a study. Adding one is one entry here: a name
and a function ``(space, ref, num_classes, workers, progress, allow_change) -> SearchSummary``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from ..errors import InputError

Engine = Callable[..., Any]


def _optuna(space: Any, ref: Any, num_classes: int, workers: int, progress: bool, allow_change: bool) -> Any:
    """Optuna ask/tell in this process, or in ``workers`` processes sharing the study."""
    if workers == 1:
        from .optuna_engine import OptunaSearch

        return OptunaSearch(space, ref, progress=progress, allow_change=allow_change).run(num_classes)
    from .workers import run_workers

    return run_workers(space, ref, workers, num_classes, progress=progress, allow_change=allow_change)


def _ray(space: Any, ref: Any, num_classes: int, workers: int, progress: bool, allow_change: bool) -> Any:
    """Ray Tune, on this machine or a cluster (``search.address``); ``workers``: trials at once."""
    from .ray_engine import run_ray

    s = space.search
    return run_ray(space, ref, num_classes, s.address, s.cpus_per_trial, s.gpus_per_trial,
                   s.max_concurrent or (workers if workers > 1 else None), s.asha,
                   log=lambda m: print(m, file=sys.stderr, flush=True), allow_change=allow_change)


ENGINES: dict[str, Engine] = {"optuna": _optuna, "ray": _ray}


def run_engine(space: Any, ref: Any, num_classes: int, workers: int, progress: bool = True,
               allow_change: bool = False) -> Any:
    """Run the study's remaining trials with the engine named by ``space.search.engine``."""
    try:
        engine = ENGINES[space.search.engine]
    except KeyError:
        raise InputError(f"search.engine: unknown engine {space.search.engine!r}; "
                         f"known: {', '.join(ENGINES)}") from None
    return engine(space, ref, num_classes, workers, progress, allow_change)
