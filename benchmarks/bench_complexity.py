"""Analytic complexity vs fvcore tracing: time per config and the speed-up, side by side.

    python benchmarks/bench_complexity.py [--configs 10000] [--fvcore-configs 20]
"""

from __future__ import annotations

import argparse
import logging
import time

import torch
from fvcore.nn import FlopCountAnalysis

from mfsearch.models import MobileFormer, complexity, get_config
from mfsearch.models.random import random_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--configs", type=int, default=10000, help="configs counted analytically")
    ap.add_argument("--fvcore-configs", type=int, default=20, help="configs traced by fvcore")
    ap.add_argument("--input-size", type=int, default=224)
    args = ap.parse_args()
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    torch.set_num_threads(2)

    cfgs = [random_config(s) for s in range(args.configs)]  # built outside the timed loop
    t0 = time.perf_counter()
    for c in cfgs:
        complexity(c, args.input_size)
    t_an = (time.perf_counter() - t0) / len(cfgs)

    fv_cfgs = cfgs[: args.fvcore_configs] + [get_config("mobile_former_294m"), get_config("mobile_former_52m")]
    t_fv = 0.0
    mismatches = 0
    for c in fv_cfgs:
        t0 = time.perf_counter()
        model = MobileFormer(c).eval()
        fa = FlopCountAnalysis(model, torch.zeros(1, 3, args.input_size, args.input_size))
        fa.unsupported_ops_warnings(False)
        fa.uncalled_modules_warnings(False)
        total = fa.total()
        t_fv += time.perf_counter() - t0
        mismatches += int(total != complexity(c, args.input_size).macs)
    t_fv /= len(fv_cfgs)
    print(f"{'method':<12}{'configs':>10}{'s/config':>14}{'configs/s':>14}")
    print(f"{'analytic':<12}{len(cfgs):>10}{t_an:>14.2e}{1 / t_an:>14,.0f}")
    print(f"{'fvcore':<12}{len(fv_cfgs):>10}{t_fv:>14.2e}{1 / t_fv:>14,.1f}")
    print(f"speed-up analytic/fvcore: {t_fv / t_an:,.0f}x   (fvcore time includes building the model)")
    print(f"analytic == fvcore on all {len(fv_cfgs)} traced configs: {mismatches == 0}")


if __name__ == "__main__":
    main()
