"""Plan an ablation campaign before running it: CPU-minutes per experiment and arm (``mfsearch ablate --plan``).

Every distinct arm config is timed briefly in one spawned process on one thread: ``warmup``
training steps, then ``steps`` timed ones, forward passes of a training batch (BatchNorm
recalibration) and one of a validation batch; the data preparation is timed once per
evaluation setting. One run is then ``epochs * (train_size // batch_size)`` steps +
``bn_recalibration`` recalibration batches + the validation batches; every seed adds one data
preparation (runs go seed by seed and share it). An arm costs that run ``min`` times at the
least (every arm trains the first ``min`` seeds) and ``max`` times at the most (a fixed seed
list: its length, both). CPU time is process user + system time: what the run costs a machine
whatever else runs on it (the wall clock on a shared machine is longer).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..evaluation.cost import probe_data, probe_run
from . import Experiment, arm_config, campaign_records, rescaled, run_dir_for


def run_minutes(ev: Any, probe: dict[str, float]) -> float:
    """CPU-minutes of one training run under evaluation ``ev`` from a probe's per-step costs (no data preparation)."""
    steps = ev.epochs * ((ev.train_size or 60000) // ev.batch_size)
    cpu = (steps * probe["step_s"] + ev.bn_recalibration * probe["recal_batch_s"]
           + math.ceil(ev.val_size / ev.eval_batch_size) * probe["val_batch_s"])
    return cpu / 60


def plan_campaign(exps: list[Experiment], log: Callable[[str], None] = lambda s: None, steps: int = 3,
                  warmup: int = 2, runs: str | Path | None = None, results: str | Path | None = None
                  ) -> dict[str, Any]:
    """Estimated CPU-minutes per experiment and arm at ``min`` and at ``max`` seeds, and the runs already stored
    (in ``runs``, or published in ``results``: :func:`~mfsearch.ablation.campaign_records`)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    probes: dict[tuple, dict[str, float]] = {}
    first_of: dict[tuple[str, str], str] = {}  # (arch_id, eval_id) -> the experiment:arm that trains it
    data_s: dict[tuple, float] = {}
    out: dict[str, Any] = {"method": f"{steps} timed training steps after {warmup}, one recalibration and one "
                                     "validation batch per arm config, one data preparation per setting; 1 thread, "
                                     "process CPU time", "experiments": []}
    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
        for exp in exps:
            ev = dataclasses.replace(exp.evaluation, threads=1, device="cpu")
            dkey = (ev.dataset, ev.data_root, ev.image_size, ev.train_size, ev.val_size, ev.augment)
            if dkey not in data_s:
                data_s[dkey] = pool.submit(probe_data, dataclasses.asdict(ev)).result()
            lo, hi = (exp.seed_rule.min, exp.seed_rule.max) if exp.seed_rule else (len(exp.seeds), len(exp.seeds))
            eval_id = exp.evaluation.eval_id()
            stored = [r for r in campaign_records(run_dir_for(exp, runs), results) if r.get("eval_id") == eval_id]
            arms = []
            for arm in exp.arms:
                cfg = arm_config(exp, arm)
                key = (cfg.arch_id, ev.image_size, ev.batch_size, ev.eval_batch_size)
                if key not in probes:
                    probes[key] = pool.submit(probe_run, cfg.to_dict(), dataclasses.asdict(ev), steps,
                                              warmup).result()
                    log(f"  timed {exp.name}:{arm.name} ({cfg.arch_id}) at {ev.image_size}px: "
                        f"{probes[key]['step_s']:.3f} CPU-s per training step")
                per_run = run_minutes(ev, probes[key])
                # an arm another experiment of the plan trains too is copied from there (same_run_as)
                shared = first_of.setdefault((cfg.arch_id, eval_id), f"{exp.name}:{arm.name}")
                shared = None if shared == f"{exp.name}:{arm.name}" else shared
                n_lo, n_hi = (0, 0) if shared else (lo, hi)
                arms.append({"arm": arm.name, "baseline": arm.name == exp.baseline,
                             "matched": rescaled(exp, arm), "shared_with": shared,
                             "run_minutes": round(per_run, 3), "min_minutes": round(per_run * n_lo, 2),
                             "max_minutes": round(per_run * n_hi, 2),
                             "stored": sum(1 for r in stored if r.get("arm") == arm.name)})
            data_min = data_s[dkey] / 60
            out["experiments"].append({
                "experiment": exp.name, "model": exp.base, "path": exp.path, "eval_id": eval_id,
                "evaluation_from": exp.evaluation_from, "match_budget": exp.match_budget,
                "seeds": exp.seeds_text(), "min_seeds": lo, "max_seeds": hi, "arms": arms,
                "data_minutes": round(data_min, 3),
                "min_minutes": round(sum(a["min_minutes"] for a in arms) + lo * data_min, 1),
                "max_minutes": round(sum(a["max_minutes"] for a in arms) + hi * data_min, 1),
                "stored_runs": len(stored),
                "stored_cpu_minutes": round(sum(r.get("cpu_s", r.get("total_s", 0.0)) for r in stored) / 60, 1)})
    out["min_minutes"] = round(sum(e["min_minutes"] for e in out["experiments"]), 1)
    out["max_minutes"] = round(sum(e["max_minutes"] for e in out["experiments"]), 1)
    return out


def plan_markdown(plan: dict[str, Any]) -> str:
    """The plan as two tables: per experiment (axis) and per arm."""
    lines = ["# Ablation campaign plan", "",
             f"Estimated from a short timing ({plan['method']}). A run's estimate covers training, BatchNorm "
             "recalibration and validation; every seed adds one data preparation. An arm another experiment "
             "of the plan also has (the same architecture and evaluation) is counted once, where it comes first: "
             "the later ones copy its runs.", "",
             "| axis | model | arms | matched | seeds | est. CPU-min at min seeds | at max seeds | stored runs "
             "(CPU-min) |", "|---|---|---:|---|---|---:|---:|---:|"]
    for e in plan["experiments"]:
        n_matched = sum(a["matched"] for a in e["arms"])
        matched = f"{n_matched} of {len(e['arms'])} arms" if n_matched else "-"
        lines.append(f"| {e['experiment']} | {e['model'].removeprefix('mobile_former_')} | {len(e['arms'])} | "
                     f"{matched} | {e['min_seeds']}-{e['max_seeds']} | {e['min_minutes']:.0f} | "
                     f"{e['max_minutes']:.0f} | {e['stored_runs']} ({e['stored_cpu_minutes']:.0f}) |")
    lines += [f"| **total** | | {sum(len(e['arms']) for e in plan['experiments'])} | | | "
              f"**{plan['min_minutes']:.0f}** | **{plan['max_minutes']:.0f}** | |", "",
              "| axis | arm | model | matched? | est. CPU-min per run | at min seeds | at max seeds |",
              "|---|---|---|---|---:|---:|---:|"]
    for e in plan["experiments"]:
        for a in e["arms"]:
            m = "baseline" if a["baseline"] else "yes" if a["matched"] else "no"
            at = (f"{a['min_minutes']:.1f} | {a['max_minutes']:.1f}" if not a.get("shared_with")
                  else f"0 (runs of {a['shared_with']}) | 0")
            lines.append(f"| {e['experiment']} | {a['arm']} | {e['model'].removeprefix('mobile_former_')} | {m} | "
                         f"{a['run_minutes']:.2f} | {at} |")
    return "\n".join(lines) + "\n"
