"""The samplers a search can use, by name: one entry each (``search.sampler`` in a space file, ``--sampler``).

Adding one is one entry here: a name and a factory ``(search settings, seed) -> optuna sampler``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import InputError

Factory = Callable[[Any, int], Any]


def _random(s: Any, seed: int) -> Any:
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


def _tpe(s: Any, seed: int) -> Any:
    import optuna

    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=s.startup_trials)


def _nsga2(s: Any, seed: int) -> Any:
    import optuna

    return optuna.samplers.NSGAIISampler(seed=seed, population_size=s.population_size)


def _bruteforce(s: Any, seed: int) -> Any:
    import optuna

    return optuna.samplers.BruteForceSampler(seed=seed)


#: name -> factory; "grid" is every point of a discrete space, in a seeded order (Optuna's brute force)
SAMPLERS: dict[str, Factory] = {"random": _random, "tpe": _tpe, "nsga2": _nsga2, "grid": _bruteforce,
                                "bruteforce": _bruteforce}


def make_sampler(search: Any, seed: int) -> Any:
    """The Optuna sampler named by ``search.sampler``, seeded."""
    try:
        factory = SAMPLERS[search.sampler]
    except KeyError:
        raise InputError(f"search.sampler: unknown sampler {search.sampler!r}; known: {', '.join(SAMPLERS)}") from None
    return factory(search, seed)
