"""Trials per hour with 1 vs 2 Optuna workers, and the Ray engine's overhead per trial (tiny space).

    python benchmarks/bench_engines.py [--trials 8]

Each engine runs the same tiny space to the same number of trained architectures in a fresh
temporary store, side by side in one run. Overhead per trial = wall time per trial minus the mean
time spent inside training (``total_s`` of the records).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

TINY = Path(__file__).parent.parent / "spaces" / "tiny.yaml"


def run(label: str, trials: int, extra: list[str], search: dict) -> dict:
    import optuna

    from mfsearch.store import default_storage_url, open_storage

    with tempfile.TemporaryDirectory() as d:
        data = yaml.safe_load(TINY.read_text())
        data["search"].update({"trials": trials, "reference_models": False, "sampler": "random", **search})
        space = Path(d) / "tiny.yaml"
        space.write_text(yaml.safe_dump(data))
        env = dict(os.environ, MFSEARCH_RUNS=str(Path(d) / "runs"))
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mfsearch.cli", "run", str(space), "--no-progress", *extra],
                       check=True, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        study = optuna.load_study(study_name="tiny", storage=open_storage(default_storage_url(Path(d) / "runs" /
                                                                                              "tiny")))
        trained = [t for t in study.trials if t.user_attrs.get("status") == "trained"]
        inside = statistics.fmean(t.user_attrs.get("total_s") or 0.0 for t in trained)
    return {"label": label, "wall": wall, "trials": len(trained), "per_hour": 3600 * len(trained) / wall,
            "inside": inside, "overhead": wall / len(trained) - inside}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trials", type=int, default=8)
    args = ap.parse_args()
    rows = [
        run("optuna, 1 worker", args.trials, [], {}),
        run("optuna, 2 workers", args.trials, ["--workers", "2"], {}),
        run("ray, 1 at a time", args.trials, ["--engine", "ray"], {"max_concurrent": 1, "cpus_per_trial": 2}),
        run("ray, 2 at a time", args.trials, ["--engine", "ray", "--workers", "2"], {"cpus_per_trial": 1}),
    ]
    base = rows[0]
    print(f"{'engine':<20}{'trials':>7}{'wall s':>9}{'trials/h':>10}{'vs 1 worker':>13}{'train s/trial':>15}"
          f"{'overhead s/trial':>18}")
    for r in rows:
        print(f"{r['label']:<20}{r['trials']:>7}{r['wall']:>9.1f}{r['per_hour']:>10.0f}"
              f"{r['per_hour'] / base['per_hour']:>12.2f}x{r['inside']:>15.2f}{r['overhead']:>18.2f}")


if __name__ == "__main__":
    main()
