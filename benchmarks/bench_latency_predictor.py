"""The latency predictor: configs per second (beside the analytic MAC count), then its accuracy.

    python benchmarks/bench_latency_predictor.py --table runs/latency_tables/macs300_onnxruntime_t1_224.json \
        [--space spaces/macs300.yaml] [--configs 50] [--seed 0] [--speed-configs 20000] [--skip-accuracy]

Speed: ``predict_latency`` over seeded configs of the space (sampled before the timed loop), printed
beside ``complexity`` (the MAC count a MAC budget costs) as a ratio. Accuracy: predicted vs measured
end-to-end latency (ONNX Runtime, the table's settings) on ``--configs`` seeded configs of the space
(seeds from ``--seed``; the table's calibration configs are refused) and the seven presets: RMSE in %,
the share within +/-10% (nn-Meter's headline metric), Spearman. Every row carries the load average.
Build the table first: ``mfsearch latency-table build --space spaces/macs300.yaml``.
"""

from __future__ import annotations

import argparse
import json
import time

from mfsearch.deploy.latency_table import (
    accuracy,
    evaluate_table,
    load_table,
    predict_latency,
    sample_space_configs,
)
from mfsearch.models import complexity, get_config, list_models
from mfsearch.space import load_space


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", required=True, help="a table from `mfsearch latency-table build`")
    ap.add_argument("--space", default="spaces/macs300.yaml")
    ap.add_argument("--configs", type=int, default=50, help="seeded space configs measured for accuracy")
    ap.add_argument("--seed", type=int, default=0, help="first seed of those configs")
    ap.add_argument("--speed-configs", type=int, default=20000, help="configs predicted in the speed test")
    ap.add_argument("--runs", type=int, default=30, help="timed runs per measured config and pass")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved passes over the measured configs")
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--json", default=None, help="also write the accuracy rows to this file")
    args = ap.parse_args()

    table = load_table(args.table)
    space = load_space(args.space)
    cfgs = [c for _, c in sample_space_configs(space, min(args.speed_configs, 2000), 10_000_000)]
    cfgs = (cfgs * (args.speed_configs // len(cfgs) + 1))[: args.speed_configs]
    for c in cfgs[:50]:  # warm: the missing-unit estimates are fitted on first use
        predict_latency(c, table)
    rates = {}
    for name, fn in (("predict_latency", lambda c: predict_latency(c, table)),
                     ("complexity (MACs)", lambda c: complexity(c, table.input_size))):
        t0 = time.perf_counter()
        for c in cfgs:
            fn(c)
        rates[name] = len(cfgs) / (time.perf_counter() - t0)
    print(f"speed ({len(cfgs)} configs of {space.name}, {table.input_size}x{table.input_size}):")
    for name, r in rates.items():
        print(f"  {name:<20}{r:>12,.0f} configs/s")
    print(f"  predict_latency / complexity: {rates['predict_latency'] / rates['complexity (MACs)']:.2f}x")
    if args.skip_accuracy:
        return
    configs = [(f"{space.name}/seed{s}", c) for s, c in sample_space_configs(space, args.configs, args.seed)]
    configs += [(p, get_config(p)) for p in list_models()]
    print(f"accuracy: {table.path} ({table.device}, {table.runtime_version}, {table.threads} thread(s), "
          f"statistic {table.statistic}, {args.rounds} interleaved passes of {args.runs} runs)")
    res = evaluate_table(table, configs, runs=args.runs, rounds=args.rounds, log=print)
    for label, rows in (("space configs", [r for r in res["rows"] if "/seed" in r["config"]]),
                        ("presets", [r for r in res["rows"] if "/seed" not in r["config"]]), ("all", res["rows"])):
        a = accuracy([r["predicted_ms"] for r in rows], [r["measured_ms"] for r in rows])
        w = accuracy([r["predicted_ms"] for r in rows], [r["wall_ms"] for r in rows])
        print(f"  {label:<14} n={a['n']:>3}  RMSE {a['rmse_pct']:5.1f}%  within +/-10% {a['within_10_pct']:5.1f}%  "
              f"Spearman {a['spearman']:.3f}  mean error {a['mean_error_pct']:+.1f}%  | vs wall clock: "
              f"RMSE {w['rmse_pct']:.1f}%, within 10% {w['within_10_pct']:.0f}%, Spearman {w['spearman']:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
