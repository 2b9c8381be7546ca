"""Which proxy settings rank architectures like ImageNet, per CPU-minute? (``proxy-check --sweep``)

A sweep file names settings, each a mapping of evaluation overrides applied to a space's
``evaluation:`` (validated like the space file), plus the seeds and the paper models::

    name: macs300
    seeds: [0, 1, 2]
    models: [mobile_former_508m, ...]     # default: all seven
    settings:
      base: {}                            # the space's own settings
      val5k: {val_size: 5000}
      base_threads2: {threads: 2}         # a thread / determinism variant of base

Each setting is an ordinary proxy check: its runs go to its own eval_id folder
(``runs/proxy-check/<space>-<eval_id>/paper.jsonl``), shared with a plain ``proxy-check`` of the
same settings, and a re-run resumes. ``threads`` and ``deterministic`` do not change the eval_id:
such a variant shares its sibling's folder, and its runs are told apart by the threads they
ran with and the deterministic flag (:func:`mfsearch.proxycheck.record_matches`).

Runs go seed-major across settings (every setting's first seed, cheapest setting first and the
thread / determinism variants last, then the next seed), so an interrupted sweep has whole seeds.
The report (``runs/proxy-check/sweep-<name>/report.{md,json}``, ``sweep.png``) gives per setting the per-seed
rank correlation with ImageNet top-1 (what one trained architecture's score is worth), the
correlation of the seed means with its seed-bootstrap interval, each model's seed std and the
CPU-minutes, and compares thread / determinism variants with their sibling run for run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._utils import finite_json
from ..errors import InputError
from ..evaluation.cost import probe_data, probe_run
from ..evaluation.settings import Evaluation, parse_evaluation
from ..fields import Ctx, int_field, load_yaml, located, mapping_field, no_unknown
from ..models import PAPER, get_config
from ..space import Space
from ..space.parse import parse_name
from . import (
    BOOTSTRAP,
    PAPER_MODELS,
    PAPER_RUN,
    Job,
    _run_jobs,
    check_dir,
    cpu_minutes,
    paper_jobs,
    rank_correlations,
    read_jsonl,
    select_records,
    summarise_paper,
)

#: The goals a setting is held to: mean per-seed Spearman, and lower end of the 95% interval of the
#: Spearman of the seed means (with at least ``GOAL_SEEDS`` whole seeds).
GOAL_PER_SEED = 0.9
GOAL_INTERVAL_LOW = 0.8
GOAL_SEEDS = 3
SETTING_NAME = r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}"


@dataclass(frozen=True)
class Setting:
    """One named evaluation setting of a sweep."""

    name: str
    overrides: dict[str, Any]
    evaluation: Evaluation

    @property
    def pinned_threads(self) -> int | None:
        """Threads fixed by the setting (a thread variant); None: chosen per worker, as a plain check does."""
        return self.evaluation.threads if "threads" in self.overrides else None

    @property
    def variant(self) -> tuple[int | None, bool]:
        return self.pinned_threads, self.evaluation.deterministic

    @property
    def is_variant(self) -> bool:
        """A thread / determinism variant (pins threads or turns deterministic algorithms on)."""
        return self.pinned_threads is not None or self.evaluation.deterministic

    def overrides_text(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.overrides.items()) or "(the space's settings)"


@dataclass(frozen=True)
class Sweep:
    name: str
    description: str
    space: Space
    settings: tuple[Setting, ...]
    seeds: tuple[int, ...]
    models: tuple[str, ...]
    path: str = ""

    def space_for(self, s: Setting) -> Space:
        return dataclasses.replace(self.space, evaluation=s.evaluation)


class _SettingCtx(Ctx):
    """Errors in a setting's evaluation point at the override in the sweep file (``settings.NAME.KEY``)."""

    def __init__(self, path: str | Path, lines: dict[str, int], name: str) -> None:
        super().__init__(path, lines)
        self.name = name

    def err(self, fld: str, rule: str) -> InputError:
        key = fld.removeprefix("evaluation.")
        return located(self.path, self.lines, f"settings.{self.name}.{key}", rule)


def model_names(names: Sequence[Any], where: Callable[[str], InputError]) -> tuple[str, ...]:
    """Paper model names, short forms (``52m``) allowed; at least three (a rank correlation)."""
    out = []
    for m in names:
        full = m if isinstance(m, str) and m.startswith("mobile_former_") else f"mobile_former_{m}"
        if full not in PAPER:
            raise where(f"unknown paper model {m!r}; choose from {', '.join(PAPER_MODELS)}")
        out.append(full)
    if len(set(out)) != len(out):
        raise where("lists a model twice")
    if len(out) < 3:
        raise where("a rank correlation needs at least 3 models")
    return tuple(out)


def load_sweep(path: str | Path, space: Space) -> Sweep:
    """Load and validate a sweep file against ``space``; errors read ``file:line: field: rule``."""
    data, lines = load_yaml(path)
    ctx = Ctx(path, lines)
    if not isinstance(data, dict):
        raise ctx.err("file", "a sweep file must be a mapping with settings:")
    no_unknown(ctx, data, ("name", "description", "seeds", "models", "settings"), "")
    name = parse_name(ctx, data, path)
    desc = data.get("description", "")
    if not isinstance(desc, str):
        raise ctx.err("description", "must be text")
    seeds = data.get("seeds", [0, 1, 2])
    if not isinstance(seeds, list) or not seeds or len(seeds) > 100:
        raise ctx.err("seeds", "must be a list of 1-100 integers")
    seeds = tuple(int_field(ctx, s, "seeds", 0, 2**31 - 1) for s in seeds)
    if len(set(seeds)) != len(seeds):
        raise ctx.err("seeds", "has repeated seeds")
    models = data.get("models", list(PAPER_MODELS))
    if not isinstance(models, list):
        raise ctx.err("models", "must be a list of paper models")
    models = model_names(models, lambda rule: ctx.err("models", rule))
    raw = mapping_field(ctx, data.get("settings"), "settings")
    if not raw:
        raise ctx.err("settings", "names no setting; give at least one (base: {} is the space's own settings)")
    base = space.raw.get("evaluation") or {}
    settings: list[Setting] = []
    seen: dict[tuple, str] = {}
    for sname, over in raw.items():
        sname = str(sname)
        if not re.fullmatch(SETTING_NAME, sname):
            raise ctx.err(f"settings.{sname}", "a setting name is 1-64 letters, digits, '_', '.', '+', '-'")
        over = mapping_field(ctx, over, f"settings.{sname}")
        ev = parse_evaluation(_SettingCtx(path, lines, sname), {**base, **over})
        s = Setting(sname, dict(over), ev)
        key = (ev.eval_id(), *s.variant)
        if key in seen:
            raise ctx.err(f"settings.{sname}", f"trains exactly what setting {seen[key]} trains; drop one")
        seen[key] = sname
        settings.append(s)
    return Sweep(name, desc, space, tuple(settings), seeds, models, str(path))


def sweep_dir(sweep: Sweep, runs: str | Path | None = None) -> Path:
    from ..store import runs_dir

    return runs_dir(runs) / "proxy-check" / f"sweep-{sweep.name}"


# ---------------------------------------------------------------------------- cost


def relative_cost(ev: Evaluation) -> float:
    """A rough cost of one run, in image-passes at 32x32 (orders settings when nothing is measured)."""
    train = (ev.train_size or 60000) * ev.epochs
    other = ev.val_size / 3 + ev.bn_recalibration * ev.batch_size / 3  # forward passes only
    return (train + other) * (ev.image_size / 32) ** 2


def estimate_costs(sweep: Sweep, log: Callable[[str], None], steps: int = 3, warmup: int = 2) -> dict[str, Any]:
    """Estimated CPU-minutes per seed of every setting, from a short timing in one 1-thread process.

    Per (model, resolution, batch sizes): ``steps`` training steps after ``warmup``, one forward
    pass of a training batch (BatchNorm recalibration) and one of a validation batch; per setting
    the data preparation. A run is then ``epochs * steps_per_epoch`` steps + recalibration +
    validation + data; augmentation's own cost is not counted (small beside a step).
    """
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    probes: dict[tuple, dict[str, float]] = {}
    data_probes: dict[tuple, float] = {}
    data_s: dict[str, float] = {}
    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
        for s in sweep.settings:  # a thread / determinism variant shares its sibling's timing
            ev = dataclasses.replace(s.evaluation, threads=1, deterministic=False)
            dkey = (ev.dataset, ev.image_size, ev.train_size, ev.val_size, ev.augment)
            if dkey not in data_probes:
                data_probes[dkey] = pool.submit(probe_data, dataclasses.asdict(ev), ev.threads or 1).result()
            data_s[s.name] = data_probes[dkey]
            for m in sweep.models:
                key = (m, ev.image_size, ev.batch_size, ev.eval_batch_size)
                if key not in probes:
                    probes[key] = pool.submit(probe_run, get_config(m).to_dict(), dataclasses.asdict(ev), steps, warmup,
                                                   ev.threads or 1).result()
                    log(f"  timed {m} at {ev.image_size}px: {probes[key]['step_s']:.2f} CPU-s per training step")
    out: dict[str, Any] = {"method": f"{steps} timed training steps after {warmup} (1 thread), one recalibration "
                                     "and one validation batch per model and resolution, data preparation per "
                                     "setting", "settings": {}}
    for s in sweep.settings:
        ev = s.evaluation
        per_model = {}
        for m in sweep.models:
            p = probes[(m, ev.image_size, ev.batch_size, ev.eval_batch_size)]
            steps_per_epoch = (ev.train_size or 60000) // ev.batch_size
            cpu = (ev.epochs * steps_per_epoch * p["step_s"] + ev.bn_recalibration * p["recal_batch_s"]
                   + math.ceil(ev.val_size / ev.eval_batch_size) * p["val_batch_s"] + data_s[s.name])
            per_model[m] = round(cpu / 60, 3)
        out["settings"][s.name] = {"per_seed_minutes": round(sum(per_model.values()), 3), "per_model": per_model,
                                   "data_s": round(data_s[s.name], 2)}
    out["per_seed_total"] = round(sum(v["per_seed_minutes"] for v in out["settings"].values()), 1)
    out["total"] = round(out["per_seed_total"] * len(sweep.seeds), 1)
    return out


def _estimates(out: Path) -> dict[str, Any] | None:
    p = out / "estimate.json"
    try:
        return json.loads(p.read_text()) if p.is_file() else None
    except json.JSONDecodeError:
        return None


def run_order(sweep: Sweep, est: dict[str, Any] | None = None) -> list[Setting]:
    """The plain settings cheapest first (by the estimate where there is one, else by :func:`relative_cost`;
    ties in file order), then the thread / determinism variants, cheapest first.

    The variants are checks, not candidates, and a run on more threads than its share of the cores
    can be many times slower on a busy machine: they do not hold up the candidates of their seed.
    """
    def cost(s: Setting) -> tuple[bool, float]:
        if est and s.name in est.get("settings", {}):
            return s.is_variant, est["settings"][s.name]["per_seed_minutes"]
        return s.is_variant, relative_cost(s.evaluation) / 1e4
    return sorted(sweep.settings, key=cost)


# ---------------------------------------------------------------------------- running


def sweep_jobs(sweep: Sweep, workers: int, runs: str | Path | None = None) -> list[Job]:
    """Every run not stored yet: seed-major across settings, in :func:`run_order` within a seed."""
    order = run_order(sweep, _estimates(sweep_dir(sweep, runs)))
    jobs: list[Job] = []
    for seed in sweep.seeds:
        for s in order:
            out = check_dir(sweep.space_for(s), runs)
            jobs += paper_jobs(sweep.space_for(s), sweep.models, [seed], out, workers, s.pinned_threads,
                               extra={"setting": s.name})
    return jobs


def run_sweep(sweep: Sweep, workers: int, log: Callable[[str], None], runs: str | Path | None = None) -> None:
    """Train what is missing, in :func:`sweep_jobs` order; every run is appended to its setting's folder."""
    for s in sweep.settings:
        out = check_dir(sweep.space_for(s), runs)
        out.mkdir(parents=True, exist_ok=True)
        if not (out / "settings.json").exists():
            (out / "settings.json").write_text(json.dumps({"space": sweep.space.path, "sweep": sweep.path,
                                                           "evaluation": dataclasses.asdict(s.evaluation),
                                                           "eval_id": s.evaluation.eval_id()}, indent=2))
    jobs = sweep_jobs(sweep, workers, runs)
    if jobs:
        log(f"sweep {sweep.name}: {len(jobs)} (setting, model, seed) runs to train with {workers} worker(s), "
            f"seed-major, cheapest setting first, thread / determinism variants last")
    cores = _cores()
    for group, w in worker_groups(jobs, workers, cores):
        if w < workers:
            log(f"  {len(group)} run(s) on {group[0][1][2]} threads each: {w} at a time on {cores} cores")
        _run_jobs(group, w, log)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def worker_groups(jobs: list[Job], workers: int, cores: int) -> list[tuple[list[Job], int]]:
    """Consecutive jobs grouped by how many may run at once: ``workers``, except that runs pinned to
    t > 1 threads (a thread variant) run at most ``cores // t`` at a time (at least one). Two 2-thread
    runs on 2 cores would each get half the cores they are pinned to, and time out or crawl."""
    groups: list[tuple[list[Job], int]] = []
    for job in jobs:
        t = job[1][2] or 1
        w = workers if t <= 1 else max(1, min(workers, cores // t))
        if groups and groups[-1][1] == w:
            groups[-1][0].append(job)
        else:
            groups.append(([job], w))
    return groups


# ---------------------------------------------------------------------------- summaries


def setting_records(sweep: Sweep, s: Setting, runs: str | Path | None = None) -> list[dict[str, Any]]:
    out = check_dir(sweep.space_for(s), runs)
    return select_records(read_jsonl(out / "paper.jsonl", PAPER_RUN), sweep.models, sweep.seeds, s.pinned_threads,
                          s.evaluation.deterministic)


def whole_seeds(records: list[dict[str, Any]], models: Sequence[str]) -> list[int]:
    """Seeds with a finished (not failed) run of every model."""
    by: dict[int, set[str]] = {}
    for r in records:
        if r.get("accuracy") is not None:
            by.setdefault(r["seed"], set()).add(r["name"])
    return sorted(sd for sd, names in by.items() if names >= set(models))


def _r(v: float, nd: int = 4) -> float | None:
    return None if v is None or not math.isfinite(v) else round(float(v), nd)


def summarise_setting(sweep: Sweep, s: Setting, records: list[dict[str, Any]],
                      est: dict[str, Any] | None = None) -> dict[str, Any]:
    """The sweep table's row of one setting, over its whole seeds."""
    seeds = whole_seeds(records, sweep.models)
    recs = [r for r in records if r["seed"] in seeds]
    row: dict[str, Any] = {"setting": s.name, "overrides": s.overrides, "eval_id": s.evaluation.eval_id(),
                           "variant": {"threads": s.pinned_threads, "deterministic": s.evaluation.deterministic},
                           "seeds_done": len(seeds), "seeds": seeds, "seeds_planned": len(sweep.seeds),
                           "runs_stored": len(records),
                           "failed": [{"model": r["name"], "seed": r["seed"], "reason": r.get("failed", "")}
                                      for r in records if r.get("accuracy") is None]}
    e = (est or {}).get("settings", {}).get(s.name)
    row["estimated_cpu_minutes_per_seed"] = e["per_seed_minutes"] if e else None
    if not seeds:
        return row
    summ = summarise_paper(recs)
    sp = [p["spearman"] for p in summ["per_seed"]]
    kt = [p["kendall"] for p in summ["per_seed"]]
    stds = [r["std"] for r in summ["rows"]]
    cpu, cpu_from = cpu_minutes(recs)
    ci = summ["interval"]
    row.update({
        "per_seed": summ["per_seed"],
        "per_seed_spearman_mean": _r(np.nanmean(sp)), "per_seed_spearman_min": _r(np.nanmin(sp)),
        "per_seed_kendall_mean": _r(np.nanmean(kt)),
        "spearman_of_means": summ["spearman"], "kendall_of_means": summ["kendall"],
        "interval": ci,
        "seed_std_mean": _r(np.mean(stds), 3) if len(seeds) > 1 else None,
        "seed_std_max": _r(np.max(stds), 3) if len(seeds) > 1 else None,
        "spread_of_means": summ["spread"],
        "models": [{k: r[k] for k in ("model", "imagenet_top1", "mean", "std")} for r in summ["rows"]],
        "cpu_minutes": round(cpu, 2), "cpu_minutes_per_seed": round(cpu / len(seeds), 2), "cpu_from": cpu_from,
        "threads_used": sorted({r.get("threads") for r in recs}, key=lambda t: (t is None, t or 0)),
    })
    low = ci["spearman"][0] if ci else float("nan")
    if len(seeds) < GOAL_SEEDS:
        row["meets_goals"] = None
    else:
        row["meets_goals"] = bool(row["per_seed_spearman_mean"] is not None
                                  and row["per_seed_spearman_mean"] >= GOAL_PER_SEED
                                  and math.isfinite(low) and low >= GOAL_INTERVAL_LOW)
    return row


def compare_variants(sweep: Sweep, s: Setting, ref: Setting, a: list[dict[str, Any]],
                     b: list[dict[str, Any]]) -> dict[str, Any]:
    """Run-for-run agreement of a thread / determinism variant with its sibling, per whole seed."""
    acc_a = {(r["name"], r["seed"]): r for r in a if r.get("accuracy") is not None}
    acc_b = {(r["name"], r["seed"]): r for r in b if r.get("accuracy") is not None}
    truth = [PAPER[m].top1 for m in sweep.models]
    seeds = sorted(set(whole_seeds(a, sweep.models)) & set(whole_seeds(b, sweep.models)))
    per = []
    for sd in seeds:
        xa = [acc_a[(m, sd)]["accuracy"] for m in sweep.models]
        xb = [acc_b[(m, sd)]["accuracy"] for m in sweep.models]
        agree_s, agree_k = rank_correlations(xa, xb)
        per.append({"seed": sd, "spearman_between": _r(agree_s), "kendall_between": _r(agree_k),
                    "max_abs_diff": round(float(np.max(np.abs(np.subtract(xa, xb)))), 4),
                    "identical": xa == xb,
                    "imagenet_spearman": _r(rank_correlations(xa, truth)[0]),
                    "reference_imagenet_spearman": _r(rank_correlations(xb, truth)[0])})
    threads = sorted({r.get("threads") for r in b if r.get("threads") is not None})
    return {"setting": s.name, "reference": ref.name, "variant": s.overrides_text(),
            "reference_threads": threads, "seeds": per}


def _reference(sweep: Sweep, s: Setting) -> Setting | None:
    """The sibling a variant is compared with: the first plain setting with its eval_id (else the first other)."""
    same = [o for o in sweep.settings if o is not s and o.evaluation.eval_id() == s.evaluation.eval_id()]
    plain = [o for o in same if not o.is_variant]
    return (plain or same or [None])[0]


def summarise_sweep(sweep: Sweep, runs: str | Path | None = None) -> dict[str, Any]:
    est = _estimates(sweep_dir(sweep, runs))
    recs = {s.name: setting_records(sweep, s, runs) for s in sweep.settings}
    rows = [summarise_setting(sweep, s, recs[s.name], est) for s in sweep.settings]
    checks = []
    for s in sweep.settings:
        ref = _reference(sweep, s) if s.is_variant else None
        if ref is not None:
            checks.append(compare_variants(sweep, s, ref, recs[s.name], recs[ref.name]))
    return {"sweep": sweep.name, "space": sweep.space.path, "sweep_file": sweep.path, "seeds": list(sweep.seeds),
            "models": list(sweep.models), "goals": {"per_seed_spearman_mean": GOAL_PER_SEED,
                                                    "interval_low": GOAL_INTERVAL_LOW, "seeds": GOAL_SEEDS},
            "bootstrap": {"reps": BOOTSTRAP, "resampled": "seeds within each model"},
            "rows": rows, "variant_checks": checks, "estimate": est}


def _f(v: Any, fmt: str = ".3f") -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, fmt)


def _goal(r: dict[str, Any]) -> str:
    if r.get("meets_goals") is None:
        return f"pending ({r['seeds_done']}/{GOAL_SEEDS} seeds)"
    return "yes" if r["meets_goals"] else "no"


def sweep_markdown(summary: dict[str, Any]) -> str:
    est = summary.get("estimate")
    g = summary["goals"]
    lines = [f"# Proxy sweep: {summary['sweep']}", "",
             f"Space {summary['space']}, sweep file {summary['sweep_file']}; models "
             f"{', '.join(m.replace('mobile_former_', '') for m in summary['models'])}; seeds {summary['seeds']}.",
             "Per-seed: the rank correlation of one seed's proxy top-1 with ImageNet top-1 (what a single trained "
             "architecture's score is worth). Of means: the correlation of the seed means, with its 95% interval "
             f"({summary['bootstrap']['reps']} draws resampling each model's seeds). Goals: per-seed Spearman mean "
             f">= {g['per_seed_spearman_mean']} and a lower interval end >= {g['interval_low']} over "
             f"{g['seeds']} seeds. Only whole seeds (every model trained) count; runs: all stored so far.", "",
             "| setting | overrides | seeds done | per-seed Spearman mean (min) | per-seed Kendall mean | "
             "Spearman of means [95%] | Kendall of means | seed std mean / max | CPU-min total | CPU-min / seed | "
             "est. CPU-min / seed | meets goals |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in summary["rows"]:
        ci = r.get("interval")
        sp = _f(r.get("spearman_of_means")) + (f" [{ci['spearman'][0]:.2f}, {ci['spearman'][1]:.2f}]" if ci else "")
        over = ", ".join(f"{k}={v}" for k, v in r["overrides"].items()) or "-"
        lines.append(
            f"| {r['setting']} | {over} | {r['seeds_done']}/{r['seeds_planned']} ({r['runs_stored']} runs) | "
            f"{_f(r.get('per_seed_spearman_mean'))} ({_f(r.get('per_seed_spearman_min'))}) | "
            f"{_f(r.get('per_seed_kendall_mean'))} | {sp if r['seeds_done'] else '-'} | "
            f"{_f(r.get('kendall_of_means'))} | "
            f"{_f(r.get('seed_std_mean'), '.2f')} / {_f(r.get('seed_std_max'), '.2f')} | "
            f"{_f(r.get('cpu_minutes'), '.1f')} | {_f(r.get('cpu_minutes_per_seed'), '.1f')} | "
            f"{_f(r.get('estimated_cpu_minutes_per_seed'), '.1f')} | {_goal(r)} |")
    old = sorted({r["setting"] for r in summary["rows"] if r.get("cpu_from", "cpu_s") != "cpu_s"})
    if old:
        lines += ["", f"CPU-minutes of {', '.join(old)} include runs stored without cpu_s: their wall time is used."]
    failed = [(r["setting"], f) for r in summary["rows"] for f in r["failed"]]
    if failed:
        lines += ["", "Failed runs (their seed is left out): " + "; ".join(
            f"{s}: {f['model']} seed {f['seed']} ({f['reason']})" for s, f in failed) + "."]
    if est:
        lines += ["", f"Estimate before running ({est['method']}): {est['per_seed_total']:.0f} CPU-minutes per seed "
                      f"for all settings, {est['total']:.0f} for the sweep."]
    if summary["variant_checks"]:
        lines += ["", "## Thread / determinism check", "",
                  "Each variant against its sibling setting (same eval_id), run for run: the rank agreement of "
                  "the two runs' top-1 over the models, the largest top-1 difference, and each one's per-seed "
                  "Spearman with ImageNet.", "",
                  "| variant | against | reference threads | seed | Spearman between | Kendall between | "
                  "max abs top-1 diff | identical | Spearman vs ImageNet (variant / reference) |",
                  "|---|---|---|---:|---:|---:|---:|---|---|"]
        for c in summary["variant_checks"]:
            if not c["seeds"]:
                lines.append(f"| {c['setting']} ({c['variant']}) | {c['reference']} | - | - | - | - | - | - | "
                             "no whole seed in both yet |")
            for p in c["seeds"]:
                lines.append(f"| {c['setting']} ({c['variant']}) | {c['reference']} | "
                             f"{','.join(map(str, c['reference_threads'])) or '-'} | {p['seed']} | "
                             f"{_f(p['spearman_between'])} | {_f(p['kendall_between'])} | {p['max_abs_diff']:.2f} | "
                             f"{'yes' if p['identical'] else 'no'} | {_f(p['imagenet_spearman'])} / "
                             f"{_f(p['reference_imagenet_spearman'])} |")
    lines += ["", "## Per model (seed means +/- std)", "",
              "| setting | " + " | ".join(m.replace("mobile_former_", "") for m in summary["models"]) + " |",
              "|---|" + "---:|" * len(summary["models"])]
    for r in summary["rows"]:
        by = {m["model"]: m for m in r.get("models", [])}
        lines.append(f"| {r['setting']} | " + " | ".join(
            f"{by[m]['mean']:.2f} +/- {by[m]['std']:.2f}" if m in by else "-" for m in summary["models"]) + " |")
    return "\n".join(lines) + "\n"


def estimate_markdown(sweep: Sweep, est: dict[str, Any]) -> str:
    lines = [f"Estimated CPU-minutes ({est['method']}):", "",
             "| setting | overrides | CPU-min / seed | CPU-min, all seeds |", "|---|---|---:|---:|"]
    for s in run_order(sweep, est):
        e = est["settings"][s.name]
        lines.append(f"| {s.name} | {s.overrides_text()} | {e['per_seed_minutes']:.1f} | "
                     f"{e['per_seed_minutes'] * len(sweep.seeds):.1f} |")
    lines.append(f"| total | | {est['per_seed_total']:.1f} | {est['total']:.1f} |")
    return "\n".join(lines) + "\n"


def plot_sweep(summary: dict[str, Any], path: Path) -> Path | None:
    """Per-seed Spearman (each seed, and the mean) against CPU-minutes per seed, one point per setting."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    rows = [r for r in summary["rows"] if r.get("per_seed")]
    if not rows:
        return None
    fig = Figure(figsize=(7, 4.6))
    ax = fig.subplots()
    for i, r in enumerate(rows):
        x = r["cpu_minutes_per_seed"]
        ys = [p["spearman"] for p in r["per_seed"]]
        ax.scatter([x] * len(ys), ys, s=14, color=f"C{i % 10}", alpha=0.45, zorder=2)
        ax.scatter([x], [r["per_seed_spearman_mean"]], s=60, color=f"C{i % 10}", edgecolor="k", zorder=3)
        ax.annotate(r["setting"], (x, r["per_seed_spearman_mean"]), textcoords="offset points", xytext=(5, 3),
                    fontsize=7)
    ax.axhline(GOAL_PER_SEED, color="0.5", ls="--", lw=0.8)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    ax.set_xlabel("CPU-minutes per seed (all models)")
    ax.set_ylabel("per-seed Spearman with ImageNet top-1")
    ax.set_title(f"proxy sweep {summary['sweep']}: each seed (light) and the mean", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def write_sweep_report(sweep: Sweep, runs: str | Path | None = None) -> tuple[str, Path]:
    """report.md, report.json and sweep.png of what is stored; the markdown and the folder."""
    out = sweep_dir(sweep, runs)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarise_sweep(sweep, runs)
    text = sweep_markdown(summary)
    (out / "report.md").write_text(text)
    (out / "report.json").write_text(finite_json(summary))
    plot_sweep(summary, out / "sweep.png")
    return text, out
