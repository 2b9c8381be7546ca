"""How well does a cheap evaluation rank architectures? (``mfsearch proxy-check``)

Two checks, both stored as JSON lines (a re-run resumes and only adds what is missing):

- **Trained proxy vs ImageNet.** The seven paper models are trained with a space's evaluation
  settings over several seeds (the seed moves both the initialisation and the data subset).
  Per model: mean +/- std proxy top-1. Rank fidelity: Spearman and Kendall correlation of the
  mean proxy top-1 with the published ImageNet top-1, with a bootstrap interval that resamples
  the seeds of every model (so the interval shows how much the ranking owes to seed luck), and
  the correlation of each seed alone.
- **Zero-cost proxies** (``--zero-cost``): every proxy of :mod:`mfsearch.evaluation.zero_cost`
  scored on a seeded sample of architectures from the space (within its budget), correlated
  with their trained proxy top-1 (bootstrap over architectures), beside the #params baseline;
  and scored on the seven paper models, correlated with ImageNet top-1.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np

from .._utils import append_jsonl, exit_with_parent
from ..evaluation.cost import cpu_seconds
from ..evaluation.zero_cost import PROXIES
from ..models import PAPER, MobileFormerConfig, get_config
from ..space import Space

PAPER_MODELS = tuple(sorted(PAPER, key=lambda n: -PAPER[n].top1))
BOOTSTRAP = 2000


# ---------------------------------------------------------------------------- statistics


def rank_correlations(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """(Spearman, Kendall tau-b) of two sequences; NaN where undefined (constant input)."""
    from scipy.stats import kendalltau, spearmanr

    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan")
    return float(spearmanr(x, y).statistic), float(kendalltau(x, y).statistic)


def _interval(samples: list[float]) -> list[float]:
    s = np.asarray([v for v in samples if np.isfinite(v)])
    if len(s) == 0:
        return [float("nan"), float("nan")]
    return [round(float(np.percentile(s, 2.5)), 4), round(float(np.percentile(s, 97.5)), 4)]


def rank_correlations_rows(x: np.ndarray, y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`rank_correlations` of every row of ``x`` (reps, n) with ``y``, vectorised (bootstrap draws)."""
    x = np.asarray(x, float)
    return rank_correlations_pairs(x, np.broadcast_to(np.asarray(y, float), x.shape))


def rank_correlations_pairs(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`rank_correlations` of every row of ``x`` with the same row of ``y`` (both (reps, n)), vectorised:
    Spearman on average ranks and Kendall tau-b, as scipy computes them; NaN for a row with a constant side."""
    from scipy.stats import rankdata

    x, y = np.asarray(x, float), np.asarray(y, float)
    n = x.shape[1]
    if n < 3:
        nan = np.full(len(x), np.nan)
        return nan, nan.copy()
    rx, ry = rankdata(x, axis=1), rankdata(y, axis=1)  # average ranks of ties, as spearmanr
    dx, dy = rx - rx.mean(1, keepdims=True), ry - ry.mean(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        sp = (dx * dy).sum(1) / np.sqrt((dx**2).sum(1) * (dy**2).sum(1))
        i, j = np.triu_indices(n, 1)
        sx, sy = np.sign(x[:, i] - x[:, j]), np.sign(y[:, i] - y[:, j])
        pairs = len(i)
        kt = (sx * sy).sum(1) / np.sqrt(pairs - (sx == 0).sum(1)) / np.sqrt(pairs - (sy == 0).sum(1))  # tau-b
    const = (np.ptp(x, axis=1) == 0) | (np.ptp(y, axis=1) == 0)
    sp[const], kt[const] = np.nan, np.nan
    return np.clip(sp, -1, 1), np.clip(kt, -1, 1)


def seed_bootstrap(acc: dict[str, list[float]], truth: dict[str, float], reps: int = BOOTSTRAP,
                   seed: int = 0) -> dict[str, list[float]]:
    """95% intervals of Spearman / Kendall when each model's seeds are resampled with replacement."""
    rng = np.random.default_rng(seed)
    names = list(acc)
    means = np.array([[float(np.mean(rng.choice(acc[n], size=len(acc[n]), replace=True))) for n in names]
                      for _ in range(reps)])
    sp, kt = rank_correlations_rows(means, [truth[n] for n in names])
    return {"spearman": _interval(list(sp)), "kendall": _interval(list(kt))}


def pair_bootstrap(x: Sequence[float], y: Sequence[float], reps: int = BOOTSTRAP,
                   seed: int = 0) -> dict[str, list[float]]:
    """95% intervals of Spearman / Kendall when the (x, y) pairs are resampled with replacement."""
    rng = np.random.default_rng(seed)
    x, y = np.asarray(x, float), np.asarray(y, float)
    i = rng.integers(0, len(x), (reps, len(x)))  # the draws one at a time would give, in order
    sp, kt = rank_correlations_pairs(x[i], y[i])
    return {"spearman": _interval(list(sp)), "kendall": _interval(list(kt))}


def seed_reliability(acc: np.ndarray | Sequence[Sequence[float]]) -> dict[str, Any]:
    """How far the means of ``S`` seeds can be trusted to rank architectures: ``acc`` is (architectures, seeds).

    Two-way ANOVA without replication (architectures x seeds, every architecture trained with the same seeds):
    a run is the architecture's true accuracy, plus a shift its seed gives every architecture alike (the
    seed's data subset and initialisation; it cannot change a ranking, so it is left out), plus noise. Returns
    the noise (std, ``noise_sd``), the spread of the true accuracies (std, ``spread_sd``), the std of the seeds'
    shared shifts (``seed_shift_sd``), and the reliability of one run (``single``: the share of a run's
    variance, shift removed, that is the architecture's) and of the S-seed mean (``mean``: ICC(3,k), the
    squared correlation between the S-seed means and the true accuracies; Spearman-Brown of ``single``). NaN
    reliabilities with fewer than 3 architectures or 2 seeds or no variance at all; a negative
    between-architecture variance estimate counts as zero.
    """
    a = np.asarray(acc, float)
    n, k = a.shape if a.ndim == 2 else (0, 0)
    nan = float("nan")
    if n < 3 or k < 2:
        return {"architectures": n, "seeds": k, "noise_sd": nan, "spread_sd": nan, "seed_shift_sd": nan,
                "single": nan, "mean": nan}
    row, col = a.mean(axis=1), a.mean(axis=0)
    resid = a - row[:, None] - col[None, :] + a.mean()
    mse = float((resid**2).sum() / ((n - 1) * (k - 1)))  # the noise, the seeds' shared shifts removed
    msr = float(k * row.var(ddof=1))  # between architectures
    between = max((msr - mse) / k, 0.0)
    shift = max(float(col.var(ddof=1)) - mse / n, 0.0)
    single = between / (between + mse) if between + mse > 0 else nan
    mean = k * single / (1 + (k - 1) * single) if np.isfinite(single) else nan
    return {"architectures": n, "seeds": k, "noise_sd": float(np.sqrt(mse)), "spread_sd": float(np.sqrt(between)),
            "seed_shift_sd": float(np.sqrt(shift)), "single": single, "mean": mean}


def kendall_from_pearson(r: float) -> float:
    """Kendall tau of a bivariate normal pair with correlation ``r`` (Greiner: 2/pi arcsin r)."""
    return float(2 / np.pi * np.arcsin(np.clip(r, -1.0, 1.0))) if np.isfinite(r) else float("nan")


def pearson_from_kendall(tau: float) -> float:
    return float(np.sin(np.pi * tau / 2)) if np.isfinite(tau) else float("nan")


def attainable_kendall(reliability: float) -> float:
    """The Kendall tau against noisy means that a ranker knowing the true accuracies would expect.

    Means with reliability R correlate with the truth at sqrt(R) (normal model, Greiner's relation), so
    no proxy can be expected to rank them better: a goal above this cannot be checked against them.
    """
    if not np.isfinite(reliability) or reliability < 0:
        return float("nan")
    return kendall_from_pearson(float(np.sqrt(reliability)))


def seeds_for_kendall(single: float, goal: float) -> int | None:
    """The fewest seeds whose mean lets a perfect ranker reach Kendall ``goal`` (Spearman-Brown).

    None: no number of seeds does (no reliability in one run)."""
    if not np.isfinite(single) or single <= 0:
        return None
    need = pearson_from_kendall(goal) ** 2  # the reliability the means must have
    if single >= need:
        return 1
    if need >= 1:
        return None
    return int(np.ceil(need * (1 - single) / (single * (1 - need)) - 1e-9))


def disattenuated_kendall(tau: float, reliability: float) -> float:
    """An observed Kendall tau against means of the given reliability, corrected for their noise (Spearman's
    correction for attenuation on the normal scale, clipped to [-1, 1]): an estimate of the tau against the true
    accuracies. NaN where the reliability is not positive."""
    if not np.isfinite(tau) or not np.isfinite(reliability) or reliability <= 0:
        return float("nan")
    return kendall_from_pearson(pearson_from_kendall(tau) / np.sqrt(reliability))


def corrected_kendall_bootstrap(score: Sequence[float], acc: np.ndarray | Sequence[Sequence[float]],
                                reps: int = BOOTSTRAP, seed: int = 0) -> dict[str, Any]:
    """95% interval of :func:`disattenuated_kendall` of ``score`` against the seed means of ``acc``
    (architectures, seeds), architectures resampled with replacement (the reliability re-estimated each time).

    ``undefined``: the share of draws where it is undefined (no spread, or no reliability left to correct
    by); they are left out of the interval, so a large share says the interval is not to be trusted.
    """
    rng = np.random.default_rng(seed)
    x, a = np.asarray(score, float), np.asarray(acc, float)
    i = rng.integers(0, len(x), (reps, len(x)))
    _, kt = rank_correlations_pairs(x[i], a[i].mean(axis=2))
    out = [disattenuated_kendall(float(k), seed_reliability(a[d])["mean"]) if np.isfinite(k) else float("nan")
           for k, d in zip(kt, i)]
    return {"kendall": _interval(out), "undefined": round(float(np.mean(~np.isfinite(out))), 4)}


# ---------------------------------------------------------------------------- records


def check_dir(space: Space, runs: str | Path | None = None) -> Path:
    """``runs/proxy-check/<space name>-<eval_id>``: one folder per distinct evaluation setting."""
    from ..store import runs_dir

    return runs_dir(runs) / "proxy-check" / f"{space.name}-{space.evaluation.eval_id()}"


def read_jsonl(path: Path, fields: dict[str, tuple[type, ...]] | None = None) -> list[dict[str, Any]]:
    """The records of a JSON-lines file, in order. A line that is not a JSON object (cut by a crash, damaged,
    not UTF-8) or lacks one of ``fields`` with a value of its types (finite numbers only) is skipped: its
    run counts as not done and is redone, it never stops a report."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_bytes().decode("utf-8-sig", errors="replace").splitlines():  # an editor's BOM too
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except (ValueError, RecursionError):  # cut by a crash, or damaged (a 5000-digit number, deep nesting)
            continue  # that job is simply redone
        if isinstance(rec, dict) and (fields is None or has_fields(rec, fields)):
            out.append(rec)
    return out


def has_fields(rec: dict[str, Any], fields: dict[str, tuple[type, ...]]) -> bool:
    """Whether ``rec`` has every one of ``fields`` with a value of its types (finite numbers only)."""
    return all(_typed(rec, k, t) for k, t in fields.items())


def _typed(rec: dict[str, Any], key: str, types: tuple[type, ...]) -> bool:
    if key not in rec:
        return False
    v = rec[key]
    if isinstance(v, bool) and bool not in types:
        return False
    if isinstance(v, float) and not np.isfinite(v):
        return False
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 2**63:  # no real count or top-1 is that large
        return False
    return isinstance(v, types)


NUMBER = (int, float)
PAPER_RUN = {"name": (str,), "seed": (int,), "accuracy": (int, float, type(None))}  # a paper model's run
ARCH_RUN = {"arch_id": (str,), "seed": (int,), "accuracy": (int, float, type(None))}  # a sampled architecture's


# ---------------------------------------------------------------------------- jobs (run in worker processes)


def _train_job(cfg_dict: dict, ev_dict: dict, threads: int | None) -> dict[str, Any]:
    """Train once, validate once at the end; accuracy, wall and CPU seconds, the threads it ran on.

    A run that cannot finish (diverged loss) is a result too: ``failed`` with the reason.
    """
    import torch

    from ..evaluation.settings import Evaluation
    from ..evaluation.train import TrialFailed, proxy_data, train_and_evaluate

    before = torch.get_num_threads()
    try:
        if threads:
            torch.set_num_threads(threads)
        ev = Evaluation(**ev_dict)
        cfg = MobileFormerConfig.from_dict(cfg_dict)
        t0, c0 = time.perf_counter(), cpu_seconds()
        try:
            res = train_and_evaluate(cfg, ev, data=proxy_data(ev, only=True), evaluate_every_epoch=False)
            out: dict[str, Any] = {"accuracy": res.accuracy, "train_s": round(res.train_s, 3)}
        except TrialFailed as e:
            out = {"accuracy": None, "failed": str(e)}
        return {**out, "total_s": round(time.perf_counter() - t0, 3), "cpu_s": round(cpu_seconds() - c0, 3),
                "threads": torch.get_num_threads()}
    finally:
        torch.set_num_threads(before)


def _zero_cost_job(cfg_dict: dict, ev_dict: dict, batch_size: int, threads: int | None) -> dict[str, Any]:
    import torch

    from ..evaluation.settings import Evaluation
    from ..evaluation.zero_cost import batch_from, score

    if threads:
        torch.set_num_threads(threads)
    ev = Evaluation(**ev_dict)
    x, y, ncls = batch_from(ev, batch_size)
    cfg = MobileFormerConfig.from_dict(cfg_dict).replace(num_classes=ncls)
    out: dict[str, Any] = {"scores": {}, "seconds": {}}
    for name in PROXIES:
        t0 = time.perf_counter()
        out["scores"][name] = score(name, cfg, x, y, seed=ev.seed)
        out["seconds"][name] = round(time.perf_counter() - t0, 4)
    return out


Job = tuple[Callable, tuple, dict[str, Any], Path]  # (function, arguments, record fields, records file)


class JobsFailed(RuntimeError):
    """A worker process died (killed, out of memory): what finished is stored, a re-run redoes the rest."""


def _run_jobs(jobs: list[Job], workers: int, log: Callable[[str], None],
              stored: Callable[[], None] = lambda: None) -> None:
    """Run ``(fn, args, record, path)`` jobs in order; append ``{**record, **fn(*args)}`` to ``path`` as each ends,
    then call ``stored()`` (e.g. to publish it)."""
    if not jobs:
        return
    if workers <= 1:
        for fn, args, rec, path in jobs:
            out = {**rec, **fn(*args)}
            append_jsonl(path, out)
            stored()
            log(_job_line(out))
        return
    import multiprocessing as mp
    from concurrent.futures.process import BrokenProcessPool

    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"), initializer=exit_with_parent,
                             initargs=(os.getpid(),)) as pool:
        futs = {pool.submit(fn, *args): (rec, path) for fn, args, rec, path in jobs}  # run in submission order
        try:
            for fut in as_completed(futs):
                rec, path = futs[fut]
                out = {**rec, **fut.result()}
                append_jsonl(path, out)
                stored()
                log(_job_line(out))
        except BrokenProcessPool:
            for f in futs:
                f.cancel()
            raise JobsFailed("a worker process died (killed or out of memory); finished runs are stored, "
                             "run the same command again to redo the rest") from None
        except BaseException:  # Ctrl-C or kill: the runs in progress cannot be stored; do not wait for them
            stop_pool(pool)
            raise


def stop_pool(pool: ProcessPoolExecutor) -> None:
    """End a process pool now: terminate its processes, cancel what is queued, do not wait."""
    for p in list((getattr(pool, "_processes", None) or {}).values()):
        p.terminate()
    pool.shutdown(wait=False, cancel_futures=True)


def _job_line(r: dict[str, Any]) -> str:
    label = r.get("name") or r.get("arch_id", "")
    where = f" [{r['setting']}]" if r.get("setting") else ""
    if r.get("failed"):
        return f"  {label:<22} seed {r.get('seed', '-')}{where}: failed ({r['failed']})"
    if "accuracy" in r:
        return (f"  {label:<22} seed {r.get('seed', '-')}{where}: top-1 {r['accuracy']:.2f}% in {r['total_s']:.0f}s"
                + (f" ({r['cpu_s']:.0f} CPU-s, {r['threads']} thread(s))" if "cpu_s" in r else ""))
    return f"  {label:<22} zero-cost scored in {sum(r['seconds'].values()):.1f}s"


# ---------------------------------------------------------------------------- which records belong to a check


def record_matches(r: dict[str, Any], pinned_threads: int | None, deterministic: bool) -> bool:
    """Whether a stored run counts for a check of this variant.

    Threads and deterministic kernels are not part of the eval_id, so variants share a folder. A
    check that does not pin threads (a plain proxy-check) takes the runs that did not pin them
    either, whatever count they ran with; a check pinned to N threads takes any run on N threads.
    """
    if bool(r.get("deterministic", False)) != deterministic:
        return False
    if pinned_threads is None:
        return not r.get("threads_pinned", False)
    return r.get("threads") == pinned_threads


def select_records(records: list[dict[str, Any]], models: Sequence[str], seeds: Sequence[int],
                   pinned_threads: int | None = None, deterministic: bool = False) -> list[dict[str, Any]]:
    """One run per (model, seed) of this variant: the first stored one (a duplicate never counts twice)."""
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for r in records:
        if "name" in r and r["name"] in models and r.get("seed") in seeds and record_matches(r, pinned_threads,
                                                                                               deterministic):
            out.setdefault((r["name"], r["seed"]), r)
    return list(out.values())


# ---------------------------------------------------------------------------- the checks


@dataclasses.dataclass
class CheckOptions:
    seeds: int = 3
    models: tuple[str, ...] = PAPER_MODELS
    workers: int = 1
    zero_cost: bool = False
    sample: int = 16
    batch_size: int = 64
    bootstrap_seed: int = 0
    report_only: bool = False  # summarise what is stored, train nothing


def _threads(space: Space, workers: int) -> int | None:
    """Threads per run: ``evaluation.threads`` where the space pins it (the result depends on it), else the
    cores shared out among the workers (one worker: torch's default)."""
    import os

    if space.evaluation.threads:
        return space.evaluation.threads
    if workers > 1:
        return max(1, (os.cpu_count() or 1) // workers)
    return None


def paper_jobs(space: Space, models: Sequence[str], seeds: Sequence[int], out_dir: Path, workers: int,
               pinned_threads: int | None = None, extra: dict[str, Any] | None = None) -> list[Job]:
    """The (model, seed) runs of the paper check not stored yet, seed-major (whole seeds first)."""
    path = out_dir / "paper.jsonl"
    ev = space.evaluation
    done = {(r["name"], r["seed"]) for r in select_records(read_jsonl(path, PAPER_RUN), models, seeds, pinned_threads,
                                                            ev.deterministic)}
    threads = pinned_threads or _threads(space, workers)
    variant: dict[str, Any] = {"deterministic": ev.deterministic}
    if pinned_threads:
        variant["threads_pinned"] = True
    jobs: list[Job] = []
    for seed in seeds:
        for name in models:
            if (name, seed) in done:
                continue
            rec = {"name": name, "seed": seed, "imagenet_top1": PAPER[name].top1, "eval_id": ev.eval_id(), **variant,
                   **(extra or {})}
            jobs.append((_train_job, (get_config(name).to_dict(), {**dataclasses.asdict(ev), "seed": seed}, threads),
                         rec, path))
    return jobs


def run_paper_check(space: Space, opts: CheckOptions, out_dir: Path, log: Callable[[str], None]) -> list[dict]:
    """Train the paper models over ``opts.seeds`` seeds (resuming); the records."""
    seeds = [space.evaluation.seed + i for i in range(opts.seeds)]
    if not opts.report_only:
        jobs = paper_jobs(space, opts.models, seeds, out_dir, opts.workers)
        if jobs:
            log(f"training {len(jobs)} (model, seed) runs with {opts.workers} worker(s)")
        _run_jobs(jobs, opts.workers, log)
    return select_records(read_jsonl(out_dir / "paper.jsonl", PAPER_RUN), opts.models, seeds,
                          deterministic=space.evaluation.deterministic)


def sample_architectures(space: Space, n: int, seed: int = 0) -> list[MobileFormerConfig]:
    """``n`` distinct architectures of the space within its (analytic) budget, seeded."""
    from ..models import ConfigError
    from ..space import random_suggest, sample_config

    out: dict[str, MobileFormerConfig] = {}
    last_new = seed
    for s in range(seed, seed + 200 * n):
        if s - last_new > STALE_DRAWS:  # the space (within its budget) holds fewer than n: say so, about a second
            break
        try:
            cfg = sample_config(space, random_suggest(s))
        except ConfigError:
            continue
        if space.within_budget(cfg)[0] and cfg.arch_id not in out:
            out[cfg.arch_id] = cfg
            last_new = s
        if len(out) >= n:
            break
    return list(out.values())


STALE_DRAWS = 5000  # draws in a row without a new architecture after which a sample stops short


def run_zero_cost_check(space: Space, opts: CheckOptions, out_dir: Path, log: Callable[[str], None]) -> list[dict]:
    """Score (and, for the sample, train once) the sampled architectures and the paper models."""
    path = out_dir / "zero_cost.jsonl"
    ev = dataclasses.asdict(space.evaluation)
    if opts.report_only:
        have = read_jsonl(path, {"arch_id": (str,)})
        ids = {c.arch_id for c in sample_architectures(space, opts.sample, seed=space.search.seed)}
        return [r for r in have if r["arch_id"] in ids | {get_config(n).arch_id for n in opts.models}]
    threads = _threads(space, opts.workers)
    have = read_jsonl(path, {"arch_id": (str,)})
    scored = {(r["kind"], r["arch_id"]) for r in have if "scores" in r}
    trained = {r["arch_id"] for r in have if "accuracy" in r}
    jobs = []
    sample = sample_architectures(space, opts.sample, seed=space.search.seed)
    for cfg in sample:
        rec = {"kind": "sample", "arch_id": cfg.arch_id, "summary": cfg.summary()}
        if ("sample", cfg.arch_id) not in scored:
            jobs.append((_zero_cost_job, (cfg.to_dict(), ev, opts.batch_size, threads), rec, path))
        if cfg.arch_id not in trained:
            jobs.append((_train_job, (cfg.to_dict(), ev, threads), {**rec, "seed": space.evaluation.seed}, path))
    for name in opts.models:
        cfg = get_config(name)
        if ("paper", cfg.arch_id) not in scored:
            rec = {"kind": "paper", "arch_id": cfg.arch_id, "name": name, "imagenet_top1": PAPER[name].top1}
            jobs.append((_zero_cost_job, (cfg.to_dict(), ev, opts.batch_size, threads), rec, path))
    if jobs:
        log(f"zero-cost check: {len(sample)} sampled architectures (scored and trained once), "
            f"{len(opts.models)} paper models scored: {len(jobs)} jobs")
    _run_jobs(jobs, opts.workers, log)
    ids = {c.arch_id for c in sample} | {get_config(n).arch_id for n in opts.models}
    return [r for r in read_jsonl(path, {"arch_id": (str,)}) if r["arch_id"] in ids]


# ---------------------------------------------------------------------------- summaries


def cpu_minutes(records: list[dict[str, Any]]) -> tuple[float, str]:
    """CPU-minutes of these runs and where the figure comes from.

    Runs store ``cpu_s`` (user + system time of the training process, all threads); older ones only
    their wall time ``total_s``, which is then used instead (one thread per run: about the same).
    """
    if all("cpu_s" in r for r in records):
        return sum(r["cpu_s"] for r in records) / 60, "cpu_s"
    return sum(r.get("cpu_s", r["total_s"]) for r in records) / 60, "total_s (runs stored without cpu_s)"


def summarise_paper(records: list[dict], bootstrap_seed: int = 0) -> dict[str, Any]:
    """Per-model mean/std, correlations with ImageNet (seed-bootstrap intervals), per-seed correlations.

    Failed runs (a diverged loss) are counted, not averaged; a seed with one is left out of the
    per-seed correlations.
    """
    failed = [r for r in records if r.get("accuracy") is None]
    records = [r for r in records if r.get("accuracy") is not None]
    by: dict[str, list[dict]] = {}
    for r in records:
        by.setdefault(r["name"], []).append(r)
    names = [n for n in PAPER_MODELS if n in by]
    acc = {n: [r["accuracy"] for r in by[n]] for n in names}
    truth = {n: PAPER[n].top1 for n in names}
    rows = [{"model": n, "imagenet_top1": truth[n], "seeds": len(acc[n]), "mean": round(float(np.mean(acc[n])), 3),
             "std": round(float(np.std(acc[n], ddof=1)) if len(acc[n]) > 1 else 0.0, 3),
             "minutes": round(sum(r["total_s"] for r in by[n]) / 60, 2),
             "cpu_minutes": round(cpu_minutes(by[n])[0], 2)} for n in names]
    s, k = rank_correlations([r["mean"] for r in rows], [truth[n] for n in names])
    seeds = sorted({r["seed"] for r in records})
    per_seed = []
    for sd in seeds:
        pts = [(r["accuracy"], truth[r["name"]]) for r in records if r["seed"] == sd]
        if len(pts) == len(names):
            ps, pk = rank_correlations(*zip(*pts))
            per_seed.append({"seed": sd, "spearman": round(ps, 4), "kendall": round(pk, 4)})
    ci = seed_bootstrap(acc, truth, seed=bootstrap_seed) if all(len(v) > 1 for v in acc.values()) else None
    cpu, cpu_from = cpu_minutes(records + failed)
    return {"rows": rows, "spearman": round(s, 4), "kendall": round(k, 4), "interval": ci,
            "bootstrap": {"reps": BOOTSTRAP, "seed": bootstrap_seed, "resampled": "seeds within each model"},
            "per_seed": per_seed, "minutes": round(sum(r["minutes"] for r in rows), 2),
            "cpu_minutes": round(cpu, 2), "cpu_from": cpu_from,
            "failed": [{"model": r["name"], "seed": r["seed"], "reason": r.get("failed", "")} for r in failed],
            "spread": round(max(r["mean"] for r in rows) - min(r["mean"] for r in rows), 3) if rows else 0.0}


def summarise_zero_cost(records: list[dict], bootstrap_seed: int = 0) -> dict[str, Any]:
    """Each proxy's rank correlation with trained proxy top-1 (sample) and ImageNet top-1 (paper models)."""
    scores = {r["arch_id"]: r for r in records if "scores" in r and r["kind"] == "sample"}
    accs = {r["arch_id"]: r["accuracy"] for r in records if r.get("accuracy") is not None and r["kind"] == "sample"}
    ids = sorted(set(scores) & set(accs))
    paper = [r for r in records if r["kind"] == "paper" and "scores" in r]
    rows = []
    for p in PROXIES:
        x = [scores[i]["scores"][p] for i in ids]
        y = [accs[i] for i in ids]
        s, k = rank_correlations(x, y)
        ci = pair_bootstrap(x, y, seed=bootstrap_seed) if len(ids) >= 4 else None
        ps, pk = rank_correlations([r["scores"][p] for r in paper], [r["imagenet_top1"] for r in paper])
        pci = pair_bootstrap([r["scores"][p] for r in paper], [r["imagenet_top1"] for r in paper],
                             seed=bootstrap_seed) if len(paper) >= 4 else None
        secs = [scores[i]["seconds"][p] for i in ids] or [0.0]
        rows.append({"proxy": p, "spearman": round(s, 4), "kendall": round(k, 4), "interval": ci,
                     "imagenet_spearman": round(ps, 4), "imagenet_kendall": round(pk, 4), "imagenet_interval": pci,
                     "seconds": round(float(np.median(secs)), 3)})
    base = next(r for r in rows if r["proxy"] == "params")
    for r in rows:
        r["beats_params"] = bool(r["proxy"] != "params" and np.isfinite(r["spearman"])
                                 and r["spearman"] > base["spearman"])
    return {"rows": rows, "architectures": len(ids), "paper_models": len(paper),
            "train_minutes": round(sum(r["total_s"] for r in records if "accuracy" in r) / 60, 2),
            "accuracy_range": [min(accs[i] for i in ids), max(accs[i] for i in ids)] if ids else None,
            "kept": [r["proxy"] for r in rows if r["beats_params"]]}


def _ci(ci: dict | None, key: str) -> str:
    return f" [{ci[key][0]:.2f}, {ci[key][1]:.2f}]" if ci else ""


def paper_markdown(space: Space, s: dict[str, Any]) -> str:
    ev = space.evaluation
    lines = [f"## Trained proxy vs ImageNet: {space.name} (eval_id {ev.eval_id()})", "",
             f"Settings: {ev.dataset} {ev.image_size}x{ev.image_size}, {ev.train_size} train / {ev.val_size} val "
             f"images, {ev.epochs} epoch(s), batch {ev.batch_size}, lr {ev.lr:g}, augment {ev.augment}, "
             f"bn_recalibration {ev.bn_recalibration}.", "",
             "| model | ImageNet top-1 | proxy top-1 (mean +/- std) | seeds | CPU-minutes |",
             "|---|---:|---:|---:|---:|"]
    for r in s["rows"]:
        lines.append(f"| {r['model']} | {r['imagenet_top1']} | {r['mean']:.2f} +/- {r['std']:.2f} | {r['seeds']} | "
                     f"{r['cpu_minutes']:.1f} |")
    lines += ["", f"Spearman {s['spearman']:.3f}{_ci(s['interval'], 'spearman')}, Kendall {s['kendall']:.3f}"
              f"{_ci(s['interval'], 'kendall')} (95% bootstrap over seeds, {BOOTSTRAP} draws); spread of the means "
              f"{s['spread']:.2f} points; cost {s['cpu_minutes']:.1f} CPU-minutes (from {s['cpu_from']}), "
              f"{s['minutes']:.1f} minutes of run wall time."]
    if s["per_seed"]:
        lines.append("Each seed alone: " + ", ".join(f"seed {p['seed']}: Spearman {p['spearman']:.3f} / Kendall "
                                                     f"{p['kendall']:.3f}" for p in s["per_seed"]) + ".")
    if s.get("failed"):
        lines.append("Failed runs (left out): " + "; ".join(f"{f['model']} seed {f['seed']}: {f['reason']}"
                                                            for f in s["failed"]) + ".")
    return "\n".join(lines) + "\n"


def zero_cost_markdown(s: dict[str, Any]) -> str:
    lines = ["## Zero-cost proxies", "",
             f"Rank correlation with the trained proxy top-1 of {s['architectures']} sampled architectures "
             f"(top-1 range {s['accuracy_range']}), and with ImageNet top-1 of the {s['paper_models']} paper models; "
             "95% bootstrap intervals over architectures.", "",
             f"| proxy | Spearman (sample) | Kendall (sample) | Spearman (ImageNet, {s['paper_models']} models) | "
             "Kendall (ImageNet) | "
             "s / arch | beats #params |", "|---|---:|---:|---:|---:|---:|---|"]
    for r in s["rows"]:
        lines.append(f"| {r['proxy']} | {r['spearman']:.3f}{_ci(r['interval'], 'spearman')} | {r['kendall']:.3f} | "
                     f"{r['imagenet_spearman']:.3f}{_ci(r['imagenet_interval'], 'spearman')} | "
                     f"{r['imagenet_kendall']:.3f} | {r['seconds']:.2f} | "
                     f"{'baseline' if r['proxy'] == 'params' else ('yes' if r['beats_params'] else 'no')} |")
    kept = ", ".join(s["kept"]) or "none"
    lines += ["", f"Proxies beating the #params baseline here: {kept}."]
    return "\n".join(lines) + "\n"


def plot_paper(space: Space, records: list[dict], s: dict[str, Any], path: Path) -> Path:
    """Proxy top-1 against ImageNet top-1 of the paper models (each seed, and mean +/- std), written to ``path``."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4.2))
    ax = fig.subplots()
    for r in records:
        ax.scatter(r["imagenet_top1"], r["accuracy"], s=12, color="0.6", zorder=2)
    for r in s["rows"]:
        ax.errorbar(r["imagenet_top1"], r["mean"], yerr=r["std"], fmt="o", color="C0", capsize=3, zorder=3)
        ax.annotate(r["model"].replace("mobile_former_", "MF-"), (r["imagenet_top1"], r["mean"]),
                    textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("ImageNet top-1 (paper), %")
    ax.set_ylabel(f"proxy top-1 ({space.evaluation.dataset} {space.evaluation.image_size}px), %")
    ax.set_title(f"{space.name}: Spearman {s['spearman']:.2f}, Kendall {s['kendall']:.2f}", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path
