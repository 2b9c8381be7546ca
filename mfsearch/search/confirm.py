"""``search.confirm: {top: K, seeds: S}``: after a search, train its best front stand-alone over several seeds.

A one-shot score (or one seed of a short proxy) ranks architectures with noise; confirmation says how
sure the front is. The ``K`` best architectures of the search's Pareto front (by score) and the paper
models inside the budget are each trained from scratch with the space's evaluation settings and the
seeds ``evaluation.seed + 0 .. S-1``. Every run is a trial of the study (a paper model's of the
reference study) with ``kind: confirm``, ``fidelity: standalone``, its ``seed`` and ``confirm_of`` (the
trial or paper model it confirms); a searched architecture's confirm trial carries the same parameters
as the trial it confirms. Confirm trials are not search trials: they never count toward
``search.trials`` nor enter the search's front or hypervolume, and the run's tables show them apart
(:func:`mfsearch.analysis.confirmed`).

Resumable: an (architecture, seed) already confirmed in the store is not trained again, so a killed
run continues with the runs it had not finished. In a stand-alone search the trial being confirmed (or
the paper model's reference run) already is a stand-alone run at ``evaluation.seed`` with these
settings: it is stored as that seed's confirm trial (``same_run_as``: its trial number) instead of
being trained a second time.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState, create_trial

from .. import _optuna
from ..evaluation.train import TrialFailed
from ..models import MobileFormerConfig, get_config
from ..space import Space, constraint_values
from ..store import StudyRef
from ..store.liveness import Heartbeat, fail_stale_trials
from .objective import base_record, evaluate, objective_values

Log = Callable[[str], None]


@dataclass
class ConfirmSummary:
    """What a confirmation did: runs trained now, runs found already done, runs that failed."""

    trained: int
    reused: int
    failed: int
    wall_s: float


def confirm_space(space: Space, seed_index: int) -> Space:
    """``space`` evaluated stand-alone with seed ``evaluation.seed + seed_index``."""
    ev = dataclasses.replace(space.evaluation, strategy="standalone", seed=space.evaluation.seed + seed_index)
    return dataclasses.replace(space, evaluation=ev)


def front_to_confirm(study: optuna.Study, space: Space, top: int) -> list[optuna.trial.FrozenTrial]:
    """The ``top`` best (by accuracy) search trials on the study's Pareto front, best first."""
    from ..analysis import pareto_front, trials_frame

    df = trials_frame(study, "search")
    if df.empty:
        return []
    df = df[(df["kind"] == "search") & (df["status"] == "trained")]
    front = pareto_front(df, [list(o) for o in space.objectives])
    if front.empty:
        return []
    best = front.sort_values(["accuracy", "trial"], ascending=[False, True]).head(top)
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    return [by_number[int(n)] for n in best["trial"]]


#: attributes of a finished run that describe the trial, not the run: not copied into its confirm trial
_TRIAL_ONLY = frozenset({"kind", "status", "heartbeat", "failure_reason", "confirm_of", "same_run_as"})


def _stored(study: optuna.Study, eval_id: str) -> tuple[set[tuple[str, int]], dict[tuple[str, int], Any]]:
    """One pass over ``study``'s finished trials: the (arch_id, seed) pairs already confirmed, and
    (arch_id, seed) -> a finished stand-alone search or reference run at ``eval_id``."""
    done: set[tuple[str, int]] = set()
    runs: dict[tuple[str, int], optuna.trial.FrozenTrial] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        ua = t.user_attrs
        key = (ua.get("arch_id"), ua.get("seed"))
        if ua.get("kind") == "confirm" and ua.get("status") == "confirmed":
            done.add(key)
        elif (ua.get("kind") in ("search", "reference") and ua.get("status") == "trained"
              and ua.get("fidelity") == "standalone" and ua.get("eval_id") == eval_id):
            runs.setdefault(key, t)
    return done, runs


def _reuse_one(study: optuna.Study, space: Space, src: optuna.trial.FrozenTrial, of: Any,
               params: dict[str, Any], dists: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Store the finished stand-alone run ``src`` as its seed's confirm trial (no training)."""
    rec = {**{k: v for k, v in src.user_attrs.items() if k not in _TRIAL_ONLY}, **extra, "kind": "confirm",
           "confirm_of": of, "status": "confirmed", "same_run_as": src.number,
           "cpu_s": 0.0}  # trained nothing: a study's CPU is the sum of its trials' cpu_s
    study.add_trial(create_trial(state=TrialState.COMPLETE, params=params, distributions=dists, user_attrs=rec,
                                 values=objective_values(space, rec),
                                 system_attrs=dict(src.system_attrs)))
    return rec


def _train_one(study: optuna.Study, space: Space, cfg: MobileFormerConfig, seed_index: int, of: Any,
               params: dict[str, Any], dists: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any] | None:
    """Train ``cfg`` stand-alone with one seed as a new trial of ``study``; its record, or None if it failed."""
    sp = confirm_space(space, seed_index)
    rec = {**base_record(cfg, sp, "confirm"), **extra, "confirm_of": of, "status": "training",
           "heartbeat": time.time()}
    study.add_trial(create_trial(state=TrialState.RUNNING, params=params, distributions=dists, user_attrs=rec))
    frozen = max((t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                  if t.user_attrs.get("started") == rec["started"] and t.user_attrs.get("arch_id") == cfg.arch_id),
                 key=lambda t: t.number)
    trial = optuna.Trial(study, frozen._trial_id)
    try:
        with Heartbeat(trial, first=False):
            res = evaluate(cfg, sp)
    except TrialFailed as e:
        trial.set_user_attr("status", "failed")
        trial.set_user_attr("failure_reason", str(e))
        study.tell(trial, state=TrialState.FAIL)
        return None
    except BaseException as e:
        reason = "interrupted by the user" if isinstance(e, KeyboardInterrupt) else f"stopped by {type(e).__name__}"
        trial.set_user_attr("status", "interrupted" if isinstance(e, KeyboardInterrupt) else "failed")
        trial.set_user_attr("failure_reason", reason)
        study.tell(trial, state=TrialState.FAIL)
        raise
    done = {**rec, **res, "status": "confirmed"}
    for k, v in res.items():
        trial.set_user_attr(k, v)
    trial.set_user_attr("status", "confirmed")
    _optuna.set_constraints(trial, constraint_values(done, space.budget))
    study.tell(trial, objective_values(space, done))
    return done


def run_confirm(space: Space, ref: StudyRef, num_classes: int, log: Log, references: list[str] | None = None,
                allow_change: bool = False) -> ConfirmSummary:
    """Train the ``search.confirm`` front stand-alone (see the module); a no-op without a confirm block."""
    from .optuna_engine import open_study

    t0 = time.perf_counter()
    if space.search.confirm is None:
        return ConfirmSummary(0, 0, 0, 0.0)
    top, seeds = space.search.confirm
    study = open_study(space, ref, allow_change=allow_change)
    fail_stale_trials(study)
    work: list[tuple[optuna.Study, MobileFormerConfig, Any, dict, dict, dict]] = []
    for t in front_to_confirm(study, space, top):
        cfg = MobileFormerConfig.from_dict(t.user_attrs["config"])
        work.append((study, cfg, t.number, dict(t.params), dict(t.distributions), {}))
    names = space.reference_names() if references is None else references
    if names:
        ref_study = open_study(space, ref, name=ref.reference_name, allow_change=allow_change)
        fail_stale_trials(ref_study)
        for name in names:
            work.append((ref_study, get_config(name).replace(num_classes=num_classes), name, {}, {}, {"name": name}))
    trained = reused = failed = 0
    total = len(work) * seeds
    log(f"confirm: training {len(work)} architecture(s) stand-alone with {seeds} seed(s) each ({total} runs; "
        "those already in the store are kept)")
    eval_id = space.evaluation.eval_id()
    for st, cfg, of, params, dists, extra in work:
        done, runs = _stored(st, eval_id)
        for s in range(seeds):
            seed = space.evaluation.seed + s
            if (cfg.arch_id, seed) in done:
                reused += 1
                continue
            src = runs.get((cfg.arch_id, seed))
            if src is not None:
                _reuse_one(st, space, src, of, params, dists, extra)
                reused += 1
                log(f"confirm {extra.get('name') or cfg.arch_id[:8]} seed {seed}: the stand-alone run of trial "
                    f"{src.number} (same settings and seed), not trained again")
                continue
            rec = _train_one(st, space, cfg, s, of, params, dists, extra)
            if rec is None:
                failed += 1
                log(f"confirm {extra.get('name') or cfg.arch_id[:8]} seed {seed}: failed")
                continue
            trained += 1
            log(f"confirm {extra.get('name') or cfg.arch_id[:8]} (of {'trial ' if isinstance(of, int) else ''}{of}) "
                f"seed {seed}: acc {rec['accuracy']:.2f}%  {rec.get('train_s', 0):.1f}s")
    return ConfirmSummary(trained, reused, failed, time.perf_counter() - t0)


__all__ = ["ConfirmSummary", "confirm_space", "front_to_confirm", "run_confirm"]
