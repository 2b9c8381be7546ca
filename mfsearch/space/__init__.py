"""Search spaces: YAML space files (``parse``), the data they hold (``spec``), sampling configs from them."""

from ..evaluation.settings import Evaluation
from .parse import load_space
from .sample import optuna_suggest, random_suggest, sample_config
from .spec import Budget, Dist, Search, Space, constraint_values, within_budget

__all__ = [
    "Budget", "Dist", "Evaluation", "Search", "Space", "constraint_values", "load_space", "optuna_suggest",
    "random_suggest", "sample_config", "within_budget",
]
