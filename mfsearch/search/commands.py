"""CLI commands of the search layer: ``run``, ``results``, ``pareto``."""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from .._utils import atomic_write, finite_json
from ..errors import InputError, RunError
from .engines import ENGINES
from .samplers import SAMPLERS


def _quiet_optuna() -> None:
    """The command line shows its own trial lines: Optuna's per-trial INFO lines are left out (the
    library never changes the level; the commands, as the application, do)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _space_from_args(args: argparse.Namespace) -> Any:
    from ..space import load_space

    space = load_space(args.space)
    from ..space.spec import MAX_TRIALS

    if args.trials is not None and not 1 <= args.trials <= MAX_TRIALS:
        raise InputError(f"--trials: must be in [1, {MAX_TRIALS}], got {args.trials}")
    if args.seed is not None and not 0 <= args.seed < 2**31:
        raise InputError(f"--seed: must be in [0, 2^31), got {args.seed}")
    return space.with_overrides(trials=args.trials, sampler=args.sampler, seed=args.seed,
                                reference_models=False if args.no_references else None,
                                engine=args.engine, address=args.address)


def writable_dir(path: Path, what: str) -> Path:
    """Create ``path`` if needed and check a file can be written there (before any work is done)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise InputError(f"{path}: cannot write the {what} here ({e.strerror or e}); choose another folder "
                         f"or fix its permissions") from None
    return path


def cmd_run(args: argparse.Namespace) -> int:
    from ..evaluation.data import MfsearchDataError
    from ..evaluation.train import proxy_data
    from ..store import StudyRef, default_storage_url, runs_dir
    _quiet_optuna()
    space = _space_from_args(args)
    if space.predicts_latency:
        space.latency_table()  # a missing table, or one for another machine or settings: one line, before any work
    run_dir = writable_dir(runs_dir(args.runs_dir) / space.name, "run directory")
    url = args.storage or space.storage or default_storage_url(run_dir)
    ref = StudyRef(space.name, url, run_dir)
    try:
        data = proxy_data(space.evaluation)
    except MfsearchDataError as e:
        raise InputError(f"{space.path}: {getattr(e, 'field', 'evaluation.dataset')}: {e}") from None
    workers = space.search.workers if args.workers is None else args.workers
    if not 1 <= workers <= 256:
        raise InputError(f"--workers: must be in [1, 256], got {workers}")
    from .engines import run_engine

    summary = run_engine(space, ref, data.num_classes, workers, progress=not args.no_progress,
                         allow_change=args.allow_change)
    if space.search.confirm is not None:
        from .confirm import run_confirm

        done = run_confirm(space, ref, data.num_classes, lambda m: print(m, file=sys.stderr,
                                                                           flush=True), allow_change=args.allow_change)
        print(f"confirm: {done.trained} stand-alone runs trained now, {done.reused} already stored, {done.failed} "
              f"failed, wall {done.wall_s / 60:.1f} min")
    print(f"study {summary.study}: {summary.finished} architectures evaluated ({summary.trained} trained now, "
          f"{summary.duplicates} duplicates reused, {summary.infeasible} over-budget samples never trained, "
          f"{summary.failed} failed), {summary.references} reference models trained, "
          f"wall {summary.wall_s / 60:.1f} min")
    if space.predicts_latency:
        from .measure_front import measure_front

        measure_front(space, ref, log=lambda m: print(m, file=sys.stderr, flush=True))
    export(ref, space_objectives(space), out=sys.stdout)
    return 0


def space_objectives(space: Any) -> list[list[str]]:
    return [list(o) for o in space.objectives]


def load_frames(ref: Any) -> tuple[Any, dict[str, Any]]:
    """All trials of a study and its reference study as one DataFrame, plus the study attributes."""
    from ..analysis import study_frames

    return study_frames(ref)


def _atomic(path: Path, write: Any) -> Path:
    """Write ``path`` through a temporary file beside it: a full disk never leaves half a file."""
    try:
        atomic_write(path, write)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO):
            raise RunError(f"{path}: cannot be written ({e.strerror}); the results store is intact: free some "
                           f"space, then `mfsearch pareto {path.parent}` writes it again") from None
            raise InputError(f"{path}: cannot be written ({e.strerror or e}); choose another folder (--out) or fix "
                         "its permissions") from None
    return path


def _hv(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{v:.4f}"


def cost_line(c: dict[str, Any]) -> str:
    """What a study cost the machine (a :func:`mfsearch.analysis.study_cost` record) as one sentence."""
    text = f"Cost: {c['evaluations']} evaluations, {c['trials_cpu_s'] / 60:.1f} CPU-min"
    if c["without_cpu"]:
        text += f" ({c['without_cpu']} more stored without their CPU time)"
    if c["supernet_cpu_s"] is not None:
        text += f", plus {c['supernet_cpu_s'] / 60:.1f} CPU-min training supernet {c['supernet'] or ''}"
    return text + "."


def export(ref: Any, objectives: list[list[str]] | None = None, out: Any = None,
           out_dir: Path | None = None) -> dict[str, Any]:
    """Write results.csv / .parquet, pareto.png (+ params and, when measured, latency plots) and pareto.md."""
    from ..analysis import (
        confirmed,
        confirmed_markdown,
        front_markdown,
        hypervolume,
        pareto_front,
        plot_front,
        study_cost,
    )

    df, attrs = load_frames(ref)
    objectives = objectives or attrs.get("objectives") or [["accuracy", "maximize"], ["macs", "minimize"]]
    folder = writable_dir(Path(out_dir or ref.run_dir), "results")
    csv = _atomic(folder / "results.csv", lambda p: df.to_csv(p, index=False))
    parquet = _atomic(folder / "results.parquet", lambda p: df.to_parquet(p, index=False))
    front = pareto_front(df[df["kind"] != "confirm"], objectives)  # confirm runs are shown apart, below
    search_only = df[df["kind"] == "search"]
    rp = attrs.get("reference_point") or {"accuracy": 0.0}
    has_rp = all(n in rp for n, _ in objectives)
    rp = {n: rp[n] for n, _ in objectives if n in rp}  # the point in the objectives' space only (no stray budget)
    hv = hypervolume(search_only, objectives, rp) if has_rp else float("nan")
    conf = confirmed(df)
    conf_search = conf[conf["source"] == "search"]
    hv_conf = hypervolume(conf_search, objectives, rp) if has_rp and not conf_search.empty else float("nan")
    png = _atomic(folder / "pareto.png", lambda p: plot_front(df, objectives, p, "macs",
                                                              f"{ref.name}: proxy top-1 vs MACs"))
    _atomic(folder / "pareto_params.png", lambda p: plot_front(df, objectives, p, "params",
                                                               f"{ref.name}: proxy top-1 vs params"))
    if "latency_ms" in df.columns and df["latency_ms"].notna().any():
        from ..analysis import plot_latency_fronts

        budget = (attrs.get("budget") or {}).get("latency_ms")
        _atomic(folder / "pareto_latency.png", lambda p: plot_latency_fronts(df, objectives, p, budget,
                                                                             f"{ref.name}: proxy top-1 vs latency"))
    hv_line = (f"Hypervolume of the search trials: {hv:.4f} (reference point {json.dumps(rp)}).\n\n"
               if not math.isnan(hv) else "Hypervolume: n/a (an objective has no reference point: a zero-cost score, "
               "or a cost without a budget).\n\n")
    spent = study_cost(df, attrs)
    cost = cost_line(spent)
    text = (f"# Pareto front of {ref.name}\n\nObjectives: {', '.join(f'{n} ({d})' for n, d in objectives)}. "
            + hv_line + cost + "\n\n"
            + front_markdown(front))
    if not conf.empty:
        text += (f"\n## Confirmed stand-alone\n\nThe best front architectures and the paper models inside the budget, "
                 f"trained stand-alone with several seeds. Hypervolume of the confirmed searched architectures "
                 f"(their means): {_hv(hv_conf)}; of the search scores: {_hv(hv)}.\n\n" + confirmed_markdown(conf))
    md = _atomic(folder / "pareto.md", lambda p: p.write_text(text))
    summary = {"study": ref.name, "objectives": [list(o) for o in objectives], "reference_point": rp,
               "hypervolume": hv, "hypervolume_confirmed": hv_conf, "front_size": len(front), "trials": len(df),
               "confirmed": len(conf), "cost": spent}
    _atomic(folder / "summary.json", lambda p: p.write_text(finite_json(summary) + "\n"))  # the same, for programs
    info = {"results_csv": str(csv), "results_parquet": str(parquet), "pareto_png": str(png),
            "pareto_md": str(md), "hypervolume": hv, "front_size": len(front), "trials": len(df),
            "confirmed": len(conf), "hypervolume_confirmed": hv_conf, "cost": cost}
    if out is not None:
        print(front_markdown(front), file=out)
        if not conf.empty:
            print("confirmed stand-alone (mean +/- 95% CI over seeds, beside the search score):", file=out)
            print(confirmed_markdown(conf), file=out)
            print(f"hypervolume of the confirmed means {hv_conf:.4f} (search scores {hv:.4f})", file=out)
        if math.isnan(hv):
            print("hypervolume n/a: an objective has no reference point (a zero-cost score, or a cost without "
                  "a budget)", file=out)
        else:
            print(f"hypervolume {hv:.4f} vs reference point {json.dumps(rp)}", file=out)
        print(cost, file=out)
        print(f"wrote {csv}, {parquet}, {png}, {md}", file=out)
    return info


def study_ref(target: str | Path, storage: str | None = None, runs: str | Path | None = None) -> Any:
    """The study of a space file, a run directory or a study name (under the runs directory)."""
    from ..store import StudyRef, default_storage_url, resolve_study, runs_dir

    p = Path(target)
    if p.suffix in (".yaml", ".yml") and not (p / "study.json").exists():
        from ..space import load_space

        space = load_space(p)
        run_dir = runs_dir(runs) / space.name
        return StudyRef(space.name, storage or space.storage or default_storage_url(run_dir), run_dir)
    return resolve_study(target, storage, runs)


def _ref_from_args(args: argparse.Namespace) -> Any:
    _quiet_optuna()
    return study_ref(args.study, args.storage, args.runs_dir)


def cmd_results(args: argparse.Namespace) -> int:
    import pandas as pd

    ref = _ref_from_args(args)
    df, _ = load_frames(ref)
    out = writable_dir(Path(args.out) if args.out else ref.run_dir, "results")
    _atomic(out / "results.csv", lambda p: df.to_csv(p, index=False))
    _atomic(out / "results.parquet", lambda p: df.to_parquet(p, index=False))
    cols = ["trial", "kind", "status", "name", "arch_id", "macs", "params", "accuracy", "total_s"]
    with pd.option_context("display.width", 160, "display.max_rows", 200):
        print(df[cols].to_string(index=False))
    print(f"wrote {out / 'results.csv'} and {out / 'results.parquet'} ({len(df)} trials)")
    return 0


def cmd_pareto(args: argparse.Namespace) -> int:
    """One study: its front, plots and hypervolume. Several: each one's as usual (under ``--out/<name>/`` when
    ``--out`` is given), then their fronts on one axis in ``fronts-<names>.png`` (``--out``, or the runs folder
    of the first)."""
    _quiet_optuna()
    refs = [study_ref(s, args.storage, args.runs_dir) for s in args.study]  # every name checked before writing
    if len({r.name for r in refs}) < len(refs):
        from ..errors import InputError

        raise InputError("study: the same study is named twice; name each study once")
    several = len(refs) > 1
    for ref in refs:
        if several:
            print(f"## {ref.name}")
        out_dir = (Path(args.out) / ref.name if several else Path(args.out)) if args.out else None
        export(ref, None, out=sys.stdout, out_dir=out_dir)
    if several:
        from ..analysis import plot_fronts

        runs = []
        for ref in refs:
            df, attrs = load_frames(ref)
            runs.append((ref.name, df, (attrs.get("budget") or {}).get("macs")))
        folder = writable_dir(Path(args.out) if args.out else Path(refs[0].run_dir).parent, "fronts")
        path = _atomic(folder / f"fronts-{'+'.join(r.name for r in refs)}.png",
                       lambda p: plot_fronts(runs, p, "macs", "Pareto fronts: " + ", ".join(r.name for r in refs)))
        print(f"wrote {path}")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", default=None, help="storage URL (default: the study's own)")
    p.add_argument("--runs-dir", default=None, help="runs directory (default ./runs or $MFSEARCH_RUNS)")


def register(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="search a space file under its budget (continues an existing study)")
    run.add_argument("space", help="a space file, e.g. spaces/macs300.yaml")
    run.add_argument("--trials", type=int, default=None, help="finished trials to reach (overrides search.trials)")
    run.add_argument("--sampler", default=None, choices=tuple(SAMPLERS),
                     help="overrides search.sampler (grid and bruteforce: every architecture of a discrete space, in "
                     "turn)")
    run.add_argument("--seed", type=int, default=None, help="sampler seed (overrides search.seed)")
    run.add_argument("--no-references", action="store_true", help="skip the paper reference models")
    run.add_argument("--no-progress", action="store_true", help="no progress bar (lines only)")
    run.add_argument("--workers", type=int, default=None, help="processes sharing the study on this machine "
                     "(overrides search.workers; with --engine ray: trials at once)")
    run.add_argument("--engine", default=None, choices=tuple(ENGINES), help="overrides search.engine")
    run.add_argument("--address", default=None, help="Ray cluster address (with --engine ray; default: local)")
    run.add_argument("--allow-change", action="store_true",
                     help="continue a study although its space file changed in a compatible way (a knob's range, "
                     "a constant): the change is recorded in the study; budget, objectives, evaluation and choice "
                     "lists never change within a study")
    _common(run)
    run.set_defaults(func=cmd_run)
    res = sub.add_parser("results", help="export a study as a tidy table (CSV and Parquet)")
    res.add_argument("study", help="a space file, a run directory or a study name")
    res.add_argument("--out", default=None, help="output folder (default: the run directory)")
    _common(res)
    res.set_defaults(func=cmd_results)
    par = sub.add_parser("pareto", help="Pareto-front plot, markdown table and hypervolume of a study (of several: "
                         "also their fronts on one plot)")
    par.add_argument("study", nargs="+", help="a space file, a run directory or a study name (several: each, and "
                     "fronts-<names>.png with all their fronts)")
    par.add_argument("--out", default=None, help="output folder (default: the run directory; several studies: "
                     "<out>/<name>/ each)")
    _common(par)
    par.set_defaults(func=cmd_pareto)
