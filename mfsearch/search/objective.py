"""The engine-agnostic objective: a config, the evaluation settings and a ``report`` callback.

Both engines (Optuna here, Ray Tune on a cluster) call :func:`evaluate`, and store what it
returns as the trial record, so a study can be continued by either.
"""

from __future__ import annotations

import time
from typing import Any

from ..evaluation.train import Report, TrialFailed, train_and_evaluate
from ..models import MobileFormerConfig
from ..space import Space, within_budget

__all__ = ["TrialFailed", "base_record", "evaluate", "objective_values"]


def base_record(cfg: MobileFormerConfig, space: Space, kind: str, cost: dict[str, int] | None = None) -> dict[str, Any]:
    """The part of a trial record known before training (written first, so a crash keeps it)."""
    from ..store import versions, worker_id

    if cost is None:
        cost = within_budget(cfg, space.budget)[1]
    return {
        "kind": kind,
        "config": cfg.to_dict(),
        "arch_id": cfg.arch_id,
        "summary": cfg.summary(),
        "macs": cost["macs"],
        "params": cost["params"],
        "input_size": space.budget.input_size,
        "eval_id": space.evaluation.eval_id(),
        "seed": space.evaluation.seed,
        "sampler_seed": space.search.seed,
        "versions": versions(),
        "worker": worker_id(),
        "started": time.time(),
    }


def evaluate(cfg: MobileFormerConfig, space: Space, report: Report | None = None) -> dict[str, Any]:
    """Train ``cfg`` with the space's evaluation settings; the result part of the record.

    Raises :class:`TrialFailed` (with the reason) when training cannot finish.
    """
    t0 = time.perf_counter()
    try:
        res = train_and_evaluate(cfg, space.evaluation, report)
    except RuntimeError as e:
        if isinstance(e, TrialFailed):
            raise
        if "out of memory" in str(e).lower():
            raise TrialFailed(f"out of memory: {str(e).splitlines()[0]}") from None
        raise
    return {
        "accuracy": res.accuracy,
        "history": res.history,
        "train_s": round(res.train_s, 3),
        "eval_s": round(res.eval_s, 3),
        "total_s": round(time.perf_counter() - t0, 3),
        "steps": res.steps,
        "stopped_early": res.stopped_early,
    }


def objective_values(space: Space, record: dict[str, Any]) -> list[float]:
    """The objective vector of a record, in the space's objective order."""
    return [float(record[name]) for name, _ in space.objectives]

