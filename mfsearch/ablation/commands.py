"""CLI commands: ``ablate`` (run experiments, write reports) and ``ablation-summary``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def cmd_ablate(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..evaluation.data import MfsearchDataError
    from . import load_experiment, report_markdown, run_experiment, write_report

    if args.seeds is not None and not 1 <= args.seeds <= 100:  # as many as an experiment file may list
        raise InputError(f"--seeds: must be in [1, 100], got {args.seeds}")
    exps = [load_experiment(p) for p in args.experiments]  # all validated before anything runs
    for exp in exps:
        if args.seeds is not None:
            exp = exp.__class__(**{**exp.__dict__, "seeds": tuple(range(args.seeds))})
        t0 = time.perf_counter()
        try:
            run_dir = run_experiment(exp, args.runs_dir, log=lambda s: print(s, file=sys.stderr, flush=True))
        except MfsearchDataError as e:
            raise InputError(f"{exp.path}: {e.field}: {e}") from None
        rows = write_report(exp, run_dir, time.perf_counter() - t0)
        print(report_markdown(exp, rows, time.perf_counter() - t0))
        print(f"wrote {run_dir / 'report.md'}, {run_dir / 'report.json'}, {run_dir / 'report.png'}")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..store import runs_dir
    from . import collect_reports, summary_markdown

    root = Path(args.dir) if args.dir else runs_dir(args.runs_dir) / "ablations"
    rows = collect_reports(root)
    if not rows:
        raise InputError(f"{root}: no ablation reports found; run `mfsearch ablate experiments/<name>.yaml` first")
    text = "# Ablation summary\n\n" + summary_markdown(rows)
    (root / "SUMMARY.md").write_text(text)
    print(text)
    print(f"wrote {root / 'SUMMARY.md'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ablate", help="train every arm of ablation experiments over several seeds; write reports")
    p.add_argument("experiments", nargs="+", help="experiment files, e.g. experiments/activation.yaml")
    p.add_argument("--seeds", type=int, default=None, help="use seeds 0..N-1 instead of the file's")
    p.add_argument("--runs-dir", default=None, help="runs directory (default ./runs or $MFSEARCH_RUNS)")
    p.set_defaults(func=cmd_ablate)
    s = sub.add_parser("ablation-summary", help="one table of every ablation report: ours vs the paper's direction")
    s.add_argument("dir", nargs="?", default=None, help="folder of ablation runs (default runs/ablations)")
    s.add_argument("--runs-dir", default=None)
    s.set_defaults(func=cmd_summary)
