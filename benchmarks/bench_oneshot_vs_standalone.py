"""Head-to-head: stand-alone search against one-shot search of the 300M region, on their confirmed fronts.

    python benchmarks/bench_oneshot_vs_standalone.py --standalone RUN_DIR --oneshot RUN_DIR --pool CHECK_DIR
                                                     [--space spaces/macs300.yaml] [--reps 2000] [--seed 0]
                                                     [--pool-space spaces/macs300_oneshot.yaml]

Reads finished runs, trains nothing:

- ``--standalone``: the run folder of ``mfsearch run`` on a stand-alone space with ``search.confirm`` (today's
  main job plus the confirmation of its top 3 front architectures with 2 seeds);
- ``--oneshot``: the run folder of ``mfsearch run spaces/macs300_oneshot.yaml`` (supernet, 1000 scored
  architectures, then the same confirmation); the supernet's training CPU is read from its cache;
- ``--pool``: a ``proxy-check --oneshot`` folder (``architectures.jsonl``, ``paper.jsonl``): seeded random
  architectures of the space, each trained stand-alone with several seeds. From these real runs a third
  method is replayed: **random stand-alone search at about the one-shot job's CPU**: train every pool
  architecture with one seed, take the top 3 of that front, confirm them with a second seed. Replayed
  ``--reps`` times over bootstrap draws of the pool's architectures and random (search seed, confirm seed)
  pairs: its median and 95% interval.

Each method is scored as ``mfsearch run`` scores a confirmation: the hypervolume (reference point: 0% top-1 and
the MAC budget) of the confirmed searched architectures' stand-alone means, beside the CPU-minutes it used
(stand-alone runs, one-shot scoring and supernet training; on a 2-core machine with both workers busy, the
wall time is about half of it).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from mfsearch.analysis import confirmed, hypervolume, pareto_front
from mfsearch.space import load_space

OBJ = [["accuracy", "maximize"], ["macs", "minimize"]]


def run_summary(run_dir: Path, rp: dict[str, float], run_cpu_s: float, reps: int, seed: int) -> dict[str, object]:
    """What one ``mfsearch run`` did: architectures it evaluated, CPU, confirmed hypervolume with an interval
    over the confirmation seeds (each confirmed architecture's seeds resampled; 2 seeds give a coarse one)."""
    df = pd.read_csv(run_dir / "results.csv")
    conf = confirmed(df)
    searched = conf[conf["source"] == "search"]
    sa = df[(df["fidelity"] == "standalone") & df["accuracy"].notna()]
    runs = len(sa.drop_duplicates(["arch_id", "seed"]))  # stand-alone runs trained (a confirm of seed 0 reuses one)
    shot = df[(df["fidelity"] == "oneshot") & (df["status"] == "trained")]
    cpu = runs * run_cpu_s + float(shot["total_s"].fillna(0).sum())
    seeds = {a: g.drop_duplicates("seed")["accuracy"].to_numpy(float)
             for a, g in df[(df["kind"] == "confirm") & df["accuracy"].notna()].groupby("arch_id")}
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(reps):
        acc = [rng.choice(seeds[a], size=len(seeds[a])).mean() for a in searched["arch_id"]]
        boot.append(hypervolume(searched.assign(accuracy=acc), OBJ, rp))
    return {"architectures": int(df[df["kind"] == "search"]["arch_id"].nunique()), "runs": runs,
            "scored": len(shot), "cpu_min": cpu / 60, "hv_confirmed": hypervolume(searched, OBJ, rp),
            "hv_interval": tuple(np.percentile(boot, [2.5, 97.5])),
            "confirmed": [(r["arch_id"], round(r["macs"] / 1e6, 1), round(r["accuracy"], 2), r["seeds"])
                          for _, r in searched.iterrows()]}


def supernet_cpu_min(run_dir: Path) -> float:
    """CPU-minutes of the supernet the one-shot run used (from its cache's checkpoint history)."""
    import torch

    cache = run_dir.absolute().parent / "supernets"
    total = 0.0
    for ck in cache.glob("*/supernet.pt"):
        hist = torch.load(ck, map_location="cpu", weights_only=False).get("history", [])
        total += sum(float(h.get("cpu_s", h.get("train_s", 0.0))) for h in hist)
    return total / 60


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
    ap.add_argument("--standalone", type=Path, required=True)
    ap.add_argument("--oneshot", type=Path, required=True)
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
    run_cpu = float(pool["cpu_s"].median())
    sa = run_summary(a.standalone, rp, run_cpu, a.reps, a.seed)
    os_ = run_summary(a.oneshot, rp, run_cpu, a.reps, a.seed)
    sn = supernet_cpu_min(a.oneshot)
    os_["cpu_min"] += sn
    rnd = replay_random(pool, macs, rp, a.reps, a.seed)
    print(f"CPU: a stand-alone run costs the pool's median {run_cpu:.0f} CPU-s; one-shot scoring its measured seconds; "
          f"the supernet {sn:.1f} CPU-min (its checkpoint history)\n")
    print("| method | architectures evaluated | stand-alone runs | CPU-min | hypervolume of the confirmed front "
          "[95% interval] |")
    print("|---|---:|---:|---:|---:|")
    for label, r in ((f"stand-alone job ({a.standalone.name})", sa), (f"one-shot job ({a.oneshot.name})", os_)):
        lo, hi = r["hv_interval"]
        print(f"| {label} | {r['architectures']} | {r['runs']} | {r['cpu_min']:.1f} | {r['hv_confirmed']:.4f} "
              f"[{lo:.4f}, {hi:.4f}] |")
    lo, hi = rnd["hv_interval"]
    print(f"| random stand-alone search replayed from the pool ({rnd['reps']} draws) | {rnd['architectures']} | "
          f"{rnd['architectures'] + 3} | {rnd['cpu_min']:.1f} | {rnd['hv_median']:.4f} [{lo:.4f}, {hi:.4f}] |")
    print("\nconfirmed (arch_id, MACs M, mean top-1, seeds):")
    print("  stand-alone:", sa["confirmed"])
    print("  one-shot:   ", os_["confirmed"])

if __name__ == "__main__":
    main()
