"""mfsearch: architecture search and ablation studies around Mobile-Former."""

from __future__ import annotations

from os import PathLike
from typing import Any

__version__ = "0.1.0"

#: the model family's public names, imported on first use (``import mfsearch`` stays cheap: the
#: command line starts, and answers Ctrl-C, before PyTorch is loaded)
_MODELS = ("PAPER", "BlockConfig", "ConfigError", "MobileFormer", "MobileFormerConfig", "complexity", "count_params",
           "create_model", "get_config", "list_models", "load_released_checkpoint")


def __getattr__(name: str) -> Any:
    if name in _MODELS:
        from . import models

        return getattr(models, name)
    raise AttributeError(f"module 'mfsearch' has no attribute {name!r}")


def open_study(target: str | PathLike, storage: str | None = None, runs: str | PathLike | None = None) -> Any:
    """The :class:`optuna.Study` of a study name, run directory or space file (reading never creates a store).

    For a DataFrame of its trials use :func:`load_results`.
    """
    import optuna

    from .errors import InputError
    from .search.commands import study_ref
    from .store import open_storage

    ref = study_ref(target, storage, runs)
    st = open_storage(ref.storage, create=False)
    if ref.name not in {s.study_name for s in optuna.get_all_study_summaries(st, include_best_trial=False)}:
        raise InputError(f"no study named {ref.name} in {ref.run_dir}; run it first")
    return optuna.load_study(study_name=ref.name, storage=st)


def load_results(target: str | PathLike, storage: str | None = None,
                 runs: str | PathLike | None = None) -> tuple[Any, dict]:
    """The trials of a study as a DataFrame, plus its attributes (notebooks start here).

    ``target``: a study name, a run directory or a space file. For the :class:`optuna.Study`
    itself use :func:`open_study`. Reading never creates a store.
    """
    from .analysis import study_frames
    from .search.commands import study_ref

    return study_frames(study_ref(target, storage, runs))


__all__ = [
    "PAPER", "BlockConfig", "ConfigError", "MobileFormer", "MobileFormerConfig", "__version__", "complexity",
    "count_params", "create_model", "get_config", "list_models", "load_released_checkpoint", "load_results",
    "open_study",
]
