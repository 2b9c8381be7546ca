"""CLI commands: ``ablate`` (run experiments, write reports; ``--plan``: estimate first) and ``ablation-summary``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path


def cmd_ablate(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..evaluation.data import MfsearchDataError
    from . import (
        check_same_experiment,
        load_experiment,
        publish,
        read_records,
        report_markdown,
        run_dir_for,
        run_experiment,
        write_report,
    )

    if args.seeds is not None and not 1 <= args.seeds <= 100:  # as many as an experiment file may list
        raise InputError(f"--seeds: must be in [1, 100], got {args.seeds}")
    if args.threads is not None and not 1 <= args.threads <= 1024:
        raise InputError(f"--threads: must be in [1, 1024], got {args.threads}")
    exps = [load_experiment(p) for p in args.experiments]  # all validated before anything runs
    if args.seeds is not None:  # a fixed list 0..N-1 instead of the file's seeds, adaptive or not
        exps = [dataclasses.replace(e, seeds=tuple(range(args.seeds)), seed_rule=None) for e in exps]
    if args.threads is not None:  # how, not what: not part of eval_id, so the same records continue
        exps = [dataclasses.replace(e, evaluation=dataclasses.replace(e.evaluation, threads=args.threads))
                for e in exps]
    if args.plan:
        return _plan(args, exps)
    named: dict[str, Path] = {}
    for exp in exps:  # two files under one name would share runs: refused before anything runs
        other = named.setdefault(exp.name, Path(exp.path).resolve())
        if other != Path(exp.path).resolve():
            raise InputError(f"{exp.path}: name: {exp.name!r} is also the name of {other}; their runs would be one "
                             "experiment's: give each file its own name")
    exps = list({e.name: e for e in exps}.values())  # the same file twice runs once
    for exp in exps:  # runs of another file under the same name never count: refused before anything runs
        run_dir = run_dir_for(exp, args.runs_dir)
        check_same_experiment(exp, read_records(run_dir), run_dir / "records.jsonl")
        if args.results is not None:
            out = Path(args.results) / exp.name
            check_same_experiment(exp, read_records(out), out / "records.jsonl")
    if args.results is not None:
        _check_results(args.results, exps if not args.report_only else [
            e for e in exps if read_records(run_dir_for(e, args.runs_dir))])  # only those it would write
    if args.report_only:
        return _report_only(args, exps)
    for exp in exps:
        t0 = time.perf_counter()
        try:
            run_dir = run_experiment(exp, args.runs_dir, log=lambda s: print(s, file=sys.stderr, flush=True),
                                     results=args.results)
        except MfsearchDataError as e:
            raise InputError(f"{exp.path}: {e.field}: {e}") from None
        if args.results is not None:
            rows = publish(exp, run_dir, args.results, time.perf_counter() - t0)
            out = Path(args.results) / exp.name
            if rows is None:  # every run failed: nothing to report
                print(f"{exp.path}: no run trained (see the failures in {run_dir / 'records.jsonl'}); no report",
                      file=sys.stderr)
                continue
            print(report_markdown(exp, rows, time.perf_counter() - t0))
            print(f"wrote {out / 'records.jsonl'}, {out / 'report.md'}, {out / 'report.json'}")
            continue
        rows = write_report(exp, run_dir, time.perf_counter() - t0)
        print(report_markdown(exp, rows, time.perf_counter() - t0))
        print(f"wrote {run_dir / 'report.md'}, {run_dir / 'report.json'}, {run_dir / 'report.png'}")
    return 0


def _check_results(results: str, exps: list) -> None:
    """``--results``: a folder this process can write, with no report there that publishing would replace
    by a smaller one (a report whose runs were not published). Checked before anything runs."""
    import os

    from .._utils import writable_folder
    from ..errors import InputError
    from . import unpublished_report

    path = writable_folder(results, "--results")
    for exp in exps:
        out = path / exp.name
        files = [out / n for n in ("records.jsonl", "report.json", "report.md")]
        if (out.is_symlink() and not out.exists()) or (out.exists() and (
                not out.is_dir() or not os.access(out, os.W_OK | os.X_OK)
                or any(f.exists() and not f.is_file() for f in files))):
            raise InputError(f"--results {results}: {out} is not a writable folder of files; {exp.path}'s runs and "
                             "report go there: move it away or make it writable")
        old = unpublished_report(exp, path)
        if old is not None:
            raise InputError(f"--results {results}: {old} has no records.jsonl beside it, so publishing "
                             f"{exp.path} would replace it with a report of only the runs stored here; move "
                             f"{old.parent} away first, or leave out --results")


def _report_rows(folder: Path) -> list | None:
    """The rows of ``folder/report.json``, or None when there is none (or it is not a report)."""
    try:
        rows = json.loads((folder / "report.json").read_text()).get("rows")
    except (OSError, ValueError, AttributeError):
        return None
    return rows if isinstance(rows, list) else None


def _report_matches(exp, folder: Path) -> bool:
    """Whether ``folder/report.json`` is there and says what ``folder/records.jsonl`` gives (a kill between
    writing the runs and the report leaves it a run behind); without readable runs, whether it is there."""
    from .._utils import finite_json
    from . import read_records, summarise

    rows = _report_rows(folder)
    records = read_records(folder)
    if rows is None or not records:
        return rows is not None
    return json.loads(finite_json(summarise(exp, records))) == rows


def _report_only(args: argparse.Namespace, exps: list) -> int:
    """Write each experiment's report from the runs stored so far; train nothing."""
    from ..errors import InputError
    from . import _unpublished, publish, read_records, report_markdown, run_dir_for, summarise, write_report

    written = kept = 0
    for exp in exps:
        run_dir = run_dir_for(exp, args.runs_dir)
        if args.results is not None:
            out = Path(args.results) / exp.name
            # the published runs and those stored here; a report that already says what they give is kept
            fresh = bool(_unpublished(read_records(run_dir), read_records(out))) or not _report_matches(exp, out)
            rows = publish(exp, run_dir, args.results) if fresh else None
            if rows is not None:
                print(report_markdown(exp, rows))
                print(f"wrote {out / 'records.jsonl'}, {out / 'report.md'}, {out / 'report.json'}")
                written += 1
            elif (out / "report.json").exists():  # a report published without its runs: kept as it is
                print(f"{exp.path}: nothing stored in {run_dir} that {out} lacks; {out / 'report.json'} left as it is",
                      file=sys.stderr)
                kept += 1
            else:
                print(f"{exp.path}: no finished runs stored in {run_dir} nor published in {out}; no report",
                      file=sys.stderr)
            continue
        rows = summarise(exp, read_records(run_dir))
        if not rows:
            print(f"{exp.path}: no finished runs under eval_id {exp.evaluation.eval_id()} in {run_dir}; "
                  "no report", file=sys.stderr)
            continue
        write_report(exp, run_dir, rows=rows)
        print(report_markdown(exp, rows))
        print(f"wrote {run_dir / 'report.md'}, {run_dir / 'report.json'}, {run_dir / 'report.png'}")
        written += 1
    if not written and not kept:
        raise InputError("--report-only: none of the experiments has a finished run yet; run `mfsearch ablate "
                         "FILE` first")
    return 0


def _plan(args: argparse.Namespace, exps: list) -> int:
    from ..errors import InputError
    from ..evaluation.data import MfsearchDataError
    from ..store import runs_dir
    from .plan import plan_campaign, plan_markdown

    if not 1 <= args.plan_steps <= 100:
        raise InputError(f"--plan-steps: must be in [1, 100], got {args.plan_steps}")
    print(f"timing {len({(e.base, a.name) for e in exps for a in e.arms})} arms (1 thread) ...", file=sys.stderr)
    try:
        plan = plan_campaign(exps, log=lambda s: print(s, file=sys.stderr, flush=True), steps=args.plan_steps,
                             warmup=2, runs=args.runs_dir, results=args.results)
    except MfsearchDataError as e:
        raise InputError(f"{e.field}: {e}") from None
    text = plan_markdown(plan)
    out = runs_dir(args.runs_dir) / "ablations"
    out.mkdir(parents=True, exist_ok=True)
    (out / "PLAN.md").write_text(text)
    (out / "plan.json").write_text(json.dumps(plan, indent=2))
    print(text)
    print(f"wrote {out / 'PLAN.md'}, {out / 'plan.json'}")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..store import runs_dir
    from . import collect_reports, summary_markdown

    root = Path(args.dir) if args.dir else runs_dir(args.runs_dir) / "ablations"
    rows = collect_reports(root)
    if not rows:
        raise InputError(f"{root}: no ablation reports found; run `mfsearch ablate experiments/<name>.yaml` first")
    table = summary_markdown(rows)
    text = "# Ablation summary\n\n" + table
    docs = []
    for doc in args.update or []:  # all checked before any is written
        path = Path(doc)
        try:
            old = path.read_text()
        except OSError as e:
            raise InputError(f"--update {doc}: cannot read it ({e.strerror or e}); name a markdown file") from None
        if old.count(SUMMARY_BEGIN) != 1 or old.count(SUMMARY_END) != 1 or old.index(SUMMARY_BEGIN) > old.index(
                SUMMARY_END):
            raise InputError(f"--update {doc}: needs one line `{SUMMARY_BEGIN}` and, after it, one line "
                             f"`{SUMMARY_END}`; the table goes between them")
        head, rest = old.split(SUMMARY_BEGIN)
        docs.append((path, f"{head}{SUMMARY_BEGIN}\n{table}{SUMMARY_END}{rest.split(SUMMARY_END, 1)[1]}"))
    (root / "SUMMARY.md").write_text(text)
    for path, new in docs:
        path.write_text(new)
    print(text)
    print(f"wrote {root / 'SUMMARY.md'}" + "".join(f", {p}" for p, _ in docs))
    return 0


SUMMARY_BEGIN, SUMMARY_END = "<!-- ablation-summary: begin -->", "<!-- ablation-summary: end -->"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ablate", help="train every arm of ablation experiments over several seeds; write reports")
    p.add_argument("experiments", nargs="+", help="experiment files, e.g. experiments/activation.yaml")
    p.add_argument("--seeds", type=int, default=None, help="use the fixed seeds 0..N-1 instead of the file's")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads per run (default: evaluation.threads, else torch's default); two commands "
                        "with --threads 1 use two cores better than one with two threads")
    p.add_argument("--plan", action="store_true",
                   help="train nothing: time every arm briefly (1 thread) and print the estimated CPU-minutes per "
                        "experiment and arm at the least and the most seeds (runs/ablations/PLAN.md)")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: write each experiment's report from the runs stored so far (an unfinished "
                        "campaign says which arms are still open)")
    p.add_argument("--results", default=None, metavar="DIR",
                   help="keep the campaign in DIR too (e.g. experiments/results, committed with the repository): "
                        "runs published there count as done, and every finished run (with --report-only: what is "
                        "stored here) is published at once to DIR/<experiment>/{records.jsonl,report.md,report.json}")
    p.add_argument("--plan-steps", type=int, default=3, help="timed training steps per arm config for --plan")
    p.add_argument("--runs-dir", default=None, help="runs directory (default ./runs or $MFSEARCH_RUNS)")
    p.set_defaults(func=cmd_ablate)
    s = sub.add_parser("ablation-summary", help="one table of every ablation report: ours vs the paper's direction")
    s.add_argument("dir", nargs="?", default=None, help="folder of ablation runs (default runs/ablations)")
    s.add_argument("--runs-dir", default=None, help="runs directory (default ./runs or $MFSEARCH_RUNS)")
    s.add_argument("--update", nargs="+", metavar="FILE.md", default=None,
                   help="also put the table into these markdown files, between the lines "
                        f"'{SUMMARY_BEGIN}' and '{SUMMARY_END}'")
    s.set_defaults(func=cmd_summary)
