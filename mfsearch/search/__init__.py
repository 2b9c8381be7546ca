"""Search engines (Optuna on one machine) over space files, writing to the results store."""

from .objective import evaluate, objective_values
from .optuna_engine import OptunaSearch, SearchSummary, make_sampler, open_study, repair

__all__ = ["OptunaSearch", "SearchSummary", "evaluate", "make_sampler", "objective_values", "open_study", "repair"]
