"""The statistics of an ablation arm: the paired difference, its interval, the minimal detectable effect, and
the adaptive-seed stopping rule.

Every difference is paired by seed: arm and baseline train on the same data subset and from the same
seed, so the per-seed difference ``d_s = top1(arm, s) - top1(baseline, s)`` cancels the part of the
seed noise both share. With ``n`` paired seeds, mean ``m`` and sample std ``s`` of the ``d_s``:

- **95% interval**: ``m +/- t(0.975, n-1) * s / sqrt(n)`` (Student t; its half-width is ``h``).
- **Minimal detectable effect** (MDE) at 80% power: the true mean difference ``delta`` that a two-sided
  paired t-test at alpha = 0.05 over these ``n`` seeds detects with probability 0.8, taking the
  observed ``s`` as the true std: the root of ``P(|T| > t(0.975, n-1)) = 0.8`` where ``T`` is
  noncentral t with ``n-1`` degrees of freedom and noncentrality ``delta * sqrt(n) / s``. Close to
  ``(t(0.975, n-1) + t(0.8, n-1)) * s / sqrt(n)``; for many seeds ``(1.960 + 0.842) * s / sqrt(n)``.
  An arm whose interval includes 0 is inconclusive, and its MDE says how large an effect would have
  shown: one at least that large is unlikely to have been missed.
- **Adaptive seeds** (:func:`seed_decision`): an arm gets another seed while its interval includes 0,
  is wider than ``+/- target`` and it has tried fewer than ``max`` seeds.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

ALPHA = 0.05  # two-sided
POWER = 0.8

#: Why an arm stopped getting seeds (or that it has not: ``open``).
STOP_REASONS = {
    "fixed": "the file lists its seeds",
    "excludes 0": "the 95% interval excludes 0 (with at least `confirm` seeds)",
    "target": "the interval reached the target half-width",
    "max": "reached the maximum number of seeds",
    "open": "still adding seeds",
}


@dataclass(frozen=True)
class SeedRule:
    """``seeds: {min, max, target, confirm}``: ``min`` seeds for every arm, then up to ``max``, until the
    paired interval excludes 0 (with at least ``confirm`` seeds tried: an interval that excludes 0 earlier
    gets more seeds, so a lucky start does not end the arm) or its half-width is at most ``target`` points.
    Seeds are 0, 1, 2, ... in order. ``confirm`` defaults to ``min`` (stop at the first exclusion)."""

    min: int
    max: int
    target: float
    confirm: int = 0  # 0: min

    def __post_init__(self) -> None:
        object.__setattr__(self, "confirm", min(max(self.confirm, self.min), self.max))

    def to_dict(self) -> dict[str, float]:
        return {"min": self.min, "max": self.max, "target": self.target, "confirm": self.confirm}


def t_interval(diffs: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Student-t confidence interval of the mean of ``diffs`` (paired differences); NaNs below 2 values."""
    from scipy import stats

    n = len(diffs)
    if n < 2:
        return (math.nan, math.nan)
    m = statistics.fmean(diffs)
    sd = statistics.stdev(diffs)
    h = stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return (m - h, m + h)


def welch_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Welch interval of ``mean(b) - mean(a)`` for two unpaired groups (e.g. two search methods over their
    search seeds; unequal variances); NaNs below 2 values in either group."""
    from scipy import stats

    if min(len(a), len(b)) < 2:
        return (math.nan, math.nan)
    ci = stats.ttest_ind(list(b), list(a), equal_var=False).confidence_interval(level)
    return (float(ci.low), float(ci.high))


def permutation_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Exact two-sided permutation p of ``mean(b) - mean(a)``: the share of all splits of the pooled values into
    groups of those sizes whose difference of means is at least as large in magnitude (3 + 3 values: 20
    splits, so the smallest p is 0.1). Makes no normality assumption; every split is enumerated."""
    import itertools

    pooled = [*map(float, a), *map(float, b)]
    if not a or not b:
        return math.nan
    obs = abs(statistics.fmean(b) - statistics.fmean(a))
    total = sum(pooled)
    hits = splits = 0
    for idx in itertools.combinations(range(len(pooled)), len(b)):
        sb = sum(pooled[i] for i in idx)
        diff = sb / len(b) - (total - sb) / len(a)
        splits += 1
        hits += abs(diff) >= obs - 1e-12
    return hits / splits


def mde(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """Minimal detectable effect of a two-sided paired t-test over ``n`` pairs whose differences have std ``sd``.

    The true mean difference at which the test at level ``alpha`` rejects with probability ``power``
    (noncentral t, see the module docstring); in the unit of ``sd``. NaN below 2 pairs.
    """
    from scipy import optimize, stats

    if n < 2 or not math.isfinite(sd):
        return math.nan
    if sd == 0:
        return 0.0
    df = n - 1
    crit = stats.t.ppf(1 - alpha / 2, df)

    def power_at(delta: float) -> float:
        nc = delta * math.sqrt(n) / sd
        lower = float(stats.nct.cdf(-crit, df, nc))  # the wrong-sign tail: tiny, and NaN in scipy far out
        return float(stats.nct.sf(crit, df, nc)) + (lower if math.isfinite(lower) else 0.0)

    # power grows from alpha at 0; the t-quantile sum brackets the root from above with room to spare
    hi = 2 * (crit + stats.t.ppf(power, df)) * sd / math.sqrt(n)
    while power_at(hi) < power:  # bounded: power -> 1 as delta grows
        hi *= 2
    return float(optimize.brentq(lambda d: power_at(d) - power, 0.0, hi, xtol=1e-10 * sd))


def paired_stats(diffs: Sequence[float]) -> dict[str, float]:
    """Mean, 95% interval, half-width, std and MDE of paired differences (NaN where undefined)."""
    n = len(diffs)
    mean = statistics.fmean(diffs) if n else math.nan
    sd = statistics.stdev(diffs) if n > 1 else math.nan
    lo, hi = t_interval(diffs)
    return {"n": n, "diff": mean, "ci_low": lo, "ci_high": hi, "half_width": (hi - lo) / 2, "sd_diff": sd,
            "mde": mde(sd, n)}


def seed_decision(diffs: Sequence[float], tried: int, rule: SeedRule | None) -> str:
    """Whether an arm needs another seed (``open``) or why it stopped (a key of :data:`STOP_REASONS`).

    ``diffs``: its paired differences to the baseline; ``tried``: the seeds it has a record for,
    failed runs included (a diverged run is a result; its seed is not retried).
    """
    if rule is None:
        return "fixed"
    if tried < rule.min:
        return "open"
    lo, hi = t_interval(diffs)
    if lo > 0 or hi < 0:  # before `confirm` seeds (< max) an exclusion is not yet trusted: the arm goes on
        return "excludes 0" if tried >= rule.confirm else "open"
    if (hi - lo) / 2 <= rule.target:
        return "target"
    if tried >= rule.max:
        return "max"
    return "open"  # includes 0 and wider than +/- target (or under two pairs: no interval yet)
