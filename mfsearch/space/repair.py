"""Budget repair: a sample over the budget, lowered knob by knob until it fits (bounded, deterministic).

When most of a space is over its budget, a sampler can propose infeasible points many times in a
row; the search then repairs the last one instead of rejecting samples without end.
"""

from __future__ import annotations

import math
from typing import Any

from ..models import ConfigError
from .sample import knob_dists, sample_config
from .spec import Dist, Space


def repair(space: Space, params: dict[str, Any]) -> dict[str, Any] | None:
    """Lower knobs greedily (the step that brings the costs closest to the budget first) until the config fits;
    bounded steps. The costs are those the budget bounds (MACs, params, a predicted latency)."""
    dists = knob_dists(space)
    cur = dict(params)

    def cost(p: dict[str, Any]) -> float:
        try:
            cfg = sample_config(space, lambda n, d: p.get(n, d.bounds()[0]))
        except ConfigError:
            return math.inf
        fits, c = space.within_budget(cfg)
        b = space.budget
        over = (c["macs"] / b.macs if b.macs else 0.0) + (c["params"] / b.params if b.params else 0.0)
        if b.latency_ms and "latency_ms" in c:  # a predicted latency budget
            over += c["latency_ms"] / b.latency_ms
        return -1.0 if fits else over

    c0 = cost(cur)
    for _ in range(len(dists) + 1):
        if c0 < 0:
            return cur
        best = None
        for name, d in dists.items():
            low = _lower(d, cur.get(name))
            if low is None:
                continue
            trial = {**cur, name: low}
            c = cost(trial)
            if best is None or c < best[0]:
                best = (c, trial)
        if best is None or best[0] >= c0:
            return None
        c0, cur = best
    return cur if c0 < 0 else None


def _lower(d: Dist, v: Any) -> Any:
    """The knob's smallest value (cheapest for widths, depths, expansions, token counts)."""
    if d.kind == "choice":
        nums = [x for x in d.values if isinstance(x, (int, float)) and not isinstance(x, bool)]
        if not nums or v not in nums:
            return None
        low = min(nums)
        return low if low != v else None
    low = d.low if d.kind == "float" else int(d.low)
    return low if v is not None and low < v else None
