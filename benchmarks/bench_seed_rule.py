"""What the adaptive seed rule does to error rates and to the number of seeds, on simulated paired differences.

    python benchmarks/bench_seed_rule.py [--min 3] [--max 10] [--target 0.5] [--confirm 3 5] [--sd 0.5 1.0 1.5]
                                         [--reps 2000]

Each simulated arm draws its per-seed differences to the baseline from N(effect, sd) and runs
:func:`mfsearch.ablation.stats.seed_decision` after every seed, exactly as ``mfsearch ablate`` does.
Printed per (sd, true effect): how often the arm ends "up" / "down" (its interval excludes 0), how
often it stops at the target or at max, the mean number of seeds, and for comparison how often a
fixed ``min`` or ``max`` seeds would exclude 0. With no true effect the "up + down" column is the
false-positive rate: stopping as soon as the interval excludes 0 looks at the data after every seed,
so it is above the nominal 5% of one fixed-size test; ``confirm`` (an exclusion is trusted only from
that many seeds) is what brings it down, each ``--confirm`` value a block of rows on the same draws.
Seeded (``--seed``); no training.
"""

from __future__ import annotations

import argparse

import numpy as np

from mfsearch.ablation.stats import SeedRule, seed_decision, t_interval


def simulate(rule: SeedRule, effect: float, sd: float, reps: int, rng: np.random.Generator) -> dict[str, float]:
    ends = {"up": 0, "down": 0, "target": 0, "max": 0}
    seeds = []
    fixed_min = fixed_max = 0
    for _ in range(reps):
        d = rng.normal(effect, sd, size=rule.max)
        lo, hi = t_interval(list(d[:rule.min]))
        fixed_min += lo > 0 or hi < 0
        lo, hi = t_interval(list(d))
        fixed_max += lo > 0 or hi < 0
        for n in range(rule.min, rule.max + 1):
            decision = seed_decision(list(d[:n]), n, rule)
            if decision != "open":
                break
        seeds.append(n)
        if decision == "excludes 0":
            ends["up" if d[:n].mean() > 0 else "down"] += 1
        else:
            ends[decision] += 1
    return {**{k: v / reps for k, v in ends.items()}, "seeds": float(np.mean(seeds)),
            "fixed_min": fixed_min / reps, "fixed_max": fixed_max / reps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--min", type=int, default=3)
    ap.add_argument("--max", type=int, default=10)
    ap.add_argument("--target", type=float, default=0.5)
    ap.add_argument("--confirm", type=int, nargs="+", default=[3, 5],
                    help="seeds from which an interval excluding 0 ends an arm (3 = min: the first exclusion)")
    ap.add_argument("--sd", type=float, nargs="+", default=[0.5, 1.0, 1.5], help="std of the paired differences")
    ap.add_argument("--effects", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.6])
    ap.add_argument("--reps", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(f"rule: min {args.min}, max {args.max}, target +/- {args.target:g} points; {args.reps} simulated arms "
          f"per row (seed {args.seed}; every confirm value sees the same draws)\n")
    print("| confirm | sd of diffs | true effect | up | down | stop at target | stop at max | mean seeds "
          f"| fixed {args.min} seeds: excludes 0 | fixed {args.max} seeds: excludes 0 |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for confirm in args.confirm:
        rule = SeedRule(args.min, args.max, args.target, confirm)
        rng = np.random.default_rng(args.seed)
        for sd in args.sd:
            for effect in args.effects:
                r = simulate(rule, effect, sd, args.reps, rng)
                print(f"| {rule.confirm} | {sd:g} | {effect:g} | {r['up']:.3f} | {r['down']:.3f} | {r['target']:.3f} | "
                      f"{r['max']:.3f} | {r['seeds']:.2f} | {r['fixed_min']:.3f} | {r['fixed_max']:.3f} |")

if __name__ == "__main__":
    main()
