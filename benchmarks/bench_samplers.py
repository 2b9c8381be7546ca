"""Hypervolume of TPE and NSGA-II vs random search at equal trial counts on the tiny space.

    python benchmarks/bench_samplers.py [--trials 12] [--seeds 0 1 2] [--samplers random tpe nsga2]

Every run is a real search (real training on Fashion-MNIST) in a fresh temporary store; the
hypervolume is the normalised one of ``mfsearch pareto`` (reference point: accuracy 0, the budget).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

from mfsearch.analysis import hypervolume
from mfsearch.search import OptunaSearch
from mfsearch.search.commands import load_frames
from mfsearch.space import load_space
from mfsearch.store import StudyRef, default_storage_url

TINY = Path(__file__).parent.parent / "spaces" / "tiny.yaml"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--samplers", nargs="+", default=["random", "tpe", "nsga2"])
    args = ap.parse_args()
    base = load_space(TINY)
    objectives = [list(o) for o in base.objectives]
    rp = {"accuracy": 0.0, "macs": base.budget.macs}
    rows = {}
    for sampler in args.samplers:
        for seed in args.seeds:
            space = dataclasses.replace(base, search=dataclasses.replace(
                base.search, sampler=sampler, seed=seed, trials=args.trials, reference_models=False))
            with tempfile.TemporaryDirectory() as d:
                run_dir = Path(d) / "tiny"
                ref = StudyRef("tiny", default_storage_url(run_dir), run_dir)
                t0 = time.perf_counter()
                summary = OptunaSearch(space, ref, progress=False, log=lambda s: None).run(10)
                df, _ = load_frames(ref)
                hv = hypervolume(df[df["kind"] == "search"], objectives, rp)
                rows.setdefault(sampler, []).append(hv)
                print(f"{sampler:<8} seed {seed}: HV {hv:.4f}  trained {summary.trained}  duplicates "
                      f"{summary.duplicates}  over-budget samples {summary.infeasible}  "
                      f"{time.perf_counter() - t0:.0f}s", flush=True)
    print(f"\n{'sampler':<8}{'HV mean':>10}{'HV std':>10}{'vs random':>11}   "
          f"({args.trials} trials, seeds {args.seeds})")
    ref_mean = statistics.mean(rows["random"]) if "random" in rows else None
    for sampler, hvs in rows.items():
        sd = statistics.stdev(hvs) if len(hvs) > 1 else 0.0
        ratio = f"{statistics.mean(hvs) / ref_mean:>10.3f}x" if ref_mean else ""
        print(f"{sampler:<8}{statistics.mean(hvs):>10.4f}{sd:>10.4f}{ratio}")


if __name__ == "__main__":
    main()
