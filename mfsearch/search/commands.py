"""CLI commands of the search layer: ``run``, ``results``, ``pareto``."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any


def _usage_error(msg: str) -> Exception:
    from ..cli import UsageError

    return UsageError(msg)


def _space_from_args(args: argparse.Namespace) -> Any:
    from ..space import load_space
    from ..yamlio import InputError

    try:
        space = load_space(args.space)
    except InputError as e:
        raise _usage_error(str(e)) from None
    from ..space.spec import MAX_TRIALS

    if args.trials is not None and not 1 <= args.trials <= MAX_TRIALS:
        raise _usage_error(f"--trials: must be in [1, {MAX_TRIALS}], got {args.trials}")
    if args.seed is not None and not 0 <= args.seed < 2**31:
        raise _usage_error(f"--seed: must be in [0, 2^31), got {args.seed}")
    return space.with_overrides(trials=args.trials, sampler=args.sampler, seed=args.seed,
                                reference_models=False if args.no_references else None,
                                engine=args.engine, address=args.address)


def cmd_run(args: argparse.Namespace) -> int:
    from ..evaluation.data import MfsearchDataError
    from ..evaluation.train import proxy_data
    from ..store import StudyRef, default_storage_url, runs_dir
    from ..yamlio import InputError
    from .optuna_engine import OptunaSearch

    space = _space_from_args(args)
    run_dir = runs_dir(args.runs_dir) / space.name
    url = args.storage or space.storage or default_storage_url(run_dir)
    ref = StudyRef(space.name, url, run_dir)
    try:
        data = proxy_data(space.evaluation)
    except MfsearchDataError as e:
        raise _usage_error(f"{space.path}: {getattr(e, 'field', 'evaluation.dataset')}: {e}") from None
    workers = space.search.workers if args.workers is None else args.workers
    if not 1 <= workers <= 256:
        raise _usage_error(f"--workers: must be in [1, 256], got {workers}")
    try:
        if space.search.engine == "ray":
            from .ray_engine import run_ray

            s = space.search
            summary = run_ray(space, ref, data.num_classes, s.address, s.cpus_per_trial, s.gpus_per_trial,
                              s.max_concurrent or (workers if workers > 1 else None), s.asha,
                              log=lambda m: print(m, file=sys.stderr, flush=True))
        elif workers == 1:
            summary = OptunaSearch(space, ref, progress=not args.no_progress).run(data.num_classes)
        else:
            summary = run_workers(space, ref, workers, data.num_classes, progress=not args.no_progress)
    except InputError as e:
        raise _usage_error(str(e)) from None
    print(f"study {summary.study}: {summary.finished} architectures evaluated ({summary.trained} trained now, "
          f"{summary.duplicates} duplicates reused, {summary.infeasible} over-budget samples never trained, "
          f"{summary.failed} failed), {summary.references} reference models trained, "
          f"wall {summary.wall_s / 60:.1f} min")
    export(ref, space_objectives(space), out=sys.stdout)
    return 0


def _worker_main(space: Any, ref: Any, worker: int, num_classes: int, threads: int, lines: Any) -> None:
    import torch

    from .optuna_engine import OptunaSearch

    torch.set_num_threads(threads)
    OptunaSearch(space, ref, progress=False, worker=worker, run_references=worker == 0,
                 sink=lambda line, count: lines.put((line, count))).run(num_classes)


def run_workers(space: Any, ref: Any, workers: int, num_classes: int, progress: bool = False) -> Any:
    """N processes share one study (same storage); returns a summary of the whole study.

    The workers send their trial lines to this process, which prints them under one progress bar.
    """
    import multiprocessing as mp
    import os
    import queue
    import time

    from .optuna_engine import SearchSummary, evaluated, open_study, progress_bar

    threads = space.evaluation.threads or max(1, (os.cpu_count() or 1) // workers)
    t0 = time.perf_counter()
    before = len(evaluated(open_study(space, ref)))
    ctx = mp.get_context("spawn")
    lines = ctx.Queue()
    procs = [ctx.Process(target=_worker_main, args=(space, ref, i, num_classes, threads, lines), daemon=False)
             for i in range(workers)]
    bar = progress_bar(space, before) if progress else None

    def show(timeout: float) -> None:
        try:
            line, count = lines.get(timeout=timeout)
        except queue.Empty:
            return
        if bar is None:
            print(line, file=sys.stderr, flush=True)
        else:
            bar.write(line)
            bar.update(int(count))

    for p in procs:
        p.start()
    try:
        while any(p.is_alive() for p in procs):
            show(0.5)
        for p in procs:
            p.join()
        while not lines.empty():
            show(0.1)
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        raise
    finally:
        if bar is not None:
            bar.close()
    bad = [i for i, p in enumerate(procs) if p.exitcode != 0]
    if bad:
        raise _usage_error(f"worker(s) {bad} stopped with an error (see above); finished trials are kept in "
                           "the store: run the same command again to continue")
    study = open_study(space, ref)
    after = evaluated(study)
    trials = study.get_trials(deepcopy=False)
    count = lambda st: sum(t.user_attrs.get("status") == st for t in trials)  # noqa: E731
    return SearchSummary(space.name, len(after), len(after) - before, count("duplicate"), count("over_budget"),
                         count("failed"), len(space.reference_names()), time.perf_counter() - t0)


def space_objectives(space: Any) -> list[list[str]]:
    return [list(o) for o in space.objectives]


def load_frames(ref: Any) -> tuple[Any, dict[str, Any]]:
    """All trials of a study and its reference study as one DataFrame, plus the study attributes."""
    from ..analysis import study_frames

    return study_frames(ref)


def export(ref: Any, objectives: list[list[str]] | None = None, out: Any = None) -> dict[str, Any]:
    """Write results.csv / .parquet, pareto.png (+ params and, when measured, latency plots) and pareto.md."""
    from ..analysis import front_markdown, hypervolume, pareto_front, plot_front

    df, attrs = load_frames(ref)
    objectives = objectives or attrs.get("objectives") or [["accuracy", "maximize"], ["macs", "minimize"]]
    ref.run_dir.mkdir(parents=True, exist_ok=True)
    csv, parquet = ref.run_dir / "results.csv", ref.run_dir / "results.parquet"
    df.to_csv(csv, index=False)
    df.to_parquet(parquet, index=False)
    front = pareto_front(df, objectives)
    search_only = df[df["kind"] == "search"]
    rp = attrs.get("reference_point") or {"accuracy": 0.0}
    hv = hypervolume(search_only, objectives, rp) if all(n in rp for n, _ in objectives) else float("nan")
    png = plot_front(df, objectives, ref.run_dir / "pareto.png", "macs", f"{ref.name}: proxy top-1 vs MACs")
    plot_front(df, objectives, ref.run_dir / "pareto_params.png", "params", f"{ref.name}: proxy top-1 vs params")
    if "latency_ms" in df.columns and df["latency_ms"].notna().any():
        plot_front(df, objectives, ref.run_dir / "pareto_latency.png", "latency_ms",
                   f"{ref.name}: proxy top-1 vs latency")
    md = ref.run_dir / "pareto.md"
    md.write_text(f"# Pareto front of {ref.name}\n\nObjectives: {', '.join(f'{n} ({d})' for n, d in objectives)}. "
                  f"Hypervolume of the search trials: {hv:.4f} (reference point {json.dumps(rp)}).\n\n"
                  + front_markdown(front))
    info = {"results_csv": str(csv), "results_parquet": str(parquet), "pareto_png": str(png),
            "pareto_md": str(md), "hypervolume": hv, "front_size": len(front), "trials": len(df)}
    if out is not None:
        print(front_markdown(front), file=out)
        if math.isnan(hv):
            print("hypervolume n/a: an objective has no reference point (a zero-cost score, or a cost without "
                  "a budget)", file=out)
        else:
            print(f"hypervolume {hv:.4f} vs reference point {json.dumps(rp)}", file=out)
        print(f"wrote {csv}, {parquet}, {png}, {md}", file=out)
    return info


def _ref_from_args(args: argparse.Namespace) -> Any:
    from ..store import resolve_study
    from ..yamlio import InputError

    try:
        return resolve_study(args.study, args.storage, args.runs_dir)
    except InputError as e:
        raise _usage_error(str(e)) from None


def cmd_results(args: argparse.Namespace) -> int:
    ref = _ref_from_args(args)
    df, _ = load_frames(ref)
    out = Path(args.out) if args.out else ref.run_dir
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "results.csv", index=False)
    df.to_parquet(out / "results.parquet", index=False)
    cols = ["trial", "kind", "status", "name", "arch_id", "macs", "params", "accuracy", "total_s"]
    with __import__("pandas").option_context("display.width", 160, "display.max_rows", 200):
        print(df[cols].to_string(index=False))
    print(f"wrote {out / 'results.csv'} and {out / 'results.parquet'} ({len(df)} trials)")
    return 0


def cmd_pareto(args: argparse.Namespace) -> int:
    ref = _ref_from_args(args)
    export(ref, None, out=sys.stdout)
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", default=None, help="storage URL (default: the study's own)")
    p.add_argument("--runs-dir", default=None, help="runs directory (default ./runs or $MFSEARCH_RUNS)")


def register(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="search a space file under its budget (continues an existing study)")
    run.add_argument("space", help="a space file, e.g. spaces/macs300.yaml")
    run.add_argument("--trials", type=int, default=None, help="finished trials to reach (overrides search.trials)")
    run.add_argument("--sampler", default=None, choices=("random", "tpe", "nsga2", "grid", "bruteforce"))
    run.add_argument("--seed", type=int, default=None, help="sampler seed (overrides search.seed)")
    run.add_argument("--no-references", action="store_true", help="skip the paper reference models")
    run.add_argument("--no-progress", action="store_true", help="no progress bar (lines only)")
    run.add_argument("--workers", type=int, default=None, help="processes sharing the study on this machine "
                     "(overrides search.workers; with --engine ray: trials at once)")
    run.add_argument("--engine", default=None, choices=("optuna", "ray"), help="overrides search.engine")
    run.add_argument("--address", default=None, help="Ray cluster address (with --engine ray; default: local)")
    _common(run)
    run.set_defaults(func=cmd_run)
    res = sub.add_parser("results", help="export a study as a tidy table (CSV and Parquet)")
    res.add_argument("study", help="a space file, a run directory or a study name")
    res.add_argument("--out", default=None, help="output folder (default: the run directory)")
    _common(res)
    res.set_defaults(func=cmd_results)
    par = sub.add_parser("pareto", help="Pareto-front plot, markdown table and hypervolume of a study")
    par.add_argument("study", help="a space file, a run directory or a study name")
    _common(par)
    par.set_defaults(func=cmd_pareto)
