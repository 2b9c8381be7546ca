"""One-shot search: a weight-sharing Mobile-Former supernet, trained once, that scores any sub-network fast."""

from .supernet import Supernet

__all__ = ["Supernet"]
