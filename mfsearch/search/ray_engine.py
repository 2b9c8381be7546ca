"""The Ray Tune engine (the only module that talks to Ray).

Ray Tune runs the trials (local or existing cluster, per-trial CPUs / fractional GPUs, ASHA
early stopping on accuracy); the proposals and the records come from the same Optuna study as
the Optuna engine: :class:`StoreSearcher` asks it for budget-checked, de-duplicated candidates
and tells it the results, so a study can be continued by either engine. (Ray's own
``OptunaSearch`` passes only objective values and keeps an in-memory study; this searcher keeps
the constraints and the full records in the persistent store.)
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..evaluation.cost import cpu_seconds
from ..evaluation.train import StopTrial, TrialFailed
from ..models import MobileFormerConfig
from ..space import Space
from ..store import StudyRef
from .objective import evaluate
from .optuna_engine import OptunaSearch, SearchSummary, evaluated


def _trainable(config: dict[str, Any]) -> None:
    """Runs in a Ray worker: a pure evaluation that reports once per epoch (and where it runs)."""
    import ray
    from ray import tune

    cfg = MobileFormerConfig.from_dict(config["arch"])
    space: Space = config["space"]
    if config.get("threads"):
        import torch

        torch.set_num_threads(int(config["threads"]))
    node = {"node_id": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(), "pid": os.getpid()}
    c0 = cpu_seconds()

    def report(step: int, metrics: dict[str, float]) -> None:  # the CPU so far: what a trial ASHA stops has cost
        tune.report({**metrics, "done": False, "ray_node": node, "cpu_s": round(cpu_seconds() - c0, 3)})

    try:
        res = evaluate(cfg, space, report)
    except TrialFailed as e:
        tune.report({"failed": str(e), "val_acc": float("nan"), "epoch": 0})
        return
    except StopTrial:
        return
    tune.report({"final": {**res, "ray_node": node}, "val_acc": res["accuracy"], "epoch": len(res["history"])})


def _nested(result: dict[str, Any]) -> dict[str, Any]:
    """Tune hands a searcher its results flattened (``final/accuracy``): ``final`` and ``ray_node`` made whole again."""
    out = dict(result)
    for key in ("final", "ray_node"):
        parts = {k[len(key) + 1:]: v for k, v in result.items() if k.startswith(key + "/")}
        if parts and key not in out:
            whole: dict[str, Any] = {}
            for k, v in parts.items():
                *path, last = k.split("/")
                d = whole
                for p in path:
                    d = d.setdefault(p, {})
                d[last] = v
            out[key] = whole
    return out


def _epoch_metrics(result: dict[str, Any]) -> dict[str, Any]:
    return {k: result[k] for k in ("epoch", "val_acc", "train_loss", "train_s", "lr") if k in result}


def _searcher_class() -> type:
    from ray.tune.search import Searcher

    class StoreSearcher(Searcher):
        """Proposes candidates from the mfsearch study and records every result in it."""

        def __init__(self, engine: OptunaSearch, num_classes: int, to_launch: int) -> None:
            super().__init__(metric="val_acc", mode="max")
            self.engine: OptunaSearch | None = engine
            self.num_classes = num_classes
            self.study = engine.open()
            self.live: dict[str, tuple[Any, MobileFormerConfig, dict[str, Any], list]] = {}
            self.to_launch = to_launch

        # Ray pickles the searcher into tuner.pkl (and would into its state files): the engine, the
        # study and the live trials all reach the storage URL, so they stay out. The study itself
        # holds the search state; a rerun of ``mfsearch run`` continues from it.
        def __getstate__(self) -> dict[str, Any]:
            return {k: v for k, v in self.__dict__.items() if k not in ("engine", "study", "live")}

        def __setstate__(self, state: dict[str, Any]) -> None:
            self.__dict__.update(state, engine=None, study=None, live={})

        def save(self, checkpoint_path: str) -> None:
            """Nothing to write: every proposal and result is in the study already."""

        def restore(self, checkpoint_path: str) -> None:
            """Nothing to read: :meth:`save` writes nothing."""

        def suggest(self, trial_id: str) -> dict[str, Any] | None:
            if self.engine is None:
                raise RuntimeError("a StoreSearcher copied by pickle has no storage; run mfsearch run again")
            if self.to_launch <= 0:
                return Searcher.FINISHED
            cand = self.engine.next_candidate(self.study, self.num_classes, wait=False)
            if cand is None:
                return Searcher.FINISHED
            trial, cfg, rec = cand
            rec["engine"] = "ray"
            trial.set_user_attr("engine", "ray")
            self.live[trial_id] = (trial, cfg, rec, [])
            self.to_launch -= 1
            return {"arch": cfg.to_dict(), "trial_number": trial.number}

        def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
            result = _nested(result)
            if trial_id in self.live and "epoch" in result and "final" not in result and "failed" not in result:
                trial, _, _, hist = self.live[trial_id]
                hist.append(_epoch_metrics(result))
                trial.set_user_attr("history", hist)

        def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
            if trial_id not in self.live:
                return
            trial, cfg, rec, hist = self.live.pop(trial_id)
            result = _nested(result or {})
            if error or "failed" in result:
                self.engine.fail(self.study, trial, result.get("failed") or "the Ray trial raised an error")
                self.engine.count_outcome(self.study, trial, cfg, None)
                return
            if "final" in result:
                res = dict(result["final"])
            else:  # stopped by ASHA: the last reported epoch is the result
                last = _epoch_metrics(result)
                if last.get("epoch") and not any(h.get("epoch") == last["epoch"] for h in hist):
                    hist.append(last)  # Tune may hand the last result only to on_trial_complete
                early = last.get("epoch", 0) < self.engine.space.evaluation.epochs  # not when cut at the last rung
                res = {"accuracy": result.get("val_acc", 0.0), "history": hist, "stopped_early": early,
                       "train_s": sum(h.get("train_s", 0.0) for h in hist), "total_s": result.get("time_total_s"),
                       "cpu_s": result.get("cpu_s")}
                if "ray_node" in result:
                    res["ray_node"] = result["ray_node"]
            res["ray_trial_id"] = trial_id
            done = self.engine.finish(self.study, trial, rec, res)
            self.engine.count_outcome(self.study, trial, cfg, done)

    return StoreSearcher


TOKEN_HINT = ("if the cluster uses token authentication (Ray 2.60 turns it on for `ray start --head` whenever a token "
              "exists, e.g. ~/.ray/auth_token), set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH (or RAY_AUTH_TOKEN) "
              "to the cluster's token here as well (README: Running a Ray cluster)")


def connect(address: str | None) -> None:
    """Join the Ray cluster at ``address`` (``host:port`` or ``auto``), or start a local Ray without one.

    A cluster that cannot be reached, or refuses this process's token, is one line that says what to do.
    """
    import ray

    if ray.is_initialized():
        return
    if not address or address == "local":
        ray.init(address=address, log_to_driver=False, include_dashboard=False)
        return
    try:
        ray.init(address=address, log_to_driver=False, include_dashboard=False)
    except Exception as e:  # noqa: BLE001 - ConnectionError, AuthenticationError, ValueError: one clear line
        reason = (str(e).splitlines() or [""])[0].split(". ")[0][:200] or type(e).__name__
        raise InputError(f"Ray cluster {address}: cannot connect ({reason}); is `ray start --head` running there? "
                         + TOKEN_HINT) from None


def run_ray(space: Space, ref: StudyRef, num_classes: int, address: str | None = None, cpus_per_trial: float = 1.0,
            gpus_per_trial: float = 0.0, max_concurrent: int | None = None, asha: bool = True,
            log: Any = print, allow_change: bool = False) -> SearchSummary:
    """Run the study's remaining trials on Ray Tune; results land in the same store."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    t0 = time.perf_counter()
    space = space.without_credentials()  # Ray writes it into params.json / params.pkl / result.json
    engine = OptunaSearch(space, ref, log=log, progress=False, worker=7, allow_change=allow_change)
    connect(address)
    refs = engine.run_references(num_classes) if space.reference_names() else 0
    study = engine.open()
    remaining = max(0, space.search.trials - len(evaluated(study)))
    searcher = _searcher_class()(engine, num_classes, remaining + space.search.max_failures)
    # stop_last_trials=False: a trial that reaches the last epoch goes on to report its full record
    scheduler = ASHAScheduler(time_attr="epoch", metric="val_acc", mode="max", max_t=space.evaluation.epochs,
                              grace_period=1, reduction_factor=2, stop_last_trials=False) \
        if asha and space.evaluation.epochs > 1 else None
    threads = max(1, int(cpus_per_trial))
    trainable = tune.with_resources(tune.with_parameters(_trainable), {"cpu": cpus_per_trial, "gpu": gpus_per_trial})
    tuner = tune.Tuner(
        trainable,
        param_space={"space": space, "threads": threads},
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=-1,
                                    max_concurrent_trials=max_concurrent, reuse_actors=True),
        run_config=tune.RunConfig(name=space.name, storage_path=str(Path(ref.run_dir).resolve() / "ray"),
                                  verbose=0),
    )
    if remaining > 0:
        tuner.fit()
    st = engine.stats
    return SearchSummary(space.name, len(evaluated(engine.open())), st["trained"], st["duplicates"],
                         st["infeasible"], st["failed"], refs, time.perf_counter() - t0)


def run_ray_engine(space: Space, ref: StudyRef, num_classes: int, workers: int, progress: bool = True,
                   allow_change: bool = False) -> SearchSummary:
    """The Ray engine as the engine registry calls it; ``workers``: trials at once when
    ``search.max_concurrent`` is not set."""
    import sys

    if space.evaluation.strategy != "standalone":
        raise InputError(f"{space.path}: evaluation.strategy: {space.evaluation.strategy} runs on the optuna engine "
                         "only (its trials take about a second each, less than a Ray task costs to schedule); "
                         "use --engine optuna, or evaluation.strategy: standalone with Ray")
    s = space.search
    return run_ray(space, ref, num_classes, s.address, s.cpus_per_trial, s.gpus_per_trial,
                   s.max_concurrent or (workers if workers > 1 else None), s.asha,
                   log=lambda m: print(m, file=sys.stderr, flush=True), allow_change=allow_change)
