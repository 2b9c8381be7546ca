"""The engine-agnostic objective: a config, the evaluation settings and a ``report`` callback.

Both engines (Optuna here, Ray Tune on a cluster) call :func:`evaluate`, and store what it
returns as the trial record, so a study can be continued by either.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from ..evaluation.cost import cpu_seconds
from ..evaluation.strategies import strategy
from ..evaluation.train import Report, TrialFailed, train_and_evaluate
from ..models import MobileFormerConfig
from ..objectives import OBJECTIVES, column
from ..space import Space

__all__ = ["OverBudget", "TrialFailed", "base_record", "evaluate", "objective_values", "zero_cost_record"]


class OverBudget(Exception):  # noqa: N818 - an outcome, not an error
    """A measured quantity (latency) is over the budget: the trial is infeasible, not trained."""

    def __init__(self, record: dict[str, Any], reason: str) -> None:
        super().__init__(reason)
        self.record = record


def zero_cost_record(cfg: MobileFormerConfig, space: Space, names: list[str] | tuple[str, ...],
                     batch_size: int = 64) -> dict[str, Any]:
    """Zero-cost proxy scores of ``cfg`` on the first ``batch_size`` training images (seeded)."""
    from ..evaluation.zero_cost import batch_from, scores

    t0 = time.perf_counter()
    x, y, num_classes = batch_from(space.evaluation, batch_size)
    out: dict[str, Any] = dict(scores(cfg.replace(num_classes=num_classes), x, y, tuple(names),
                                      seed=space.evaluation.seed))
    out["zero_cost_s"] = round(time.perf_counter() - t0, 3)
    return out


def base_record(cfg: MobileFormerConfig, space: Space, kind: str, cost: dict[str, Any] | None = None) -> dict[str, Any]:
    """The part of a trial record known before training (written first, so a crash keeps it): the costs, a
    predicted latency among them where the space predicts it."""
    from ..store import versions, worker_id

    if cost is None:
        cost = space.within_budget(cfg)[1]
    predicted = {"latency_ms": cost["latency_ms"], "latency": space.latency_record()} if "latency_ms" in cost else {}
    return {
        "kind": kind,
        "config": cfg.to_dict(),
        "arch_id": cfg.arch_id,
        "summary": cfg.summary(),
        "macs": cost["macs"],
        "params": cost["params"],
        **predicted,
        "input_size": space.budget.input_size,
        "eval_id": space.evaluation.eval_id(),
        "seed": space.evaluation.seed,
        "sampler_seed": space.search.seed,
        "versions": versions(),
        "threads": space.evaluation.threads or torch.get_num_threads(),  # CPU results depend on it
        "worker": worker_id(),
        "started": time.time(),
    }


_LATENCY: dict[tuple, Any] = {}


def evaluate(cfg: MobileFormerConfig, space: Space, report: Report | None = None) -> dict[str, Any]:
    """Evaluate ``cfg`` as the space asks: latency (if used), zero-cost scores (if objectives), training.

    Raises :class:`TrialFailed` (with the reason) when training cannot finish, and
    :class:`OverBudget` (with what was measured) when the latency is over the budget.
    """
    t0, c0 = time.perf_counter(), cpu_seconds()
    out: dict[str, Any] = {}
    if space.measures_latency:  # a predicted latency came with the costs (base_record): nothing to time here
        from ..evaluation.latency import measure_latency

        key = (cfg.arch_id, space.latency, space.evaluation.seed)
        if key not in _LATENCY:  # a re-sampled architecture (often an over-budget one) is measured once
            _LATENCY[key] = measure_latency(cfg.replace(num_classes=1000), space.latency, seed=space.evaluation.seed)
        lat = _LATENCY[key]
        stat = space.latency.statistic
        try:
            ms = lat.value(stat)
        except ValueError as e:
            raise TrialFailed(f"latency.statistic: {e}") from None
        out["latency_ms"] = ms
        out["latency"] = {**lat.to_dict(), "source": "measured", "statistic": stat}
        limit = space.budget.latency_ms
        if limit is not None and ms > limit:
            raise OverBudget(out, f"latency {ms:.2f} ms ({stat}) > budget {limit:g} ms ({lat.device})")
    zc = [n for n, _ in space.objectives if OBJECTIVES[n].kind == "zero_cost"]
    if zc:
        out.update(zero_cost_record(cfg, space, zc))
    if not space.trains:
        out.update(total_s=round(time.perf_counter() - t0, 3), cpu_s=round(cpu_seconds() - c0, 3))
        return out
    try:
        out.update(strategy(space.evaluation.strategy)(cfg, space, report, epoch_reports_needed(space)))
    except RuntimeError as e:
        if isinstance(e, TrialFailed):
            raise
        if "out of memory" in str(e).lower():
            raise TrialFailed(f"out of memory: {str(e).splitlines()[0]}") from None
        raise
    # cpu_s: what the trial cost the machine, whatever else ran beside it (the wall clock total_s stretches
    # on a shared machine); the process evaluates one trial at a time, so its CPU clock is the trial's
    out.update(total_s=round(time.perf_counter() - t0, 3), cpu_s=round(cpu_seconds() - c0, 3))
    return out


def standalone(cfg: MobileFormerConfig, space: Space, report: Report | None, every_epoch: bool) -> dict[str, Any]:
    """The ``standalone`` strategy: train ``cfg`` from scratch with the space's evaluation settings."""
    res = train_and_evaluate(cfg, space.evaluation, report, evaluate_every_epoch=every_epoch)
    return {"accuracy": res.accuracy, "history": res.history, "train_s": round(res.train_s, 3),
            "eval_s": round(res.eval_s, 3), "steps": res.steps, "stopped_early": res.stopped_early,
            "fidelity": "standalone"}


def epoch_reports_needed(space: Space) -> bool:
    """Whether a trial must be validated after every epoch: only when something can stop it early on
    those numbers (Optuna's pruner, single-objective; Ray's ASHA). Otherwise once, at the end."""
    s = space.search
    return space.evaluation.epochs > 1 and (len(space.objectives) == 1 or (s.engine == "ray" and s.asha))


def objective_values(space: Space, record: dict[str, Any]) -> list[float]:
    """The objective vector of a record, in the space's objective order."""
    return [float(record[column(name)]) for name, _ in space.objectives]

