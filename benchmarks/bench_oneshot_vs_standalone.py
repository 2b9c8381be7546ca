"""Head-to-head: stand-alone search against one-shot search of the 300M region, on their confirmed fronts.

    python benchmarks/bench_oneshot_vs_standalone.py --standalone RUN_DIR [RUN_DIR...] --oneshot RUN_DIR [RUN_DIR...]
                                                     --pool CHECK_DIR [--space spaces/macs300.yaml] [--reps 2000]
                                                     [--seed 0] [--pool-space spaces/macs300_oneshot.yaml]

Reads finished runs, trains nothing:

- ``--standalone``: study folders of ``mfsearch run`` on a stand-alone space with ``search.confirm``, one per
  search seed (the search, then the confirmation of its top 3 front architectures with 2 seeds);
- ``--oneshot``: study folders of ``mfsearch run spaces/macs300_oneshot.yaml``, one per search seed (1000
  architectures scored on the supernet, then the same confirmation); each is charged the supernet's whole
  training CPU (read from its cache's checkpoint history), as if it were the only search on it;
- ``--pool``: a ``proxy-check --oneshot`` folder (``architectures.jsonl``): seeded random architectures of the
  space, each trained stand-alone with several seeds. From these real runs a third method is replayed:
  **random stand-alone search**: train every pool architecture with one seed, take the top 3 of that front,
  confirm them with a second seed; replayed ``--reps`` times over bootstrap draws of the pool's architectures
  and random (search seed, confirm seed) pairs: its median and 95% interval (its CPU is the pool machine's).

Each run is scored as ``mfsearch run`` scores a confirmation: the hypervolume (reference point: 0% top-1 and
the MAC budget) of the confirmed searched architectures' stand-alone means, beside the CPU-minutes it used
(every trial's ``cpu_s``: stand-alone runs and one-shot scoring, plus the supernet). Over the search seeds:
each method's mean with a Student-t 95% interval, the Welch 95% interval of the difference of the means, and
the exact two-sided permutation p of that difference (every split of the runs into two groups).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from mfsearch.ablation.stats import permutation_p, t_interval, welch_interval
from mfsearch.analysis import confirmed, hypervolume, pareto_front, study_cost
from mfsearch.space import load_space

OBJ = [["accuracy", "maximize"], ["macs", "minimize"]]


def run_summary(run_dir: Path, rp: dict[str, float], reps: int, seed: int) -> dict[str, object]:
    """What one ``mfsearch run`` did: architectures it evaluated, CPU, confirmed hypervolume with an interval
    over the confirmation seeds (each confirmed architecture's seeds resampled; 2 seeds give a coarse one)."""
    csv = run_dir / "results.csv"
    df = pd.read_csv(csv if csv.exists() else run_dir / "results.csv.gz")  # a published run: compressed
    conf = confirmed(df)
    searched = conf[conf["source"] == "search"]
    ran = df[df["status"].isin(["trained", "confirmed"])]
    sa = ran[(ran["fidelity"] == "standalone") & ran["accuracy"].notna()]
    runs = study_cost(sa)["evaluations"]  # stand-alone runs trained (a confirmation of seed 0 reuses one: 0 s)
    shot = ran[ran["fidelity"] == "oneshot"]
    seeds = {a: g.drop_duplicates("seed")["accuracy"].to_numpy(float)
             for a, g in df[(df["kind"] == "confirm") & df["accuracy"].notna()].groupby("arch_id")}
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(reps):
        acc = [rng.choice(seeds[a], size=len(seeds[a])).mean() for a in searched["arch_id"]]
        boot.append(hypervolume(searched.assign(accuracy=acc), OBJ, rp))
    best = searched.sort_values("accuracy", ascending=False).head(1)
    return {"architectures": int(df[df["kind"] == "search"]["arch_id"].nunique()), "runs": runs,
            "scored": len(shot), "cpu_min": study_cost(df)["trials_cpu_s"] / 60,
            "hv_confirmed": hypervolume(searched, OBJ, rp), "hv_interval": tuple(np.percentile(boot, [2.5, 97.5])),
            "best": [(r["summary"], round(r["macs"] / 1e6, 1), round(r["accuracy"], 2)) for _, r in best.iterrows()],
            "confirmed": [(r["arch_id"], round(r["macs"] / 1e6, 1), round(r["accuracy"], 2), r["seeds"])
                          for _, r in searched.iterrows()]}


def over_seeds(values: list[float]) -> tuple[float, float, float]:
    """Mean over search seeds with its Student-t 95% interval (NaNs below 2 seeds)."""
    lo, hi = t_interval(values)
    return float(np.mean(values)), lo, hi


def supernet_cpu_min(run_dir: Path) -> float:
    """CPU-minutes of the supernet the one-shot run used: from its cache's checkpoint history, else (a published
    run folder, without the checkpoint) from the ``summary.json`` ``mfsearch pareto`` writes beside the results."""
    import json

    import torch

    cache = run_dir.absolute().parent / "supernets"
    hist = [h for ck in cache.glob("*/supernet.pt")
            for h in torch.load(ck, map_location="cpu", weights_only=False).get("history", [])]
    if hist:
        return sum(float(h.get("cpu_s", h.get("train_s", 0.0))) for h in hist) / 60
    summary = run_dir / "summary.json"
    cpu = json.loads(summary.read_text())["cost"]["supernet_cpu_s"] if summary.is_file() else None
    if cpu is None:
        raise SystemExit(f"{run_dir}: no supernet checkpoint in {cache} and no supernet cost in {summary}")
    return float(cpu) / 60


def pool_runs(check: Path) -> pd.DataFrame:
    """The stand-alone runs of the sampled architectures in a proxy-check folder (damaged lines skipped)."""
    from mfsearch.proxycheck import ARCH_RUN, read_jsonl

    return pd.DataFrame(read_jsonl(check / "architectures.jsonl", ARCH_RUN))


def replay_random(pool: pd.DataFrame, macs: dict[str, float], rp: dict[str, float], reps: int, seed: int,
                  top: int = 3) -> dict[str, object]:
    """Random stand-alone search replayed from real runs: one seed per architecture, top ``top`` confirmed."""
    ok = pool[pool["accuracy"].notna()]
    acc = ok.pivot_table(index="arch_id", columns="seed", values="accuracy", aggfunc="first")
    cpu = ok.pivot_table(index="arch_id", columns="seed", values="cpu_s", aggfunc="first")
    acc = acc.dropna()
    seeds = list(acc.columns)
    if len(seeds) < 2:
        raise SystemExit(f"the pool has one seed per architecture ({seeds}); the replay needs two")
    ids = list(acc.index)
    rng = np.random.default_rng(seed)
    hvs, cpus = [], []
    for _ in range(reps):
        draw = list(rng.choice(ids, size=len(ids), replace=True))
        s, c = rng.choice(seeds, size=2, replace=False)
        uniq = list(dict.fromkeys(draw))
        df = pd.DataFrame({"arch_id": uniq, "accuracy": [acc.loc[a, s] for a in uniq],
                           "macs": [macs[a] for a in uniq], "feasible": True, "status": "trained",
                           "kind": "search", "trial": range(len(uniq))})
        front = pareto_front(df, OBJ).sort_values("accuracy", ascending=False).head(top)
        conf = front.assign(accuracy=[(acc.loc[a, s] + acc.loc[a, c]) / 2 for a in front["arch_id"]])
        hvs.append(hypervolume(conf, OBJ, rp))
        cpus.append((sum(cpu.loc[a, s] for a in draw) + sum(cpu.loc[a, c] for a in front["arch_id"])) / 60)
    lo, med, hi = np.percentile(hvs, [2.5, 50, 97.5])
    return {"architectures": len(ids), "hv_median": med, "hv_interval": (lo, hi), "cpu_min": float(np.median(cpus)),
            "reps": reps, "seeds": seeds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--standalone", type=Path, nargs="+", required=True, help="study folders, one per search seed")
    ap.add_argument("--oneshot", type=Path, nargs="+", required=True, help="study folders, one per search seed")
    ap.add_argument("--pool", type=Path, required=True)
    ap.add_argument("--space", default="spaces/macs300.yaml", help="the budget and reference point")
    ap.add_argument("--pool-space", default="spaces/macs300_oneshot.yaml", help="the space the pool was drawn from")
    ap.add_argument("--reps", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    from mfsearch.models import complexity
    from mfsearch.proxycheck.oneshot import architectures

    space = load_space(a.space)
    rp = {"accuracy": 0.0, "macs": float(space.budget.macs)}
    pool = pool_runs(a.pool)
    sample, _ = architectures(load_space(a.pool_space), pool["arch_id"].nunique())  # the pool's seeded draws
    macs = {c.arch_id: float(complexity(c.replace(num_classes=1000), space.budget.input_size).macs) for c in sample}
    pool = pool[pool["arch_id"].isin(macs)]
    sa = [run_summary(d, rp, a.reps, a.seed) for d in a.standalone]
    os_ = [run_summary(d, rp, a.reps, a.seed) for d in a.oneshot]
    for d, r in zip(a.oneshot, os_):
        r["supernet_min"] = supernet_cpu_min(d)
        r["cpu_min"] += r["supernet_min"]
    rnd = replay_random(pool, macs, rp, a.reps, a.seed)
    print("CPU: every trial's measured cpu_s (stand-alone runs, one-shot scoring); each one-shot run is also charged "
          "its supernet's whole training CPU (" + ", ".join(f"{r['supernet_min']:.1f}" for r in os_) + " CPU-min)\n")
    print("| method | run | architectures evaluated | stand-alone runs | CPU-min | hypervolume of the confirmed front "
          "[95% interval over confirmation seeds] | best confirmed (MACs M, mean top-1 %) |")
    print("|---|---|---:|---:|---:|---:|---|")
    for label, dirs, rows in (("stand-alone", a.standalone, sa), ("one-shot", a.oneshot, os_)):
        for d, r in zip(dirs, rows):
            lo, hi = r["hv_interval"]
            best = "; ".join(f"{s} ({m}, {acc})" for s, m, acc in r["best"])
            print(f"| {label} | {d.parent.name}/{d.name} | {r['architectures']} | {r['runs']} | {r['cpu_min']:.1f} | "
                  f"{r['hv_confirmed']:.4f} [{lo:.4f}, {hi:.4f}] | {best} |")
    lo, hi = rnd["hv_interval"]
    print(f"| random stand-alone search replayed from the pool | {rnd['reps']} draws | {rnd['architectures']} | "
          f"{rnd['architectures'] + 3} | {rnd['cpu_min']:.1f} | {rnd['hv_median']:.4f} [{lo:.4f}, {hi:.4f}] | - |")
    hv_sa = [r["hv_confirmed"] for r in sa]
    hv_os = [r["hv_confirmed"] for r in os_]
    print("\nover search seeds (mean [Student-t 95% interval]):")
    for label, hv, rows in (("stand-alone", hv_sa, sa), ("one-shot", hv_os, os_)):
        m, lo, hi = over_seeds(hv)
        c, clo, chi = over_seeds([r["cpu_min"] for r in rows])
        print(f"  {label:11s} ({len(hv)} seeds): hypervolume {m:.4f} [{lo:.4f}, {hi:.4f}], "
              f"CPU {c:.1f} [{clo:.1f}, {chi:.1f}] min")
    wlo, whi = welch_interval(hv_sa, hv_os)
    print(f"  one-shot minus stand-alone: {np.mean(hv_os) - np.mean(hv_sa):+.4f} (Welch 95% interval "
          f"[{wlo:+.4f}, {whi:+.4f}]; exact permutation p = {permutation_p(hv_sa, hv_os):.2f})")
    print("\nconfirmed (arch_id, MACs M, mean top-1, seeds):")
    for label, dirs, rows in (("stand-alone", a.standalone, sa), ("one-shot", a.oneshot, os_)):
        for d, r in zip(dirs, rows):
            print(f"  {label} {d}:", r["confirmed"])


if __name__ == "__main__":
    main()
