"""Does a supernet rank architectures like stand-alone training? (``mfsearch proxy-check SPACE --oneshot``)

A one-shot search is only as good as the agreement between a sub-network's one-shot score and what
the same architecture reaches when trained alone. This check measures it on a one-shot space:

- a seeded sample of architectures from the space (within its budget; :func:`sample_architectures`
  with ``search.seed``), plus the paper models that are sub-networks of its supernet and fit the budget;
- each scored as a sub-network of the space's supernet (trained once, from the shared cache);
- each trained stand-alone with the space's evaluation settings over several seeds
  (``evaluation.seed + 0 .. S-1``, the same runs a confirmation trains); runs any proxy-check stored
  under the same settings (``runs/proxy-check/*-<eval_id>/``) are reused, not trained again;
- Spearman and Kendall tau-b between the one-shot scores and the stand-alone means, with 95%
  bootstrap intervals over architectures, beside the #params and MACs baselines and beside one
  stand-alone seed against the mean of the other seeds (how well a single stand-alone run ranks:
  the noise the one-shot score competes with);
- the paper models' one-shot scores against their ImageNet top-1, where three or more are inside.

Everything is stored as JSON lines and resumed: stand-alone runs go to the stand-alone setting's
proxy-check folder (``runs/proxy-check/<space>-<eval_id>/``, ``architectures.jsonl`` and
``paper.jsonl``, shared with a plain ``proxy-check`` of the same settings), one-shot scores and the
report to its ``oneshot-<supernet key>-<scoring id>/`` subfolder (:func:`scoring_id`: the same supernet
scored with other ``val_images`` or ``recalibration_batches`` scores again, apart).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._utils import append_jsonl, finite_json, one_runner
from ..errors import InputError
from ..models import PAPER, MobileFormerConfig, get_config
from ..space import Space
from . import (
    ARCH_RUN,
    PAPER_MODELS,
    PAPER_RUN,
    _run_jobs,
    _threads,
    _train_job,
    attainable_kendall,
    check_dir,
    corrected_kendall_bootstrap,
    disattenuated_kendall,
    pair_bootstrap,
    paper_jobs,
    rank_correlations,
    read_jsonl,
    sample_architectures,
    seed_reliability,
    seeds_for_kendall,
    select_records,
)

Log = Callable[[str], None]
GOAL_KENDALL = 0.6  # the bar: published well-trained supernets reach about 0.5-0.8 on NAS-Bench-201


@dataclasses.dataclass
class OneShotCheckOptions:
    sample: int = 24
    seeds: int = 3
    workers: int = 1
    report_only: bool = False
    bootstrap_seed: int = 0
    quiet: bool = False  # no progress lines, from the supernet's process either


def standalone_space(space: Space) -> Space:
    """``space`` with its evaluation stand-alone (the settings a confirmation trains with)."""
    return dataclasses.replace(space, evaluation=dataclasses.replace(space.evaluation, strategy="standalone"))


def require_oneshot(space: Space) -> None:
    if space.evaluation.strategy != "oneshot":
        raise InputError(f"{space.path}: evaluation.strategy: --oneshot checks a one-shot space and this one is "
                         f"{space.evaluation.strategy!r}; give a space with evaluation.strategy: oneshot (e.g. "
                         "spaces/tiny_oneshot.yaml or spaces/macs300_oneshot.yaml)")


def architectures(space: Space, n: int) -> tuple[list[MobileFormerConfig], list[str]]:
    """The seeded sample (``search.seed``) and the paper models inside the space and its supernet."""
    from ..oneshot.strategy import unsupported

    sample = sample_architectures(space, n, seed=space.search.seed)
    if not sample:
        raise InputError(f"{space.path}: budget: seeded draws found no architecture of the space within its budget; "
                         "raise the budget, or check the space that spans the budgets (a one-shot space extended at "
                         "a small budget: check the one it extends)")
    if len(sample) < n:
        raise InputError(f"{space.path}: --sample: seeded draws found only {len(sample)} distinct architectures of "
                         f"the space within its budget; ask for at most {len(sample)}, or check the space that "
                         "spans the budgets (a one-shot space extended at a small budget: check the one it extends)")
    ids = {c.arch_id for c in sample}
    paper = [m for m in PAPER_MODELS if space.within_budget(get_config(m))[0]
             and unsupported(space, get_config(m)) is None and get_config(m).arch_id not in ids]
    return sample, paper


def scoring_id(space: Space) -> str:
    """How sub-networks are scored (``oneshot.recalibration_batches``, ``oneshot.val_images``), e.g. ``r1v500``:
    the same supernet scored two ways gives two sets of scores, never mixed."""
    from ..evaluation.strategies import oneshot_settings

    s = oneshot_settings(space)
    return f"r{s.recalibration_batches}v{s.val_images or 'all'}"


def oneshot_dir(space: Space, key: str, runs: str | Path | None = None) -> Path:
    """``<space>-<eval_id>/oneshot-<supernet key>-<scoring id>/``: the scores and report of one supernet scored
    one way."""
    return check_dir(standalone_space(space), runs) / f"oneshot-{key}-{scoring_id(space)}"


def _seeds(space: Space, n: int) -> list[int]:
    return [space.evaluation.seed + i for i in range(n)]


def stored_runs(base: Path, name: str, results: str | Path | None = None) -> list[dict[str, Any]]:
    """Stand-alone runs in ``base/name`` and in every other proxy-check folder of the same evaluation settings
    (``*-<eval_id>/name``: a plain proxy-check of a space with these settings, another one-shot space's check),
    here and, with ``results``, published there (:func:`publish_check`): the settings are equal, so the runs
    are too. This folder's come first (a duplicate never counts twice)."""
    eval_id = base.name.rsplit("-", 1)[-1]
    fields = PAPER_RUN if name == "paper.jsonl" else ARCH_RUN
    out = read_jsonl(base / name, fields)
    for root in [base.parent] + ([Path(results)] if results is not None else []):
        for other in sorted(root.glob(f"*-{eval_id}")):
            if other != base:
                out += [r for r in read_jsonl(other / name, fields) if r.get("eval_id", eval_id) == eval_id]
    return out


def _scores(out: Path, results: str | Path | None) -> list[dict[str, Any]]:
    """The one-shot scores stored in ``out``, then those published for the same check and supernet."""
    pub = [] if results is None else read_jsonl(Path(results) / out.parent.name / out.name / "scores.jsonl", SCORE)
    return read_jsonl(out / "scores.jsonl", SCORE) + pub


def publish_check(out: Path, results: str | Path) -> None:
    """Publish the check in ``out`` to ``results/<space>-<eval_id>/`` (the layout of ``runs/proxy-check``): the
    stand-alone runs it reads (``architectures.jsonl``, ``paper.jsonl``) and its scores, each file only
    appended to (:func:`~mfsearch._utils.merge_jsonl`), and its report. Kept with the repository, they let a
    check continue on another machine: published runs and scores count as done there."""
    from .._utils import atomic_write, merge_jsonl

    base, pub = out.parent, Path(results) / out.parent.name
    for name in ("architectures.jsonl", "paper.jsonl"):
        merge_jsonl(stored_runs(base, name), pub / name)
    merge_jsonl(read_jsonl(out / "scores.jsonl", SCORE), pub / out.name / "scores.jsonl")
    for name in ("report.md", "report.json"):
        if (out / name).is_file():
            data = (out / name).read_bytes()
            atomic_write(pub / out.name / name, lambda t, data=data: t.write_bytes(data))


SCORE = {"arch_id": (str,), "oneshot": (int, float)}


def _sample_jobs(space: Space, sample: Sequence[MobileFormerConfig], seeds: Sequence[int], path: Path,
                 workers: int, results: str | Path | None = None) -> list[Any]:
    """The (architecture, seed) stand-alone runs not stored (nor published) yet, seed-major."""
    ev = standalone_space(space).evaluation
    done = {(r["arch_id"], r["seed"]) for r in stored_runs(path.parent, path.name, results)
            if "arch_id" in r and "seed" in r}
    threads = _threads(space, workers)
    jobs = []
    for seed in seeds:
        for cfg in sample:
            if (cfg.arch_id, seed) in done:
                continue
            rec = {"arch_id": cfg.arch_id, "seed": seed, "summary": cfg.summary(), "eval_id": ev.eval_id()}
            jobs.append((_train_job, (cfg.to_dict(), {**dataclasses.asdict(ev), "seed": seed}, threads), rec, path))
    return jobs


def run_oneshot_check(space: Space, opts: OneShotCheckOptions, log: Log,
                      runs: str | Path | None = None, results: str | Path | None = None) -> dict[str, Any]:
    """Score, train what is missing (resuming), and summarise; the summary (also written as report files).
    With ``results``, what is published there counts as done, and each stored run is published at once."""
    from ..evaluation.strategies import oneshot_settings
    from ..oneshot.train import supernet_key

    require_oneshot(space)
    sample, paper = architectures(space, opts.sample)
    key = supernet_key(space, oneshot_settings(space))
    out = oneshot_dir(space, key, runs)
    out.mkdir(parents=True, exist_ok=True)
    base = out.parent
    seeds = _seeds(space, opts.seeds)
    scores_path = out / "scores.jsonl"
    cfgs = [("sample", c.arch_id, None, c) for c in sample] + [("paper", get_config(m).arch_id, m, get_config(m))
                                                              for m in paper]
    t0 = time.perf_counter()
    with contextlib.ExitStack() as held:
        if not opts.report_only:
            held.enter_context(one_runner([base], "mfsearch proxy-check --oneshot"))
        summary = _run_locked(space, opts, log, runs, sample, paper, key, out, base, seeds, scores_path, cfgs, t0,
                              results)
        if results is not None:
            publish_check(out, results)
        return summary


def _run_locked(space: Space, opts: OneShotCheckOptions, log: Log, runs: str | Path | None,
                sample: list[MobileFormerConfig], paper: list[str], key: str, out: Path, base: Path,
                seeds: list[int], scores_path: Path, cfgs: list[Any], t0: float,
                results: str | Path | None = None) -> dict[str, Any]:
    from ..oneshot.score import score
    from ..oneshot.strategy import load
    from ..store import runs_dir

    def stored() -> None:
        if results is not None:
            publish_check(out, results)

    def score_all() -> None:
        if not todo:
            return
        loaded = load(space, cache, log)  # trains, waits for (the lock) or loads the supernet
        log(f"scoring {len(todo)} architectures as sub-networks of supernet {key}")
        how = scoring_id(space)
        for kind, aid, name, cfg in todo:
            c0, w0 = time.process_time(), time.perf_counter()
            acc = score(loaded.run.supernet, cfg, loaded.data)
            append_jsonl(scores_path, {"arch_id": aid, "kind": kind, "name": name, "summary": cfg.summary(),
                                       "oneshot": acc, "supernet": key, "scoring": how,
                                       "val_images": loaded.data.val_images,
                                       "score_s": round(time.perf_counter() - w0, 4),
                                       "score_cpu_s": round(time.process_time() - c0, 4)})
        stored()

    if not opts.report_only:
        cache = runs_dir(runs).absolute() / "proxy-check"  # the supernet cache: <runs>/supernets/
        have = {r["arch_id"] for r in _scores(out, results)}
        todo = [c for c in cfgs if c[1] not in have]
        jobs = _sample_jobs(space, sample, seeds, base / "architectures.jsonl", opts.workers, results)
        have_paper = {(r["name"], r["seed"]) for r in select_records(
            stored_runs(base, "paper.jsonl", results), paper, seeds, deterministic=space.evaluation.deterministic)}
        jobs += [j for j in paper_jobs(standalone_space(space), paper, seeds, base, opts.workers)
                 if (j[2]["name"], j[2]["seed"]) not in have_paper]
        beside = bool(todo and jobs and opts.workers > 1 and not supernet_complete(space, cache))
        with contextlib.ExitStack() as stack:
            if beside:
                stack.enter_context(supernet_in_background(space, cache, log, opts.quiet))
            else:
                score_all()
            if jobs:
                log(f"training {len(jobs)} stand-alone (architecture, seed) runs with {opts.workers} worker(s), "
                    "seed-major; a re-run resumes")
            _run_jobs(jobs, opts.workers, log, stored)
            if beside:
                score_all()  # waits for the supernet's process (saying so), loads the supernet, then scores
    summary = summarise_oneshot(space, sample, paper, seeds, _scores(out, results),
                                stored_runs(base, "architectures.jsonl", results),
                                stored_runs(base, "paper.jsonl", results), opts.bootstrap_seed)
    summary["supernet"] = key
    summary["wall_minutes"] = round((time.perf_counter() - t0) / 60, 2)
    text = oneshot_markdown(space, summary)
    (out / "report.md").write_text(text)
    (out / "report.json").write_text(finite_json(summary))
    if summary["rows"]:
        plot_oneshot(summary, out / "oneshot_vs_standalone.png")
    summary["out"] = str(out)
    return summary


def supernet_complete(space: Space, run_dir: str | Path) -> bool:
    """Whether the supernet of ``space`` is trained to its last epoch in the cache of ``run_dir``."""
    from ..evaluation.strategies import oneshot_settings
    from ..oneshot.strategy import cache_dir, stored_epochs
    from ..oneshot.train import CHECKPOINT, supernet_key

    settings = oneshot_settings(space)
    return stored_epochs(cache_dir(run_dir) / supernet_key(space, settings) / CHECKPOINT) >= settings.epochs


def _train_supernet(space: Space, run_dir: str, quiet: bool) -> None:
    """In a worker process: train (or resume) the supernet of ``space`` into the cache of ``run_dir``."""
    from ..oneshot.strategy import load

    load(space, run_dir, (lambda s: None) if quiet else None)


@contextlib.contextmanager
def supernet_in_background(space: Space, run_dir: str | Path, log: Log, quiet: bool = False) -> Any:
    """Train the supernet in a process of its own while the block runs (the stand-alone runs of a check with
    two or more workers: the supernet no longer holds every core idle but one). It trains under the cache's
    lock, so a :func:`~mfsearch.oneshot.strategy.load` in this process after the block waits for it, saying so,
    and loads it; a supernet is never trained twice. The process ends with this one (killed or not): a re-run
    resumes the supernet at its last finished epoch."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from .._utils import exit_with_parent
    from . import stop_pool

    pool = ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn"), initializer=exit_with_parent,
                               initargs=(os.getpid(),))
    fut = pool.submit(_train_supernet, space, str(run_dir), quiet)
    log("training the supernet in a process of its own while the stand-alone runs train")
    try:
        yield fut
    except BaseException:
        stop_pool(pool)
        raise
    pool.shutdown(wait=True)  # after the block's load(): the child is done, or loading what it waited for


def _finite_mean(values: Sequence[float]) -> float:
    """The mean of the defined values; NaN (without a warning) when none is."""
    v = [x for x in values if np.isfinite(x)]
    return float(np.mean(v)) if v else float("nan")


def _corr(x: Sequence[float], y: Sequence[float], seed: int) -> dict[str, Any]:
    s, k = rank_correlations(x, y)
    ci = pair_bootstrap(x, y, seed=seed) if len(x) >= 4 else None
    return {"spearman": round(s, 4), "kendall": round(k, 4), "interval": ci, "n": len(x)}


def summarise_oneshot(space: Space, sample: Sequence[MobileFormerConfig], paper: Sequence[str], seeds: Sequence[int],
                      scores: list[dict], runs: list[dict], paper_runs: list[dict],
                      bootstrap_seed: int = 0) -> dict[str, Any]:
    """Per architecture: one-shot score, stand-alone mean / std over the seeds, #params and MACs; the correlations.

    Only architectures with a one-shot score and every seed trained (none failed) enter the correlations.
    """
    from ..models import complexity

    by_id = {r["arch_id"]: r for r in scores}
    acc: dict[str, dict[int, float]] = {}
    failed = []
    for r in runs:
        if r.get("seed") in seeds:
            if r.get("accuracy") is None:
                failed.append({"arch_id": r["arch_id"], "seed": r["seed"], "reason": r.get("failed", "")})
            else:
                acc.setdefault(r["arch_id"], {}).setdefault(r["seed"], r["accuracy"])
    sa = standalone_space(space)
    for r in select_records(paper_runs, paper, seeds, deterministic=sa.evaluation.deterministic):
        aid = get_config(r["name"]).arch_id
        if r.get("accuracy") is None:
            failed.append({"arch_id": aid, "seed": r["seed"], "reason": r.get("failed", "")})
        else:
            acc.setdefault(aid, {}).setdefault(r["seed"], r["accuracy"])
    ids = {c.arch_id for c in sample}
    first = {}  # one run per (architecture, seed): a run stored here and published too counts once
    for r in runs:
        if r.get("seed") in seeds and r.get("arch_id") in ids:
            first.setdefault((r["arch_id"], r["seed"]), r)
    cpu = sum(r.get("cpu_s") or 0.0 for r in first.values())
    cpu += sum(r.get("cpu_s", 0.0) for r in select_records(paper_runs, paper, seeds,
                                                           deterministic=sa.evaluation.deterministic))
    rows = []
    entries = [(c, "sample", None) for c in sample] + [(get_config(m), "paper", m) for m in paper]
    for cfg, kind, name in entries:
        a = acc.get(cfg.arch_id, {})
        vals = [a[s] for s in seeds if s in a]
        cx = complexity(cfg.replace(num_classes=1000), space.budget.input_size)
        rows.append({"arch_id": cfg.arch_id, "kind": kind, "name": name, "summary": cfg.summary(),
                     "params": cx.params, "macs": cx.macs,
                     "oneshot": by_id[cfg.arch_id]["oneshot"] if cfg.arch_id in by_id else None,
                     "seeds": len(vals), "by_seed": {str(s): a[s] for s in seeds if s in a},
                     "mean": round(float(np.mean(vals)), 3) if vals else None,
                     "std": round(float(np.std(vals, ddof=1)), 3) if len(vals) > 1 else None,
                     "imagenet_top1": PAPER[name].top1 if name else None})
    full = [r for r in rows if r["oneshot"] is not None and r["seeds"] == len(seeds)]
    mean = [r["mean"] for r in full]
    out: dict[str, Any] = {
        "space": space.name, "eval_id": sa.evaluation.eval_id(), "seeds": list(seeds), "rows": rows,
        "complete": len(full), "architectures": len(rows), "sampled": len(sample), "paper_models": list(paper),
        "failed": failed, "standalone_cpu_minutes": round(cpu / 60, 2),
        "score_cpu_s": round(float(np.median([r["score_cpu_s"] for r in scores])), 3) if scores else None,
        "bootstrap": {"reps": 2000, "seed": bootstrap_seed, "resampled": "architectures"},
    }
    if len(full) >= 3:
        out["oneshot"] = _corr([r["oneshot"] for r in full], mean, bootstrap_seed)
        out["params"] = _corr([r["params"] for r in full], mean, bootstrap_seed)
        out["macs"] = _corr([r["macs"] for r in full], mean, bootstrap_seed)
        if len(seeds) >= 2:  # one stand-alone run against the mean of the others: the noise the score competes with
            one = []
            for s in seeds:
                others = [float(np.mean([r["by_seed"][str(t)] for t in seeds if t != s])) for r in full]
                one.append(rank_correlations([r["by_seed"][str(s)] for r in full], others))
            out["one_seed"] = {"spearman": round(_finite_mean([v[0] for v in one]), 4),
                               "kendall": round(_finite_mean([v[1] for v in one]), 4),
                               "per_seed": [{"seed": s, "spearman": round(v[0], 4), "kendall": round(v[1], 4)}
                                            for s, v in zip(seeds, one)]}
            # how far the stand-alone means themselves can be trusted: the tau even a perfect ranker would reach
            acc = np.array([[r["by_seed"][str(t)] for t in seeds] for r in full])
            rel = seed_reliability(acc)
            ceiling = attainable_kendall(rel["mean"])
            out["standalone_noise"] = {
                "noise_sd": round(rel["noise_sd"], 4), "spread_sd": round(rel["spread_sd"], 4),
                "seed_shift_sd": round(rel["seed_shift_sd"], 4),
                "reliability_single": round(rel["single"], 4), "reliability_mean": round(rel["mean"], 4),
                "ceiling_kendall": round(ceiling, 4), "seeds_for_goal": seeds_for_kendall(rel["single"], GOAL_KENDALL),
                "model": "two-way: run = true accuracy + the seed's shift shared by all + noise; normal scale"}
            out["goal_checkable"] = bool(np.isfinite(ceiling) and ceiling >= GOAL_KENDALL)
            boot = corrected_kendall_bootstrap([r["oneshot"] for r in full], acc, seed=bootstrap_seed)
            corrected = disattenuated_kendall(out["oneshot"]["kendall"], rel["mean"])
            out["oneshot_corrected"] = {"kendall": round(corrected, 4), "interval": {"kendall": boot["kendall"]},
                                        "undefined": boot["undefined"]}
        out["meets_goal"] = bool(np.isfinite(out["oneshot"]["kendall"]) and out["oneshot"]["kendall"] >= GOAL_KENDALL)
    pap = [r for r in rows if r["kind"] == "paper" and r["oneshot"] is not None]
    if len(pap) >= 3:
        out["paper_imagenet"] = _corr([r["oneshot"] for r in pap], [r["imagenet_top1"] for r in pap], bootstrap_seed)
    return out


def _c(d: dict[str, Any] | None, k: str) -> str:
    if not d:
        return "-"
    if not np.isfinite(d[k]):
        return "n/a (a constant column)"
    ci = d.get("interval")
    ok = ci and all(np.isfinite(v) for v in ci[k])
    return f"{d[k]:.3f}" + (f" [{ci[k][0]:.2f}, {ci[k][1]:.2f}]" if ok else "")


def _noise_lines(s: dict[str, Any]) -> list[str]:
    """The stand-alone means' own noise: the tau a perfect ranker could reach, the seeds the goal needs, the
    one-shot tau corrected for it."""
    n = s.get("standalone_noise")
    if not n or n["reliability_mean"] is None or not np.isfinite(n["reliability_mean"]):
        return []
    k = len(s["seeds"])
    need = n["seeds_for_goal"]
    more = (f"{need} seeds would make it checkable (Spearman-Brown)" if need is not None
            else "no number of seeds makes it checkable (the seed noise leaves no spread between architectures)")
    shift = n.get("seed_shift_sd") or 0.0
    shared = (f"; besides, each seed shifts every architecture alike by {shift:.2f} points, which no ranking sees"
              if shift >= 0.05 else "")
    head = (f"Stand-alone noise: one run varies by {n['noise_sd']:.2f} points around its architecture's mean (std"
            f"{shared}) while the "
            f"architectures' own accuracies spread by {n['spread_sd']:.2f}, so one run has reliability "
            f"{n['reliability_single']:.2f} and the {k}-seed means {n['reliability_mean']:.2f}. ")
    if not np.isfinite(n["ceiling_kendall"]) or n["reliability_mean"] <= 0:
        return [head + "The means hold no ranking to check against: " + more + "."]
    ceil = (f"A ranker that knew every true accuracy would reach about Kendall {n['ceiling_kendall']:.3f} against "
            "these means, so ")
    ceil += ("the goal can be checked here." if s.get("goal_checkable")
             else f"the goal of {GOAL_KENDALL} cannot be checked against them: {more}.")
    c = s.get("oneshot_corrected") or {}
    corr = ""
    if c.get("kendall") is not None and np.isfinite(c["kendall"]):
        lo, hi = c["interval"]["kendall"]
        iv = f" [{lo:.2f}, {hi:.2f}]" if np.isfinite(lo) and np.isfinite(hi) else ""
        corr = (f" Corrected for that noise, the one-shot Kendall tau against the true stand-alone accuracies is "
                f"about {c['kendall']:.2f}{iv}")
        corr += (f" ({c['undefined']:.0%} of the bootstrap draws left no reliability to correct by and are left "
                 "out)." if c["undefined"] > 0.01 else ".")
    return [head + ceil + corr]


def oneshot_markdown(space: Space, s: dict[str, Any]) -> str:
    ev = space.evaluation
    lines = [f"# One-shot check: {space.name} (supernet {s.get('supernet', '?')})", "",
             f"{s['sampled']} architectures sampled from the space (seed {space.search.seed}) and "
             f"{len(s['paper_models'])} paper model(s) inside it ({', '.join(s['paper_models']) or 'none'}); "
             "each scored as a sub-network of the supernet and trained stand-alone "
             f"({ev.dataset} {ev.image_size}px, {ev.train_size} train / {ev.val_size} val images, {ev.epochs} "
             f"epoch(s), eval_id {s['eval_id']}) with seeds {s['seeds']}. {s['complete']} of {s['architectures']} are "
             "complete (scored, every seed trained) and enter the correlations; 95% bootstrap intervals over "
             "architectures.", ""]
    if "oneshot" in s:
        lines += ["| ranks the stand-alone means | Spearman | Kendall tau-b |", "|---|---:|---:|",
                  f"| one-shot score | {_c(s['oneshot'], 'spearman')} | {_c(s['oneshot'], 'kendall')} |",
                  f"| #params (baseline) | {_c(s['params'], 'spearman')} | {_c(s['params'], 'kendall')} |",
                  f"| MACs | {_c(s['macs'], 'spearman')} | {_c(s['macs'], 'kendall')} |"]
        if "one_seed" in s:
            lines.append(f"| one stand-alone seed vs the mean of the others | {_c(s['one_seed'], 'spearman')} | "
                         f"{_c(s['one_seed'], 'kendall')} |")
        kt = s["oneshot"]["kendall"]
        if not np.isfinite(kt):
            lines += ["", "The one-shot Kendall tau is undefined: the one-shot scores or the stand-alone means are all "
                      "equal (a supernet that cannot tell the architectures apart, or a sample too small)."]
        else:
            verdict = "meets" if s["meets_goal"] else "falls short of"
            lines += ["", f"The one-shot Kendall tau {kt:.3f} {verdict} the goal of {GOAL_KENDALL}."]
            lines += _noise_lines(s)
    else:
        lines.append("Fewer than 3 complete architectures: no correlation yet (run the command again to continue).")
    if "paper_imagenet" in s:
        p = s["paper_imagenet"]
        lines.append(f"Paper models, one-shot score against ImageNet top-1: Spearman {_c(p, 'spearman')}, "
                     f"Kendall {_c(p, 'kendall')} ({p['n']} models).")
    lines += ["", "| architecture | kind | MACs (M) | params (M) | one-shot top-1 | stand-alone mean +/- std | seeds |",
              "|---|---|---:|---:|---:|---:|---:|"]
    failed: dict[str, list[str]] = {}
    for f in s["failed"]:
        failed.setdefault(f["arch_id"], []).append(str(f["seed"]))
    for r in sorted(s["rows"], key=lambda r: -(r["mean"] if r["mean"] is not None else -1)):
        label = r["name"] or r["arch_id"]
        one = f"{r['oneshot']:.2f}" if r["oneshot"] is not None else "-"
        sa = "-" if r["mean"] is None else (f"{r['mean']:.2f} +/- {r['std']:.2f}" if r["std"] is not None
                                             else f"{r['mean']:.2f} (one seed)")
        if r["arch_id"] in failed:
            sa += f" (failed: seed {', '.join(failed[r['arch_id']])}, left out)"
        lines.append(f"| {label} | {r['kind']} | {r['macs'] / 1e6:.1f} | {r['params'] / 1e6:.2f} | {one} | {sa} | "
                     f"{r['seeds']} |")
    lines += ["", f"Stand-alone training: {s['standalone_cpu_minutes']:.1f} CPU-minutes; scoring: median "
              f"{s['score_cpu_s'] if s['score_cpu_s'] is not None else '-'} CPU-s per sub-network."]
    if s["failed"]:
        lines.append("Failed runs (left out): " + "; ".join(f"{f['arch_id']} seed {f['seed']}: {f['reason']}"
                                                            for f in s["failed"]) + ".")
    return "\n".join(lines) + "\n"


def plot_oneshot(s: dict[str, Any], path: Path) -> Path:
    """One-shot score against stand-alone mean +/- std, paper models named."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4.2))
    ax = fig.subplots()
    for r in s["rows"]:
        if r["oneshot"] is None or r["mean"] is None:
            continue
        paper = r["kind"] == "paper"
        ax.errorbar(r["oneshot"], r["mean"], yerr=r["std"] or 0.0, fmt="s" if paper else "o",
                    color="C3" if paper else "C0", capsize=2, ms=5 if paper else 4)
        if paper:
            ax.annotate(r["name"].replace("mobile_former_", "MF-"), (r["oneshot"], r["mean"]),
                        textcoords="offset points", xytext=(4, 4), fontsize=8)
    title = s["space"]
    if "oneshot" in s:
        title += f": Spearman {s['oneshot']['spearman']:.2f}, Kendall {s['oneshot']['kendall']:.2f}"
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("one-shot top-1 (sub-network of the supernet), %")
    ax.set_ylabel(f"stand-alone top-1, mean of {len(s['seeds'])} seeds, %")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


__all__ = ["OneShotCheckOptions", "oneshot_dir", "oneshot_markdown", "run_oneshot_check", "summarise_oneshot"]
