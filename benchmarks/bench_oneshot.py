"""One-shot search costs beside a stand-alone trial, measured in the same run.

    python benchmarks/bench_oneshot.py [--space spaces/macs300_oneshot.yaml] [--subnets 50] [--seed 0]
                                       [--train-steps N] [--workers 2] [--skip-standalone] [--json out.json]

Prints, at one thread per process, wall and CPU seconds (on a shared, busy machine the CPU seconds
and the ratios are the steadier figures):

- supernet training: seconds per epoch of the sandwich rule (``train_supernet`` for one epoch, or
  ``--train-steps`` steps of it, scaled to an epoch);
- scoring: seconds per scored sub-network (median, min, max) over a seeded sample of sub-networks
  within the space's budget, scored by the supernet just trained (BN recalibration + validation top-1
  with the space's ``oneshot`` settings); with ``--workers 2`` also the wall time per sub-network when
  two processes of one thread score the same sample;
- one stand-alone trial: ``train_and_evaluate`` of mobile_former_294m at the space's evaluation
  settings, run between the two halves of the scoring sample so that load drift hits both alike;
- the ratio: how many sub-networks one stand-alone trial's time scores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from mfsearch.latency import cpu_name

from mfsearch.evaluation.strategies import oneshot_settings
from mfsearch.evaluation.train import proxy_data, train_and_evaluate
from mfsearch.models import MobileFormerConfig, complexity, get_config
from mfsearch.oneshot.score import score, score_data
from mfsearch.oneshot.skeleton import random_config
from mfsearch.oneshot.supernet import Supernet
from mfsearch.oneshot.train import sandwich_step, subnets_of_step, train_supernet
from mfsearch.space import load_space, within_budget

ROOT = Path(__file__).resolve().parents[1]
STANDALONE = "mobile_former_294m"
MAX_DRAWS = 100_000
BARRIER_TIMEOUT_S = 600


def sample_within_budget(space, n: int, seed: int, classes: int) -> list[MobileFormerConfig]:
    """``n`` distinct sub-networks within the budget, drawn from a seeded numpy Generator."""
    rng = np.random.default_rng(seed)
    out: dict[str, MobileFormerConfig] = {}
    for _ in range(MAX_DRAWS):
        if len(out) == n:
            break
        cfg = random_config(space, rng, classes)
        if within_budget(cfg, space.budget)[0]:
            out.setdefault(cfg.arch_id, cfg)
    return list(out.values())


def time_training(space, steps: int | None, cache: Path) -> dict:
    """Seconds per supernet epoch: one real epoch of ``train_supernet``, or ``steps`` sandwich steps scaled."""
    settings = dataclasses.replace(oneshot_settings(space), epochs=1)
    data = proxy_data(space.evaluation)
    per_epoch = len(data.train)
    if steps is None or steps >= per_epoch:
        c0 = time.process_time()
        run = train_supernet(space, cache, settings)
        return {"net": run.supernet, "steps": per_epoch, "s_per_epoch": run.train_s,
                "cpu_s_per_epoch": time.process_time() - c0, "measured_steps": per_epoch}
    torch.manual_seed(space.evaluation.seed)
    net = Supernet(space, data.num_classes).to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(net.parameters(), lr=settings.lr or space.evaluation.lr)
    batches = iter(data.train)
    t0, c0 = time.perf_counter(), time.process_time()
    for step in range(steps):
        x, y = next(batches)
        sandwich_step(net, opt, x, y, subnets_of_step(net, space, space.evaluation.seed, step, settings.subnets),
                      space.evaluation.label_smoothing)
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    return {"net": net.eval(), "steps": per_epoch, "s_per_epoch": dt / steps * per_epoch,
            "cpu_s_per_epoch": dc / steps * per_epoch, "measured_steps": steps}


def time_scores(net: Supernet, cfgs: list, sd) -> tuple[list[float], list[float], list[float]]:
    """Wall seconds, CPU seconds and top-1 of each scored sub-network."""
    times, cpu, accs = [], [], []
    for cfg in cfgs:
        t0, c0 = time.perf_counter(), time.process_time()
        accs.append(score(net, cfg, sd))
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return times, cpu, accs


_WORKER: dict = {}


def _worker_init(space_path: str, weights: str, ready: object) -> None:
    """In a fresh process of one thread: the supernet from ``weights`` and the scoring batches, once."""
    torch.set_num_threads(1)
    space = load_space(space_path)
    data = proxy_data(space.evaluation)
    net = Supernet(space, data.num_classes).to(memory_format=torch.channels_last)
    net.load_state_dict(torch.load(weights, weights_only=True))
    _WORKER.update(net=net.eval(), sd=score_data(data, oneshot_settings(space)))
    score(_WORKER["net"], net.smallest, _WORKER["sd"])  # first call: lazy kernels, caches
    ready.wait(BARRIER_TIMEOUT_S)  # type: ignore[attr-defined]


def _worker_score(cfg: dict) -> float:
    return score(_WORKER["net"], MobileFormerConfig.from_dict(cfg), _WORKER["sd"])


def time_workers(space_path: str, net: Supernet, cfgs: list, workers: int, tmp: Path) -> float:
    """Wall seconds per sub-network when ``workers`` processes score ``cfgs`` (start-up excluded)."""
    weights = tmp / "weights.pt"
    torch.save(net.state_dict(), weights)
    dicts = [c.to_dict() for c in cfgs]
    ctx = mp.get_context("spawn")
    ready = ctx.Barrier(workers + 1)
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init,
                             initargs=(space_path, str(weights), ready)) as pool:
        for _ in range(workers):  # one process is started per task waiting for a free one
            pool.submit(int)
        ready.wait(BARRIER_TIMEOUT_S)  # every process has built its supernet and scored once
        t0 = time.perf_counter()
        list(pool.map(_worker_score, dicts))
        wall = time.perf_counter() - t0
    return wall / len(cfgs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--space", default=str(ROOT / "spaces" / "macs300_oneshot.yaml"))
    ap.add_argument("--subnets", type=int, default=50, help="scored sub-networks (at least 50 for the figure)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-steps", type=int, default=None, help="time this many steps, scaled to an epoch")
    ap.add_argument("--workers", type=int, default=1, help="also time scoring in this many processes")
    ap.add_argument("--skip-standalone", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    space = load_space(args.space)
    settings = oneshot_settings(space)
    data = proxy_data(space.evaluation)
    print(f"one-shot benchmark: {args.space}; {cpu_name()}, 1 thread per process; seed {args.seed}", flush=True)
    out: dict = {"space": args.space, "seed": args.seed, "cpu": cpu_name(), "threads": 1}
    with tempfile.TemporaryDirectory() as tmp:
        tr = time_training(space, args.train_steps, Path(tmp))
        net = tr.pop("net")
        out["training"] = tr
        print(f"supernet training: {tr['s_per_epoch']:.1f} s/epoch wall, {tr['cpu_s_per_epoch']:.1f} s CPU "
              f"({tr['steps']} steps of largest + smallest + {settings.subnets} random; {tr['measured_steps']} "
              "steps measured)", flush=True)
        cfgs = sample_within_budget(space, args.subnets, args.seed, data.num_classes)
        sd = score_data(data, settings)
        calib = sum(int(x.shape[0]) for x in sd.calibration)
        score(net, cfgs[0], sd)  # first call: lazy kernels, caches
        half = len(cfgs) // 2
        times, cpu, accs = time_scores(net, cfgs[:half], sd)
        standalone = None
        if not args.skip_standalone:
            t0, c0 = time.perf_counter(), time.process_time()
            res = train_and_evaluate(get_config(STANDALONE).replace(num_classes=data.num_classes), space.evaluation,
                                     data=data)
            standalone, standalone_cpu = time.perf_counter() - t0, time.process_time() - c0
            out["standalone"] = {"model": STANDALONE, "s": standalone, "cpu_s": standalone_cpu,
                                 "accuracy": res.accuracy}
            print(f"stand-alone trial ({STANDALONE}, evaluation settings): {standalone:.1f} s wall, "
                  f"{standalone_cpu:.1f} s CPU (top-1 {res.accuracy:.1f})", flush=True)
        t2, c2, a2 = time_scores(net, cfgs[half:], sd)
        times, cpu, accs = times + t2, cpu + c2, accs + a2
        med, med_cpu = statistics.median(times), statistics.median(cpu)
        macs = [complexity(c, space.budget.input_size).macs / 1e6 for c in cfgs]
        out["scoring"] = {"subnets": len(cfgs), "median_s": med, "min_s": min(times), "max_s": max(times),
                          "median_cpu_s": med_cpu,
                          "calibration_images": calib, "val_images": sd.val_images,
                          "macs_m": [min(macs), statistics.median(macs), max(macs)],
                          "accuracy": [min(accs), statistics.median(accs), max(accs)]}
        print(f"scoring: {len(cfgs)} sub-networks within the budget ({min(macs):.0f}-{max(macs):.0f}M MACs), "
              f"median {med:.3f} s wall per sub-network (min {min(times):.3f}, max {max(times):.3f}), "
              f"{med_cpu:.3f} s CPU; {calib} recalibration + {sd.val_images} validation images", flush=True)
        if args.workers > 1:
            per = time_workers(args.space, net, cfgs, args.workers, Path(tmp))
            out["scoring"][f"wall_s_per_subnet_{args.workers}_workers"] = per
            print(f"scoring in {args.workers} processes: {per:.3f} s wall per sub-network", flush=True)
        if standalone is not None:
            ratio, ratio_cpu = standalone / med, standalone_cpu / med_cpu
            out["standalone_over_score"] = {"wall": ratio, "cpu": ratio_cpu}
            print(f"one stand-alone trial = {ratio:.0f} scored sub-networks by wall time, {ratio_cpu:.0f} by CPU "
                  f"time; 1,000 scored sub-networks = {1000 * med / 60:.1f} min wall in one process; a supernet "
                  f"epoch = {tr['s_per_epoch'] / standalone:.1f} stand-alone trials (wall), "
                  f"{tr['cpu_s_per_epoch'] / standalone_cpu:.1f} (CPU)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
