"""One-shot search: a weight-sharing Mobile-Former supernet, trained once, that scores any sub-network fast.

- :class:`Supernet`: every architecture of a space in one set of weights; ``extract(cfg)``.
- :func:`train_supernet`: the sandwich rule with in-place distillation, checkpointed and cached.
- :func:`score`: BatchNorm recalibration and validation top-1 of one sub-network.
"""

from ..evaluation.strategies import OneShotSettings, oneshot_settings, parse_oneshot
from .score import ScoreData, score, score_data
from .supernet import Supernet
from .train import SupernetRun, supernet_key, train_supernet

__all__ = ["OneShotSettings", "ScoreData", "Supernet", "SupernetRun", "oneshot_settings", "parse_oneshot", "score",
           "score_data", "supernet_key", "train_supernet"]
