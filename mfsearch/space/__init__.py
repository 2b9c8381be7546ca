"""Search spaces: YAML space files and sampling configs from them."""

from .sample import constraint_values, optuna_suggest, random_suggest, sample_config, within_budget
from .spec import Budget, Dist, Evaluation, Search, Space, load_space

__all__ = [
    "Budget", "Dist", "Evaluation", "Search", "Space", "constraint_values", "load_space", "optuna_suggest",
    "random_suggest", "sample_config", "within_budget",
]
