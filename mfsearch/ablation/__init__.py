"""Ablation experiments: train every arm of a design question over several seeds and compare.

An experiment file (``experiments/*.yaml``) names a baseline model, the arms (each a set of
config changes), the seeds and the evaluation settings; ``mfsearch ablate`` trains every
(arm, seed), appends each result to ``records.jsonl`` in the run directory (a re-run skips
what is done), and writes ``report.md``, ``report.json`` and ``report.png``: per arm the MACs
and params at 224, proxy top-1 mean +/- std, the paired difference to the baseline with a 95%
confidence interval, and the paper's number where it has one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..evaluation.settings import Evaluation, parse_evaluation
from ..fields import Ctx, float_field, int_field, load_yaml, mapping_field, no_unknown
from ..models import ConfigError, MobileFormerConfig, complexity, get_config
from ..space.parse import parse_base, parse_name

DIRECTIONS = ("up", "down", "same")


@dataclass(frozen=True)
class Arm:
    name: str
    changes: dict[str, Any]
    paper_top1: float | None = None


@dataclass(frozen=True)
class Experiment:
    name: str
    description: str
    base: str
    baseline: str
    arms: tuple[Arm, ...]
    seeds: tuple[int, ...]
    evaluation: Evaluation
    match_budget: bool
    paper_direction: dict[str, str]
    path: str = ""

    def arm(self, name: str) -> Arm:
        return next(a for a in self.arms if a.name == name)


def load_experiment(path: str | Path) -> Experiment:
    """Load and validate an experiment file; errors read ``file:line: field: rule``."""
    data, lines = load_yaml(path)
    ctx = Ctx(path, lines)
    if not isinstance(data, dict):
        raise ctx.err("file", "an experiment file must be a mapping")
    known = ("name", "description", "base", "baseline", "arms", "seeds", "evaluation", "match_budget", "paper")
    no_unknown(ctx, data, known, "")
    name = parse_name(ctx, data, path)
    base = parse_base(ctx, data)
    arms_raw = mapping_field(ctx, data.get("arms"), "arms")
    if len(arms_raw) < 2:
        raise ctx.err("arms", "needs at least two arms (a baseline and one alternative)")
    paper = mapping_field(ctx, data.get("paper"), "paper")
    no_unknown(ctx, paper, {"top1", "direction"}, "paper")
    top1 = mapping_field(ctx, paper.get("top1"), "paper.top1")
    direction = mapping_field(ctx, paper.get("direction"), "paper.direction")
    base_cfg = get_config(base)
    arms = []
    for arm_name, changes in arms_raw.items():
        fld = f"arms.{arm_name}"
        changes = mapping_field(ctx, changes, fld)
        try:
            base_cfg.replace(**changes)
        except ConfigError as e:
            raise ctx.err(f"{fld}.{e.field}", e.rule) from None
        except TypeError as e:
            raise ctx.err(fld, str(e)) from None
        t = top1.get(arm_name)
        if t is not None:  # a top-1 accuracy in percent
            t = float_field(ctx, t, f"paper.top1.{arm_name}", 0.0, 100.0)
        if any(a.name == str(arm_name) for a in arms):  # e.g. 1 and "1": one name once read as text
            raise ctx.err(fld, "two arms have this name; rename one")
        arms.append(Arm(str(arm_name), dict(changes), t))
    names = {a.name for a in arms}
    for k in list(top1) + list(direction):
        if k not in names:
            raise ctx.err(f"paper.{'top1' if k in top1 else 'direction'}.{k}", "names no arm")
    for k, v in direction.items():
        if v not in DIRECTIONS:
            raise ctx.err(f"paper.direction.{k}", f"must be one of {', '.join(DIRECTIONS)}")
    baseline = data.get("baseline", arms[0].name)
    if baseline not in names:
        raise ctx.err("baseline", f"names no arm; arms are {', '.join(sorted(names))}")
    seeds = data.get("seeds", [0, 1, 2])
    if not isinstance(seeds, list) or not seeds or len(seeds) > 100:
        raise ctx.err("seeds", "must be a list of 1-100 integers")
    seeds = tuple(int_field(ctx, s, "seeds", 0, 2**31 - 1) for s in seeds)
    if len(set(seeds)) != len(seeds):
        raise ctx.err("seeds", "has repeated seeds")
    match = data.get("match_budget", False)
    if not isinstance(match, bool):
        raise ctx.err("match_budget", "must be true or false")
    desc = data.get("description", "")
    evaluation = parse_evaluation(ctx, data.get("evaluation"))
    return Experiment(name, str(desc), base, baseline, tuple(arms), seeds, evaluation, match,
                      {str(k): str(v) for k, v in direction.items()}, str(path))


# ----------------------------------------------------------------------------- budget matching


def match_macs(cfg: MobileFormerConfig, target: int, input_size: int = 224, tol: float = 0.01) -> MobileFormerConfig:
    """Rescale ``cfg``'s widths (width multiplier, then head width) so its MACs are within ``tol`` of ``target``.

    Deterministic and bounded: a scan of width multipliers, then an exact solve for the head width
    (the head FC is linear in it). Raises :class:`ConfigError` if no rescaling reaches the target.
    """

    def macs(c: MobileFormerConfig) -> int:
        return complexity(c.replace(num_classes=1000), input_size).macs

    best = None
    base_mult = cfg.width_mult
    for i in range(241):
        m = round(base_mult * (0.4 + i * 0.005), 4)
        try:
            c = cfg.replace(width_mult=m)
        except ConfigError:
            continue
        gap = macs(c) - target
        if best is None or abs(gap) < abs(best[0]):
            best = (gap, c)
    if best is None:
        raise ConfigError("width_mult", "no width multiplier gives a buildable config")
    gap, c = best
    if abs(gap) <= tol * target:
        return c
    # head FC + BN1d + classifier are linear in the head width F: solve for F
    per_f = macs(c.replace(head=c.head + 1)) - macs(c)
    new_head = c.head - round(gap / per_f) if per_f else c.head
    if new_head >= 16:
        c2 = c.replace(head=int(new_head))
        if abs(macs(c2) - target) <= tol * target:
            return c2
    raise ConfigError("match_budget", f"cannot bring the MACs within {tol:.0%} of {target:,} (closest gap {gap:,})")


def arm_config(exp: Experiment, arm: Arm) -> MobileFormerConfig:
    cfg = get_config(exp.base).replace(**arm.changes)
    if exp.match_budget and arm.name != exp.baseline:
        target = complexity(get_config(exp.base).replace(**exp.arm(exp.baseline).changes)).macs
        cfg = match_macs(cfg, target)
    return cfg.replace(name=f"{exp.name}:{arm.name}")


# ----------------------------------------------------------------------------- running


def run_dir_for(exp: Experiment, runs: str | Path | None = None) -> Path:
    from ..store import runs_dir

    return runs_dir(runs) / "ablations" / exp.name


def read_records(run_dir: Path) -> list[dict[str, Any]]:
    """The stored (arm, seed) records; a line cut short by a crash is skipped and that run is redone."""
    from ..proxycheck import read_jsonl

    return read_jsonl(run_dir / "records.jsonl")


def run_experiment(exp: Experiment, runs: str | Path | None = None, log: Any = print) -> Path:
    """Train every (arm, seed) not yet recorded; returns the run directory."""
    from ..evaluation.train import TrialFailed, proxy_data, train_and_evaluate
    from ..store import versions

    run_dir = run_dir_for(exp, runs)
    run_dir.mkdir(parents=True, exist_ok=True)
    eval_id = exp.evaluation.eval_id()
    done = {(r["arm"], r["seed"]) for r in read_records(run_dir) if r.get("eval_id") == eval_id}
    proxy_data(exp.evaluation)  # a missing data set fails here, before any training
    for arm in exp.arms:
        cfg = arm_config(exp, arm)
        cx = complexity(cfg)
        for seed in exp.seeds:
            if (arm.name, seed) in done:
                continue
            ev = dataclasses.replace(exp.evaluation, seed=seed)
            t0 = time.perf_counter()
            rec: dict[str, Any] = {"experiment": exp.name, "arm": arm.name, "seed": seed, "eval_id": eval_id,
                                   "config": cfg.to_dict(), "arch_id": cfg.arch_id, "macs": cx.macs,
                                   "params": cx.params, "versions": versions()}
            try:
                res = train_and_evaluate(cfg, ev, evaluate_every_epoch=False)
                rec.update(status="trained", accuracy=res.accuracy, history=res.history,
                           train_s=round(res.train_s, 2))
            except TrialFailed as e:
                rec.update(status="failed", failure_reason=str(e))
            rec["total_s"] = round(time.perf_counter() - t0, 2)
            with open(run_dir / "records.jsonl", "a") as f:
                f.write(json.dumps(rec) + "\n")
            acc = f"{rec['accuracy']:.2f}%" if "accuracy" in rec else rec.get("failure_reason")
            log(f"{exp.name}: {arm.name:<18} seed {seed}  MACs {cx.macs / 1e6:6.1f}M  top-1 {acc}  "
                f"{rec['total_s']:.0f}s")
    return run_dir


# ----------------------------------------------------------------------------- reporting


def t_interval(diffs: list[float], level: float = 0.95) -> tuple[float, float]:
    """Student-t confidence interval of the mean of ``diffs`` (paired differences)."""
    from scipy import stats

    n = len(diffs)
    m = statistics.fmean(diffs)
    if n < 2:
        return (math.nan, math.nan)
    sd = statistics.stdev(diffs)
    h = stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return (m - h, m + h)


def direction_of(diff: float, ci: tuple[float, float]) -> str:
    """``up`` / ``down`` when the CI excludes 0, else ``same`` (no detectable effect)."""
    if math.isnan(ci[0]):
        return "up" if diff > 0 else "down" if diff < 0 else "same"
    if ci[0] > 0:
        return "up"
    if ci[1] < 0:
        return "down"
    return "same"


def _agreement(paper: str | None, ours: str) -> bool | None:
    """True: same direction; False: a significant opposite (or a significant effect where the paper
    sees none); None: no paper direction, or ours is inconclusive (the CI includes 0)."""
    if paper is None:
        return None
    if paper == ours:
        return True
    if ours == "same":
        return None
    return False


def summarise(exp: Experiment, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-arm statistics; differences are paired by seed against the baseline arm."""
    eval_id = exp.evaluation.eval_id()
    recs = [r for r in records if r.get("eval_id") == eval_id and r.get("status") == "trained"]
    by_arm: dict[str, dict[int, float]] = {}
    meta: dict[str, dict[str, Any]] = {}
    for r in recs:
        by_arm.setdefault(r["arm"], {})[r["seed"]] = r["accuracy"]
        meta[r["arm"]] = {"macs": r["macs"], "params": r["params"], "arch_id": r["arch_id"]}
    base = by_arm.get(exp.baseline, {})
    base_paper = exp.arm(exp.baseline).paper_top1
    rows = []
    for arm in exp.arms:
        accs = by_arm.get(arm.name, {})
        if not accs:
            continue
        vals = [accs[s] for s in sorted(accs)]
        paired = [accs[s] - base[s] for s in sorted(accs) if s in base]
        diff = statistics.fmean(paired) if paired else math.nan
        ci = t_interval(paired) if arm.name != exp.baseline else (0.0, 0.0)
        ours = "baseline" if arm.name == exp.baseline else direction_of(diff, ci)
        paper_diff = (arm.paper_top1 - base_paper) if (arm.paper_top1 is not None and base_paper is not None) else None
        paper_dir = exp.paper_direction.get(arm.name)
        if paper_dir is None and paper_diff is not None and arm.name != exp.baseline:
            paper_dir = "up" if paper_diff > 0 else "down" if paper_diff < 0 else "same"
        agree = _agreement(paper_dir, ours) if arm.name != exp.baseline else None
        rows.append({
            "experiment": exp.name, "arm": arm.name, "baseline": arm.name == exp.baseline, **meta[arm.name],
            "seeds": len(vals), "mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
            "diff": diff, "ci_low": ci[0], "ci_high": ci[1], "ours": ours,
            "paper_top1": arm.paper_top1, "paper_diff": paper_diff, "paper_direction": paper_dir, "agree": agree,
        })
    return rows


def report_markdown(exp: Experiment, rows: list[dict[str, Any]], wall_s: float | None = None) -> str:
    lines = [f"# Ablation: {exp.name}", "", exp.description.strip(), "",
             f"Baseline model `{exp.base}` (arm `{exp.baseline}`), seeds {list(exp.seeds)}, "
             f"{'budgets matched to the baseline MACs' if exp.match_budget else 'budgets not matched'}. "
             f"Proxy: {exp.evaluation.dataset} at {exp.evaluation.image_size}x{exp.evaluation.image_size}, "
             f"{exp.evaluation.train_size} images, {exp.evaluation.epochs} epoch(s)."
             + (f" Wall time {wall_s / 60:.1f} min." if wall_s else ""), "",
             "| arm | MACs@224 (M) | params (M) | proxy top-1 (mean +/- std) | diff vs baseline [95% CI] "
             "| ours | paper top-1 | paper diff | paper dir | agree |",
             "|---|---:|---:|---:|---:|---|---:|---:|---|---|"]
    for r in rows:
        diff = "-" if r["baseline"] else f"{r['diff']:+.2f} [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]"
        pt = "-" if r["paper_top1"] is None else f"{r['paper_top1']:.1f}"
        pd_ = "-" if r["paper_diff"] is None or r["baseline"] else f"{r['paper_diff']:+.1f}"
        agree = _agree_label(r)
        lines.append(f"| {r['arm']} | {r['macs'] / 1e6:.1f} | {r['params'] / 1e6:.2f} | {r['mean']:.2f} +/- "
                     f"{r['std']:.2f} (n={r['seeds']}) | {diff} | {r['ours']} | {pt} | {pd_} | "
                     f"{r['paper_direction'] or '-'} | {agree} |")
    return "\n".join(lines) + "\n"


def plot_report(exp: Experiment, rows: list[dict[str, Any]], path: Path) -> Path:
    """Bar chart of each arm's mean +/- std, written to ``path`` (drawn on its own figure: no pyplot state)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(4.0, 1.1 * len(rows) + 1.5), 3.6), dpi=120)
    ax = fig.subplots()
    xs = range(len(rows))
    ax.bar(xs, [r["mean"] for r in rows], yerr=[r["std"] for r in rows], capsize=4,
           color=["C7" if r["baseline"] else "C0" for r in rows])
    ax.set_xticks(list(xs), [r["arm"] for r in rows], rotation=20, ha="right", fontsize=8)
    lo = min(r["mean"] - r["std"] for r in rows)
    hi = max(r["mean"] + r["std"] for r in rows)
    ax.set_ylim(lo - 0.5 * (hi - lo + 1), hi + 0.3 * (hi - lo + 1))
    ax.set_ylabel("proxy top-1 (%)")
    ax.set_title(f"{exp.name} ({len(exp.seeds)} seeds, mean +/- std)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return path


def write_report(exp: Experiment, run_dir: Path, wall_s: float | None = None) -> list[dict[str, Any]]:
    rows = summarise(exp, read_records(run_dir))
    if not rows:
        raise InputError(f"{exp.path}: no finished records in {run_dir}; run the experiment first")
    (run_dir / "report.md").write_text(report_markdown(exp, rows, wall_s))
    (run_dir / "report.json").write_text(json.dumps({"experiment": exp.name, "base": exp.base, "rows": rows,
                                                     "wall_s": wall_s}, indent=2))
    plot_report(exp, rows, run_dir / "report.png")
    return rows


def collect_reports(root: str | Path) -> list[dict[str, Any]]:
    """Every ablation report under ``root`` (``runs/ablations``), flattened to rows."""
    rows = []
    for f in sorted(Path(root).glob("*/report.json")):
        rep = json.loads(f.read_text())
        for r in rep["rows"]:
            rows.append({**r, "wall_s": rep.get("wall_s")})
    return rows


def _agree_label(r: dict[str, Any]) -> str:
    if r["paper_direction"] is None or r["baseline"]:
        return "-"
    return {True: "yes", False: "no"}.get(r["agree"], "inconclusive")


def summary_markdown(rows: list[dict[str, Any]]) -> str:
    """One table over all ablations: our direction vs the paper's, and whether they agree."""
    lines = ["| experiment | arm | proxy diff vs baseline [95% CI] | ours | paper | agree |",
             "|---|---|---:|---|---|---|"]
    n_cmp = n_agree = n_contra = 0
    for r in rows:
        if r["baseline"]:
            continue
        agree = _agree_label(r)
        if r["paper_direction"] is not None:
            n_cmp += 1
            n_agree += r["agree"] is True
            n_contra += r["agree"] is False
        paper = r["paper_direction"] or "no number (hypothesis)"
        lines.append(f"| {r['experiment']} | {r['arm']} | {r['diff']:+.2f} [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}] "
                     f"| {r['ours']} | {paper} | {agree} |")
    lines.append("")
    lines.append(f"Where the paper gives a direction ({n_cmp} arms): {n_agree} agree, {n_contra} contradict, "
                 f"{n_cmp - n_agree - n_contra} inconclusive (our 95% CI includes 0).")
    return "\n".join(lines) + "\n"
