"""The search engines, by name: one entry each (``search.engine`` in a space file, ``--engine``).

An engine runs a study's remaining trials and returns a
:class:`~mfsearch.search.optuna_engine.SearchSummary`; every engine proposes, checks and records
through the same study, so any engine can continue a study. Adding one is one entry here, naming
a function ``(space, ref, num_classes, workers, progress, allow_change) -> SearchSummary`` that is
imported only when that engine runs (space files are checked against the names without it).
"""

from __future__ import annotations

import importlib
from typing import Any

from ..errors import InputError

#: name -> "module:function" (relative to this package)
ENGINES: dict[str, str] = {
    "optuna": "workers:run_optuna",  # ask/tell in this process, or in --workers processes
    "ray": "ray_engine:run_ray_engine",  # Ray Tune, on this machine or a cluster (search.address)
}


def run_engine(space: Any, ref: Any, num_classes: int, workers: int, progress: bool = True,
               allow_change: bool = False) -> Any:
    """Run the study's remaining trials with the engine named by ``space.search.engine``."""
    try:
        target = ENGINES[space.search.engine]
    except KeyError:
        raise InputError(f"search.engine: unknown engine {space.search.engine!r}; "
                         f"known: {', '.join(ENGINES)}") from None
    module, function = target.split(":")
    run = getattr(importlib.import_module(f".{module}", __package__), function)
    return run(space, ref, num_classes, workers, progress, allow_change)
