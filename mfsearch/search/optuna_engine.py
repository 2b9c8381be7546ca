"""The Optuna engine: ask/tell search with MAC budgets, de-duplication and reference models.

- The budget is checked analytically before any training: an over-budget sample is told to
  Optuna as an infeasible trial (its constraints > 0) so samplers learn the boundary, and
  is never trained.
- After ``search.max_resample`` infeasible samples in a row, the last sample is *repaired*
  (its knobs lowered greedily, bounded steps) and enqueued, so a mostly-over-budget space still
  makes progress without an unbounded rejection loop.
- An architecture already evaluated in this study (same ``arch_id``; the study pins the
  evaluation settings) reuses its stored result instead of training again.
- Re-running continues the study: finished trials are kept; trials of a dead worker are failed
  with the reason; the sampler is re-seeded from the seed and the trial count.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from .. import _optuna
from ..errors import InputError, RunError
from ..evaluation.strategies import strategy_hook
from ..evaluation.train import StopTrial, TrialFailed
from ..models import ConfigError, MobileFormerConfig, get_config
from ..objectives import OBJECTIVES
from ..space import Space, constraint_values, optuna_suggest, sample_config
from ..space.definition import definition, first_difference
from ..space.repair import repair
from ..store import Retrying, StorageError, StudyRef, open_storage, redact, trial_constraints, write_run_info
from ..store.claim import claim_lock
from ..store.liveness import HEARTBEAT_S, STALE_S, Heartbeat, fail_stale_trials, last_sign_of_life
from .objective import OverBudget, base_record, evaluate, objective_values, zero_cost_record
from .samplers import make_sampler

Log = Callable[[str], None]


_CLEANING = [0]
_AGAIN = object()  # _sample_once: nothing claimed, sample again


def cleaning_up() -> bool:
    """Whether this process is writing the end of an interrupted trial (Ctrl-C waits for it)."""
    return _CLEANING[0] > 0


@contextlib.contextmanager
def _cleanup() -> Any:
    _CLEANING[0] += 1
    try:
        yield
    finally:
        _CLEANING[0] -= 1


@dataclass
class SearchSummary:
    study: str
    finished: int
    trained: int
    duplicates: int
    infeasible: int
    failed: int
    references: int
    wall_s: float


def study_attrs(space: Space) -> dict[str, Any]:
    """What a study pins at creation: its definition (objectives, budget, evaluation, knobs), HV reference point."""
    ref_point = {"accuracy": 0.0}
    if space.budget.macs:
        ref_point["macs"] = space.budget.macs
    if space.budget.params:
        ref_point["params"] = space.budget.params
    if space.budget.latency_ms:
        ref_point["latency"] = space.budget.latency_ms
    return {
        "objectives": [list(o) for o in space.objectives],
        "budget": {"macs": space.budget.macs, "params": space.budget.params, "input_size": space.budget.input_size,
                   **({"latency_ms": space.budget.latency_ms} if space.budget.latency_ms else {})},
        "eval_id": space.evaluation.eval_id(),
        "evaluation": space.evaluation.__dict__,
        "reference_point": ref_point,
        "definition": definition(space),
        "constraint_names": list(constraint_values({"macs": 0, "params": 0}, space.budget)),
    }


def _stored_definition(attrs: dict[str, Any]) -> dict[str, Any] | None:
    """The definition a study was created with (derived from the stored space file for older studies)."""
    if isinstance(attrs.get("definition"), dict):
        return attrs["definition"]
    raw = attrs.get("space")
    if not isinstance(raw, dict):
        return None
    from ..space.parse import space_from_data

    try:
        return definition(space_from_data(raw, "<stored space>", {}))
    except (InputError, ValueError, TypeError):
        return None


def _show(v: Any) -> str:
    import json

    text = json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def check_definition(space: Space, study: Any, name: str, allow_change: bool = False) -> None:
    """Refuse a space whose definition differs from the study's (one line naming the first field).

    With ``allow_change`` an acceptable change (see :mod:`mfsearch.space.definition`) is taken:
    the study's definition is updated and the change recorded in ``definition_changes``.
    """
    attrs = study.user_attrs
    new = definition(space)
    stored = _stored_definition(attrs)
    if stored is None:  # an old study without a readable definition: what was always compared
        if attrs.get("objectives") != new["objectives"]:
            raise InputError(f"{space.path}: objectives: study {name} has {attrs.get('objectives')}; give it another "
                             "name: (the study's name) to start a new study")
        if attrs.get("eval_id") != new["evaluation"]["eval_id"]:
            raise InputError(f"{space.path}: evaluation: differs from the settings study {name} was created with; "
                             "results would not be comparable: give it another name: (the study's name) for a new "
                             "study")
        study.set_user_attr("definition", new)
        return
    diff = first_difference(stored, new)
    if diff is None:
        if "definition" not in attrs:
            study.set_user_attr("definition", new)
        return
    fld, old, cur, ok = diff
    if not ok:
        why = ("a choice list cannot change within a study (its samplers keep one distribution per knob)"
               if fld.startswith("space.") else "results stored under the old value would be mixed with new ones")
        raise InputError(f"{space.path}: {fld}: study {name} was created with {_show(old)}, this file has "
                         f"{_show(cur)}; {why}: give it another name: (the study's name) to start a new study")
    if not allow_change:
        raise InputError(f"{space.path}: {fld}: study {name} was created with {_show(old)}, this file has "
                         f"{_show(cur)}; give it another name: (the study's name) to start a new study, or run with "
                         "--allow-change to continue this one with the changed space (recorded in the study)")
    changes = list(attrs.get("definition_changes") or [])
    changes.append({"time": time.time(), "file": str(space.path), "first_field": fld, "from": stored, "to": new})
    study.set_user_attr("definition_changes", changes)
    study.set_user_attr("definition", new)


def open_study(space: Space, ref: StudyRef, sampler: optuna.samplers.BaseSampler | None = None,
               name: str | None = None, allow_change: bool = False) -> optuna.Study:
    """Create or load the study; a study made with another definition is refused (see :func:`check_definition`)."""
    storage = open_storage(ref.storage)
    name = name or ref.name
    directions = [d for _, d in space.objectives]
    try:
        study = optuna.create_study(storage=storage, sampler=sampler, study_name=name, directions=directions,
                                    load_if_exists=True)
    except ValueError as e:
        raise InputError(f"study {name} in {redact(ref.storage)}: {redact(str(e), ref.storage)}") from None
    except OSError:
        raise
    except Exception as e:  # noqa: BLE001 - a database that refuses: one clear line
        raise StorageError(f"storage {redact(ref.storage)}: cannot open study {name} "
                           f"({redact(str(e).splitlines()[0] if str(e) else type(e).__name__, ref.storage)})") from None
    if not ref.storage.startswith(("journal:",)) and not ref.storage.endswith(".log"):
        study = Retrying(study, ref.storage, log=lambda m: print(m, file=sys.stderr))
    if not study.user_attrs:
        for k, v in study_attrs(space).items():
            study.set_user_attr(k, v)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([n for n, _ in space.objectives])  # optuna-dashboard shows them by name
    else:
        check_definition(space, study, name, allow_change)
    return study


def _feasible(t: optuna.trial.FrozenTrial) -> bool:
    return t.state == TrialState.COMPLETE and all(c <= 0 for c in trial_constraints(t))


def _finished(study: optuna.Study, trials: list[optuna.trial.FrozenTrial] | None = None
              ) -> list[optuna.trial.FrozenTrial]:
    if trials is None:
        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return [t for t in trials if _feasible(t)]  # _feasible: COMPLETE and within every constraint


def in_flight(study: optuna.Study, exclude: int | None,
              trials: list[optuna.trial.FrozenTrial] | None = None) -> dict[str, int]:
    """arch_id -> trial number of the search trials claimed and not yet told (by any worker).

    A trial whose status already reads ``trained`` but which is not told yet still counts: a worker
    writes the status just before ``tell``, and another worker counting in that gap would overshoot.
    Give ``trials`` (one snapshot) when counting together with :func:`evaluated`.
    """
    if trials is None:
        trials = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    return {t.user_attrs["arch_id"]: t.number for t in trials
            if t.state == TrialState.RUNNING and t.user_attrs.get("status") in ("training", "trained")
            and t.number != exclude and "arch_id" in t.user_attrs}


def progress_bar(space: Space, done: int, references: list[str] | None = None) -> Any:
    """The study's progress bar: search trials (``done`` of them already) plus the reference models."""
    from tqdm import tqdm

    target = space.search.trials
    refs = references if references is not None else space.reference_names()
    return tqdm(total=target + len(refs), initial=min(target, done), desc=space.name, unit="trial",
                dynamic_ncols=True, file=sys.stderr)


def evaluated(study: optuna.Study, trials: list[optuna.trial.FrozenTrial] | None = None
              ) -> dict[str, optuna.trial.FrozenTrial]:
    """Distinct architectures trained in the study (arch_id -> first trial); the search target."""
    out: dict[str, optuna.trial.FrozenTrial] = {}
    for t in _finished(study, trials):
        if t.user_attrs.get("status") == "trained":
            out.setdefault(t.user_attrs.get("arch_id", ""), t)
    return out


class OptunaSearch:
    """Runs one study until ``search.trials`` distinct architectures are trained (continuing where it stopped).

    Duplicates proposed by the sampler are told their stored result and do not count; the loop
    stops after ``search.max_resample`` duplicates in a row (an exhausted or converged space).
    """

    def __init__(self, space: Space, ref: StudyRef, log: Log | None = None, progress: bool = True,
                 worker: int = 0, run_references: bool = True,
                 sink: Callable[[str, bool], None] | None = None, allow_change: bool = False) -> None:
        self.space = space
        self.allow_change = allow_change  # accept a compatible change of the space (recorded in the study)
        self.ref = ref
        self.log = log or (lambda s: print(s, file=sys.stderr))
        self.progress = progress
        self.worker = worker
        self.with_references = run_references
        self.sink = sink  # (trial line, counts as one finished) -> the parent's progress bar (workers)

    # ------------------------------------------------------------------ helpers
    def _line(self, tag: str, cfg: MobileFormerConfig, rec: dict[str, Any], extra: str = "") -> str:
        acc = rec.get("accuracy")
        acc_s = f"acc {acc:5.2f}%" if isinstance(acc, (int, float)) else "acc   -  "
        if "latency_ms" in rec:
            acc_s += f" lat {rec['latency_ms']:6.2f}ms" + ("~" if self.space.predicts_latency else "")
        for n, _ in self.space.objectives:
            if OBJECTIVES[n].kind == "zero_cost" and n in rec:
                acc_s += f" {n} {rec[n]:.4g}"
        return (f"{tag:<14} {cfg.arch_id[:8]} MACs {rec['macs'] / 1e6:7.1f}M params {rec['params'] / 1e6:6.2f}M "
                f"{acc_s} {rec.get('total_s', 0):6.1f}s  {cfg.summary()}{extra}")

    def begin(self, trial: Any, rec: dict[str, Any]) -> None:
        """Write the record known before training (a crash mid-trial keeps it), with the first heartbeat."""
        for k, v in rec.items():
            trial.set_user_attr(k, v)
        trial.set_user_attr("heartbeat", time.time())
        trial.set_user_attr("status", "training")

    def finish(self, study: optuna.Study, trial: Any, rec: dict[str, Any], res: dict[str, Any]) -> dict[str, Any]:
        """Store the result and tell the objective values (with the budget constraints)."""
        rec = {**rec, **res, "status": "trained"}
        for k, v in res.items():
            trial.set_user_attr(k, v)
        trial.set_user_attr("status", "trained")
        _optuna.set_constraints(trial, constraint_values(rec, self.space.budget))
        study.tell(trial, objective_values(self.space, rec))
        return rec

    def fail(self, study: optuna.Study, trial: Any, reason: str, status: str = "failed") -> None:
        with _cleanup():
            trial.set_user_attr("status", status)
            trial.set_user_attr("failure_reason", reason)
            study.tell(trial, state=TrialState.FAIL)
        self.log(f"trial {trial.number} {status}: {reason}")

    def _train_trial(self, study: optuna.Study, trial: Any, cfg: MobileFormerConfig,
                     rec: dict[str, Any]) -> dict[str, Any] | None:
        """Train and tell (the trial was claimed with :meth:`begin`); the record, or None on failure."""
        history: list[dict[str, float]] = []

        def report(step: int, metrics: dict[str, float]) -> None:
            history.append(metrics)
            trial.set_user_attr("history", history)  # partial history survives a crash
            if len(self.space.objectives) == 1:
                trial.report(metrics["val_acc"], step)
                if trial.should_prune():
                    raise StopTrial

        try:
            with Heartbeat(trial, first=False):  # begin() wrote the first beat
                res = evaluate(cfg, self.space, report)
        except TrialFailed as e:
            self.fail(study, trial, str(e))
            return None
        except OverBudget as e:  # measured over the latency budget: infeasible, not trained
            for k, v in e.record.items():
                trial.set_user_attr(k, v)
            trial.set_user_attr("failure_reason", str(e))
            self._tell_infeasible(study, trial, {**rec, **e.record}, None)
            self.stats["infeasible"] += 1
            return {**rec, **e.record, "status": "over_budget"}
        except KeyboardInterrupt:
            self.fail(study, trial, "interrupted by the user", "interrupted")
            raise
        return self.finish(study, trial, rec, res)

    # ------------------------------------------------------------------ references
    def reference_names(self) -> list[str]:
        """The paper models under the budget that the evaluation strategy can evaluate (the others are named once)."""
        names = self.space.reference_names()
        hook = strategy_hook(self.space.evaluation.strategy, "unsupported") if self.space.trains else None
        if hook is None or not names:
            return names
        keep = []
        for name in names:
            why = hook(self.space, get_config(name))
            if why is None:
                keep.append(name)
            elif not getattr(self, "_said_refs", False):
                self.log(f"reference {name} left out: {why}")
        self._said_refs = True
        return keep

    def run_references(self, num_classes: int, bar: Any = None) -> int:
        names = self.reference_names()
        if not names:
            return 0
        study = open_study(self.space, self.ref, name=self.ref.reference_name, allow_change=self.allow_change)
        fail_stale_trials(study)
        done = {t.user_attrs.get("name") for t in _finished(study) if t.user_attrs.get("kind") != "confirm"}
        count = 0
        for name in names:
            if name in done:
                continue
            cfg = get_config(name).replace(num_classes=num_classes)
            trial = study.ask()
            with self._owning(study, trial):
                rec = {**base_record(cfg, self.space, "reference"), "name": name}
                self.begin(trial, rec)
                rec_done = self._train_trial(study, trial, cfg, rec)
            if rec_done is not None:
                count += 1
                self._emit(bar, self._line(f"ref {name[14:]}", cfg, rec_done))
        return count

    @contextlib.contextmanager
    def _owning(self, study: optuna.Study, trial: Any) -> Any:
        """A trial this worker claimed is never left RUNNING: an error or Ctrl-C fails it with the reason."""
        try:
            yield
        except BaseException as e:
            if isinstance(e, KeyboardInterrupt):
                self._abandon(study, [trial], "interrupted by the user", "interrupted")
            else:
                self._abandon(study, [trial], f"stopped by {type(e).__name__}: {str(e)[:200]}", "failed")
            raise

    def _emit(self, bar: Any, line: str, count: bool = True) -> None:
        if bar is not None:
            bar.write(line)
            if count:
                bar.update(1)
        elif self.sink is not None:
            self.sink(line, count)
        else:
            self.log(line)

    # ------------------------------------------------------------------ main loop
    def open(self) -> optuna.Study:
        """Load (or create) the study with a sampler seeded from the seed, the trial count and the worker."""
        space = self.space
        probe = open_study(space, self.ref, allow_change=self.allow_change)
        fail_stale_trials(probe)
        # a resumed run does not replay old samples, and workers started together differ
        seed = space.search.seed + len(probe.trials) + 100_003 * self.worker
        study = open_study(space, self.ref, sampler=make_sampler(space.search, seed))
        if space.needs_latency:
            from ..evaluation.latency import device_description

            lat = space.latency
            study.set_user_attr("latency_settings", {**dataclasses.asdict(lat), "runtime": lat.resolved_runtime(),
                                                     "device_description": device_description(lat.device, lat.threads)})
        write_run_info(self.ref, {"space": space.path, "objectives": [list(o) for o in space.objectives]})
        study.set_user_attr(f"session_{len(study.trials)}_w{self.worker}",
                            {"sampler_seed": seed, "started": time.time(), "worker": self.worker})
        self.stats = {"trained": 0, "duplicates": 0, "infeasible": 0, "failed": 0}
        self._runs = {"infeasible": 0, "dup": 0, "fail": 0}
        return study

    def next_candidate(self, study: optuna.Study, num_classes: int, bar: Any = None,
                       wait: bool = True) -> tuple[Any, MobileFormerConfig, dict[str, Any]] | None:
        """The next architecture to train: ``(trial, config, record)``, or None when nothing is left to claim.

        Over-budget, invalid and duplicate samples are told to the study on the way (bounded).
        When the last trials are being trained by other workers this worker leaves them to
        finish, except that a trial whose worker went quiet is waited on (saying so) until it
        beats again or is failed as stale, at most :data:`STALE_S` seconds, and then redone here.
        """
        said = 0.0
        while True:
            asked: list[Any] = []
            with claim_lock(self.ref, study, log=self.log):
                try:
                    out = self._next_locked(study, num_classes, bar, asked)
                except BaseException as e:
                    self._abandon(study, asked, f"sampling stopped ({type(e).__name__}: {str(e)[:200]})")
                    raise
            if out != "wait":
                return out
            if fail_stale_trials(study):
                continue  # a dead worker's trial was failed: claim it again here
            if not wait:
                return None
            now = time.time()
            others = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                      if t.user_attrs.get("status") in ("training", "trained")]
            quiet = [t for t in others if now - last_sign_of_life(t) > 2 * HEARTBEAT_S]
            if not quiet:
                if others:
                    self.log(f"{len(others)} trial(s) of the study are being trained by other workers "
                             f"({self._who(others, now)}); they complete the study")
                return None
            if now - said > 30:
                self.log(f"waiting for trial(s) {self._who(quiet, now)}: each either beats again or is failed "
                         f"as stale {STALE_S:.0f} s after its last heartbeat, and is then redone here")
                said = now
            time.sleep(2.0)

    @staticmethod
    def _who(trials: list, now: float) -> str:
        parts = []
        for t in trials[:4]:
            w = t.user_attrs.get("worker") or {}
            parts.append(f"#{t.number} on {w.get('host', '?')} pid {w.get('pid', '?')}, "
                         f"last heartbeat {now - last_sign_of_life(t):.0f} s ago")
        return "; ".join(parts) + (f"; {len(trials) - 4} more" if len(trials) > 4 else "")

    @staticmethod
    def _abandon(study: optuna.Study, trials: list[Any], reason: str, status: str = "abandoned") -> None:
        """Tell FAIL every trial of ``trials`` not told yet, so nothing stays RUNNING after an error."""
        for trial in trials:
            try:
                with _cleanup():
                    trial.set_user_attr("status", status)
                    trial.set_user_attr("failure_reason", reason)
                    study.tell(trial, state=TrialState.FAIL)
            except Exception:  # noqa: BLE001 - told already, or the storage is away (then it goes stale)
                pass

    def _next_locked(self, study: optuna.Study, num_classes: int, bar: Any, asked: list[Any] | None = None) -> Any:
        """Under the claim lock: sample until a candidate is found and marked ``training``.

        Every trial asked here is appended to ``asked`` (the caller fails the untold ones on an error).
        """
        asked = [] if asked is None else asked
        pool: list[tuple[Any, MobileFormerConfig, dict[str, Any]]] = []  # prescreen candidates
        while True:
            out = self._sample_once(study, num_classes, bar, asked, pool)
            if out is not _AGAIN:
                return out

    def _sample_once(self, study: optuna.Study, num_classes: int, bar: Any, asked: list[Any], pool: list) -> Any:
        """One sample of :meth:`_next_locked`: what it returns, or ``_AGAIN`` to sample once more."""
        space = self.space
        target = space.search.trials
        runs = self._runs
        # one snapshot for both counts: read apart, a trial told in between would be in neither
        snapshot = study.get_trials(deepcopy=False)
        known = evaluated(study, snapshot)
        if not pool and len(known) + len(in_flight(study, None, snapshot)) >= target:
            return None if len(known) >= target else "wait"
        if runs["dup"] >= space.search.max_resample:
            if pool:
                return self._prescreen(study, pool, space)
            self.log(f"stopping: the last {runs['dup']} samples were all architectures already evaluated "
                     "(the space is exhausted or the sampler has converged)")
            return None
        trial = study.ask()
        asked.append(trial)
        try:
            cfg = sample_config(space, optuna_suggest(trial), num_classes=num_classes)
            fits, cost = space.within_budget(cfg)  # analytic costs, and a predicted latency
            invalid = None
        except ConfigError as e:
            cfg, fits, cost, invalid = None, False, {"macs": 0, "params": 0}, str(e)
        if not fits:
            self.stats["infeasible"] += 1
            runs["infeasible"] += 1
            self._tell_infeasible(study, trial, cost, invalid)
            if runs["infeasible"] >= space.search.max_resample:
                fixed = repair(space, trial.params)
                if fixed is None:
                    raise InputError(f"{space.path}: budget: {runs['infeasible']} samples in a row were over "
                                     "budget and none could be repaired; widen the space or raise the budget")
                study.enqueue_trial(fixed, user_attrs={"repaired_from": trial.number})
                runs["infeasible"] = 0
            return _AGAIN
        runs["infeasible"] = 0
        snapshot = study.get_trials(deepcopy=False)  # fresh, and one read for both checks below
        known = evaluated(study, snapshot)
        busy = in_flight(study, trial.number, snapshot).get(cfg.arch_id)
        busy = busy if busy is not None else next((t.number for t, c, _ in pool if c.arch_id == cfg.arch_id), None)
        if busy is not None:  # another worker is training this architecture right now (or it is pooled)
            trial.set_user_attr("kind", "search")
            trial.set_user_attr("status", "duplicate_in_flight")
            trial.set_user_attr("failure_reason", f"architecture already being trained by trial {busy}")
            study.tell(trial, state=TrialState.FAIL)
            runs["dup"] += 1
            return _AGAIN
        prev = known.get(cfg.arch_id)
        if prev is not None:
            self._tell_duplicate(study, trial, cfg, prev)
            self.stats["duplicates"] += 1
            runs["dup"] += 1
            self._emit(bar, self._line(f"#{trial.number} dup", cfg, dict(prev.user_attrs)), count=False)
            return _AGAIN
        runs["dup"] = 0
        if space.prescreen is not None:
            pool.append((trial, cfg, cost))
            if len(pool) < space.prescreen.candidates:
                return _AGAIN
            return self._prescreen(study, pool, space)
        rec = base_record(cfg, space, "search", cost)
        self.begin(trial, rec)  # claimed: other workers now count it as in flight
        return trial, cfg, rec

    def _prescreen(self, study: optuna.Study, pool: list, space: Space) -> tuple[Any, MobileFormerConfig, dict]:
        """Score the pooled candidates with the zero-cost proxy; claim the best, tell the rest screened out."""
        ps = space.prescreen
        scored = []
        for trial, cfg, cost in pool:
            zc = zero_cost_record(cfg, space, [ps.proxy], ps.batch_size)
            scored.append((zc[ps.proxy], trial, cfg, cost, zc))
        best = max(range(len(scored)), key=lambda i: (scored[i][0], -scored[i][1].number))
        for i, (score, trial, cfg, cost, zc) in enumerate(scored):
            if i == best:
                continue
            for k, v in {**base_record(cfg, space, "search", cost), **zc}.items():
                trial.set_user_attr(k, v)
            trial.set_user_attr("status", "screened_out")
            trial.set_user_attr("failure_reason", f"{ps.proxy} {score:.4g} below the best of {len(pool)} "
                                f"candidates ({scored[best][0]:.4g}, trial {scored[best][1].number})")
            study.tell(trial, state=TrialState.FAIL)
            self.stats["screened_out"] = self.stats.get("screened_out", 0) + 1
        _, trial, cfg, cost, zc = scored[best]
        rec = {**base_record(cfg, space, "search", cost), **zc, "prescreen": {"proxy": ps.proxy, "of": len(pool)}}
        self.begin(trial, rec)
        return trial, cfg, rec

    def count_outcome(self, study: optuna.Study, trial: Any, cfg: MobileFormerConfig,
                      done: dict[str, Any] | None, bar: Any = None) -> None:
        """Bookkeeping after a trial: progress line, and the bound on failures in a row."""
        if done is None:
            self.stats["failed"] += 1
            self._runs["fail"] += 1
            if self._runs["fail"] >= self.space.search.max_failures:
                reason = study.get_trials(deepcopy=False)[trial.number].user_attrs.get("failure_reason")
                raise RunError(f"{self.space.path}: search.max_failures: {self._runs['fail']} trials in a row "
                                 f"failed (last: {reason}); check the evaluation settings")
            return
        self._runs["fail"] = 0
        if done.get("status") == "over_budget":
            self._emit(bar, f"#{trial.number} over budget: {done.get('latency_ms', 0):.2f} ms", count=False)
            return
        self.stats["trained"] += 1
        self._emit(bar, self._line(f"#{trial.number}", cfg, done))

    def prepare_strategy(self, study: optuna.Study) -> None:
        """Run the evaluation strategy's ``prepare`` hook (the one-shot supernet: trained, waited for or loaded)
        once, before the first trial; what it returns is recorded in the study under the strategy's name."""
        if not self.space.trains:
            return
        name = self.space.evaluation.strategy
        hook = strategy_hook(name, "prepare")
        if hook is None:
            return
        info = hook(self.space, self.ref.run_dir, self.log)
        if info and study.user_attrs.get(name) != info:
            study.set_user_attr(name, info)

    def run(self, num_classes: int) -> SearchSummary:
        t0 = time.perf_counter()
        space = self.space
        study = self.open()
        self.prepare_strategy(study)
        bar = progress_bar(space, len(evaluated(study)), self.reference_names()) if self.progress else None
        try:
            refs = self.run_references(num_classes, bar) if self.with_references else 0
            while (cand := self.next_candidate(study, num_classes, bar)) is not None:
                trial, cfg, rec = cand
                with self._owning(study, trial):
                    done = self._train_trial(study, trial, cfg, rec)
                    self.count_outcome(study, trial, cfg, done, bar)
        finally:
            if bar is not None:
                bar.close()
        st = self.stats
        return SearchSummary(space.name, len(evaluated(study)), st["trained"], st["duplicates"],
                             st["infeasible"], st["failed"], refs, time.perf_counter() - t0)

    def _tell_infeasible(self, study: optuna.Study, trial: optuna.Trial, cost: dict[str, int],
                         invalid: str | None) -> None:
        trial.set_user_attr("kind", "search")
        trial.set_user_attr("status", "invalid" if invalid else "over_budget")
        trial.set_user_attr("macs", cost["macs"])
        trial.set_user_attr("params", cost["params"])
        if "latency_ms" in cost:  # predicted: the sampler is told how far over the budget it is
            trial.set_user_attr("latency_ms", cost["latency_ms"])
        if invalid:
            trial.set_user_attr("failure_reason", invalid)
            _optuna.set_constraints(trial, {k: 1.0 for k in constraint_values(cost, self.space.budget)})
        else:
            _optuna.set_constraints(trial, constraint_values(cost, self.space.budget))
        study.tell(trial, [OBJECTIVES[n].worst(cost) for n, _ in self.space.objectives])

    def _tell_duplicate(self, study: optuna.Study, trial: optuna.Trial, cfg: MobileFormerConfig,
                        prev: optuna.trial.FrozenTrial) -> None:
        for k, v in prev.user_attrs.items():
            if k not in ("worker", "started"):
                trial.set_user_attr(k, v)
        trial.set_user_attr("status", "duplicate")
        trial.set_user_attr("duplicate_of", prev.number)
        trial.set_user_attr("cpu_s", 0.0)  # trained nothing: a study's CPU is the sum of its trials' cpu_s
        _optuna.set_constraints(trial, constraint_values(dict(prev.user_attrs), self.space.budget))
        study.tell(trial, list(prev.values))
