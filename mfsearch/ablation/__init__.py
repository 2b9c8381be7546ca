"""Ablation experiments: train every arm of a design question over several seeds and compare.

An experiment file (``experiments/*.yaml``) names a baseline model, the arms (each a set of
config changes), the seeds and the evaluation settings; ``mfsearch ablate`` trains every
(arm, seed), appends each result to ``records.jsonl`` in the run directory (a re-run skips
what is done), and writes ``report.md``, ``report.json`` and ``report.png``: per arm the MACs
and params at 224, its seeds, proxy top-1 mean +/- std, the paired difference to the baseline
with a 95% confidence interval, the minimal detectable effect at 80% power
(:mod:`mfsearch.ablation.stats`), and the paper's number where it has one.

**Seeds.** ``seeds: [0, 1, 2]`` trains every arm on exactly those seeds. ``seeds: {min: 3, max: 12,
target: 0.5}`` is adaptive, with candidate seeds 0, 1, ..., max-1 in that order:

1. every arm (the baseline too) trains seeds 0 .. min-1;
2. then, from the stored records alone, each other arm is *open* while its paired-difference 95%
   interval (seeds where both it and the baseline trained) includes 0, its half-width is more than
   ``target`` points, and it has records for fewer than ``max`` seeds (a diverged run counts as
   tried: its seed is not retried, and it pairs with nothing). An arm stops when its interval excludes
   0, or its half-width is at most ``target``, or it has tried ``max`` seeds;
3. each open arm gets its next seed, the smallest it has no record for; the baseline first trains
   every seed an open arm is about to train (and any seed another arm has that it lacks), since
   the differences are paired;
4. repeat 2-3 until no arm is open.

Which runs come next is a function of the stored records (:func:`next_runs`), so an interrupted
campaign resumes where it stopped and ends with the same runs. Stopping when the interval first
excludes 0 looks at the data after every seed: with no true effect, an arm is declared "up" or
"down" more often than the nominal 5% (``benchmarks/bench_seed_rule.py`` measures how much);
``confirm: C`` (default ``min``) lowers that: an interval that excludes 0 ends an arm only once it
has tried C seeds, before that the arm stays open.

**One evaluation.** ``evaluation: {from: ../spaces/macs300.yaml}`` takes the ``evaluation:``
section of another file (relative to the experiment file; other keys beside ``from`` override
single settings): every shipped experiment reads the settings the proxy check validated there.

**Matched budgets.** ``match_budget: true`` rescales every arm whose MACs at 224 differ from the
baseline's by more than 1% (width multiplier, then head width; :func:`match_macs`) to within 1%.
``match_budget: both`` keeps each such arm as written (where the paper compared at unequal cost) and
adds its matched twin ``<arm>_matched`` beside it; arms within 1% are never rescaled.
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

from .._utils import append_jsonl, atomic_write, finite_json, one_runner
from ..errors import InputError, RunError
from ..evaluation.settings import Evaluation, parse_evaluation
from ..fields import Ctx, float_field, int_field, load_yaml, mapping_field, no_unknown
from ..models import ConfigError, MobileFormerConfig, complexity, get_config
from ..space.parse import parse_base, parse_name
from .stats import STOP_REASONS, SeedRule, mde, paired_stats, seed_decision, t_interval

__all__ = ["DIRECTIONS", "MATCH_TOL", "STOP_REASONS", "Arm", "Experiment", "SeedRule", "arm_config",
           "arm_decisions", "collect_reports", "direction_of", "load_experiment", "match_macs", "mde", "next_runs",
           "plot_report", "read_records", "report_markdown", "rescaled", "run_dir_for", "run_experiment", "summarise",
           "summary_markdown", "t_interval", "write_report"]

DIRECTIONS = ("up", "down", "same")
MATCH_TOL = 0.01  # an arm whose MACs differ from the baseline's by more than this is rescaled when matching
MATCH_MODES = (False, True, "both")
MATCHED_SUFFIX = "_matched"


@dataclass(frozen=True)
class Arm:
    name: str
    changes: dict[str, Any]
    paper_top1: float | None = None
    match: bool = False  # rescale to the baseline's MACs when more than 1% off
    twin_of: str | None = None  # the unmatched arm this matched twin was made from (match_budget: both)


@dataclass(frozen=True)
class Experiment:
    name: str
    description: str
    base: str
    baseline: str
    arms: tuple[Arm, ...]
    seeds: tuple[int, ...]  # the seeds every arm trains: the list, or 0 .. min-1 when adaptive
    evaluation: Evaluation
    match_budget: bool | str
    paper_direction: dict[str, str]
    path: str = ""
    seed_rule: SeedRule | None = None  # adaptive seeds (``seeds: {min, max, target}``); None: a fixed list
    evaluation_from: str | None = None  # the file the evaluation settings come from, as written

    def arm(self, name: str) -> Arm:
        return next(a for a in self.arms if a.name == name)

    @property
    def max_seeds(self) -> int:
        """The most seeds an arm can get."""
        return self.seed_rule.max if self.seed_rule else len(self.seeds)

    def seeds_text(self) -> str:
        if self.seed_rule is None:
            return f"seeds {list(self.seeds)}"
        r = self.seed_rule
        confirm = f", an interval excluding 0 trusted from {r.confirm} seeds" if r.confirm > r.min else ""
        return f"adaptive seeds (min {r.min}, max {r.max}, target half-width {r.target:g} points{confirm})"


def _parse_seeds(ctx: Ctx, raw: Any) -> tuple[tuple[int, ...], SeedRule | None]:
    if isinstance(raw, dict):
        no_unknown(ctx, raw, ("min", "max", "target", "confirm"), "seeds")
        for k in ("min", "max", "target"):
            if k not in raw:
                raise ctx.err(f"seeds.{k}", "missing; adaptive seeds read {min: 3, max: 12, target: 0.5}")
        lo = int_field(ctx, raw["min"], "seeds.min", 2, 100)  # two seeds at least: an interval needs two pairs
        hi = int_field(ctx, raw["max"], "seeds.max", lo, 100)
        target = float_field(ctx, raw["target"], "seeds.target", 1e-6, 100.0)
        confirm = int_field(ctx, raw["confirm"], "seeds.confirm", lo, hi) if "confirm" in raw else lo
        return tuple(range(lo)), SeedRule(lo, hi, target, confirm)
    if not isinstance(raw, list) or not raw or len(raw) > 100:
        raise ctx.err("seeds", "must be a list of 1-100 integers, or {min: N, max: M, target: H} (adaptive)")
    seeds = tuple(int_field(ctx, s, "seeds", 0, 2**31 - 1) for s in raw)
    if len(set(seeds)) != len(seeds):
        raise ctx.err("seeds", "has repeated seeds")
    return seeds, None


def _parse_experiment_evaluation(ctx: Ctx, raw: Any) -> tuple[Evaluation, str | None]:
    """The ``evaluation:`` section (``from:`` a file plus overrides beside it, as in a space file) and that file."""
    d = mapping_field(ctx, raw, "evaluation")
    return parse_evaluation(ctx, d), d.get("from")


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
    seeds, rule = _parse_seeds(ctx, data.get("seeds", [0, 1, 2]))
    match = data.get("match_budget", False)
    if match not in MATCH_MODES or not isinstance(match, (bool, str)):
        raise ctx.err("match_budget", "must be true (rescale every arm more than 1% off the baseline's MACs), "
                      "both (keep such an arm and add its matched twin) or false")
    if match:
        arms = _with_matching(ctx, base, baseline, arms, match)
    desc = data.get("description", "")
    evaluation, ev_from = _parse_experiment_evaluation(ctx, data.get("evaluation"))
    return Experiment(name, str(desc), base, baseline, tuple(arms), seeds, evaluation, match,
                      {str(k): str(v) for k, v in direction.items()}, str(path), rule, ev_from)


def _with_matching(ctx: Ctx, base: str, baseline: str, arms: list[Arm], mode: bool | str) -> list[Arm]:
    """The arms under ``match_budget``: off-budget arms marked for rescaling (``true``) or twinned (``both``)."""
    target = _macs(get_config(base).replace(**next(a for a in arms if a.name == baseline).changes))
    out = []
    for a in arms:
        off = a.name != baseline and abs(_macs(get_config(base).replace(**a.changes)) - target) > MATCH_TOL * target
        if not off:
            out.append(a)
        elif mode == "both":
            twin = a.name + MATCHED_SUFFIX
            if any(b.name == twin for b in arms):
                raise ctx.err(f"arms.{twin}", f"match_budget: both names the matched twin of {a.name} so; "
                              "rename this arm")
            out += [a, Arm(twin, a.changes, None, match=True, twin_of=a.name)]
        else:
            out.append(dataclasses.replace(a, match=True))
    for a in out:
        if a.match:
            try:
                match_macs(get_config(base).replace(**a.changes), target)
            except ConfigError as e:
                raise ctx.err("match_budget", f"arm {a.name}: {e.rule}") from None
    return out


# ----------------------------------------------------------------------------- budget matching


def _macs(c: MobileFormerConfig, input_size: int = 224) -> int:
    return complexity(c.replace(num_classes=1000), input_size).macs


def match_macs(cfg: MobileFormerConfig, target: int, input_size: int = 224, tol: float = MATCH_TOL
               ) -> MobileFormerConfig:
    """Rescale ``cfg``'s widths (width multiplier, then head width) so its MACs are within ``tol`` of ``target``.

    Deterministic and bounded: a scan of width multipliers, then an exact solve for the head width
    (the head FC is linear in it). Raises :class:`ConfigError` if no rescaling reaches the target.
    """

    def macs(c: MobileFormerConfig) -> int:
        return _macs(c, input_size)

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
    """The config an arm trains: the base with its changes, rescaled to the baseline's MACs when it is matched
    and more than 1% off them."""
    cfg = get_config(exp.base).replace(**arm.changes)
    if arm.match or (exp.match_budget is True and arm.name != exp.baseline):
        target = _macs(get_config(exp.base).replace(**exp.arm(exp.baseline).changes))
        if abs(_macs(cfg) - target) > MATCH_TOL * target:
            cfg = match_macs(cfg, target)
    return cfg.replace(name=f"{exp.name}:{arm.name}")


def rescaled(exp: Experiment, arm: Arm) -> bool:
    """Whether :func:`arm_config` rescaled this arm's widths to the baseline's MACs."""
    cfg, raw = arm_config(exp, arm), get_config(exp.base).replace(**arm.changes)
    return cfg.width_mult != raw.width_mult or cfg.head != raw.head


# ----------------------------------------------------------------------------- which runs next


def run_dir_for(exp: Experiment, runs: str | Path | None = None) -> Path:
    from ..store import runs_dir

    return runs_dir(runs) / "ablations" / exp.name


#: what every stored run has, and what a trained one has besides (a line without them is skipped)
RUN_FIELDS = {"arm": (str,), "seed": (int,), "eval_id": (str,), "status": (str,)}
TRAINED_FIELDS = {"accuracy": (int, float), "macs": (int,), "params": (int,), "arch_id": (str,)}


def read_records(run_dir: Path) -> list[dict[str, Any]]:
    """The stored (arm, seed) records. A line cut short by a crash, damaged or hand-merged wrongly (not a
    JSON object, or without the fields a run has) is skipped, and that run is redone."""
    from ..proxycheck import NUMBER, has_fields, read_jsonl

    def whole(r: dict[str, Any]) -> bool:
        if any(k in r and not has_fields(r, {k: NUMBER}) for k in ("cpu_s", "total_s")):
            return False
        return r["status"] != "trained" or (has_fields(r, TRAINED_FIELDS) and 0 <= r["accuracy"] <= 100)

    return [r for r in read_jsonl(run_dir / "records.jsonl", RUN_FIELDS) if whole(r)]


def foreign_run(exp: Experiment, records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A stored run of one of ``exp``'s arms under its evaluation whose architecture is not what the
    experiment file now gives that arm: another file under the same ``name:``, or an edited arm. Its
    runs must not count for this one (a caller refuses); ``None`` when every run matches."""
    eval_id = exp.evaluation.eval_id()
    ids = {a.name: arm_config(exp, a).arch_id for a in exp.arms}
    for r in records:
        if r.get("eval_id") == eval_id and r["arm"] in ids and "arch_id" in r and r["arch_id"] != ids[r["arm"]]:
            return r
    return None


def check_same_experiment(exp: Experiment, records: list[dict[str, Any]], where: Path) -> None:
    """:class:`InputError` (one line) when ``records`` hold a :func:`foreign_run` of ``exp``."""
    r = foreign_run(exp, records)
    if r is not None:
        raise InputError(f"{where}: arm {r['arm']!r} of experiment {exp.name!r} was run as another architecture "
                         f"(arch_id {r['arch_id']}) than {exp.path} gives it; another file under the same name, "
                         "or an edited arm: rename the experiment (`name:`) or move those runs away")


def _run_key(r: dict[str, Any]) -> tuple[Any, Any, Any]:
    return r.get("arm"), r.get("seed"), r.get("eval_id")


def _unpublished(local: list[dict[str, Any]], published: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``local`` runs not among ``published`` (by (arm, seed, eval_id): the same key is the same run)."""
    keys = {_run_key(r) for r in published}
    return [r for r in local if _run_key(r) not in keys]


def campaign_records(run_dir: Path, results: str | Path | None = None) -> list[dict[str, Any]]:
    """The experiment's runs: those published in ``results/<experiment>/records.jsonl`` (a campaign's copy
    kept with the repository, :func:`publish`), then the ones stored in ``run_dir`` and not published.

    A run is its (arm, seed, eval_id): the same key in both places is the same run, published once. So
    a campaign continues on another machine from what was published, and trains only what is missing.
    """
    if results is None:
        return read_records(run_dir)
    published = read_records(Path(results) / run_dir.name)
    return published + _unpublished(read_records(run_dir), published)


def publish(exp: Experiment, run_dir: Path, results: str | Path, wall_s: float | None = None
            ) -> list[dict[str, Any]] | None:
    """Write the experiment's runs (:func:`campaign_records`) and its report (``report.{md,json}``, no
    plot) to ``results/<experiment>/``; ``None`` (nothing written) when no run has finished.

    The records go first, each file whole or not at all: a report there always has its runs beside it.
    Runs are only appended (:func:`~mfsearch._utils.merge_jsonl`): what the file held, a damaged line
    included, is kept byte for byte.
    """
    from .._utils import merge_jsonl

    out = Path(results) / exp.name
    local, published = read_records(run_dir), read_records(out)
    check_same_experiment(exp, local, run_dir / "records.jsonl")
    check_same_experiment(exp, published, out / "records.jsonl")
    new = _unpublished(local, published)
    rows = summarise(exp, published + new)
    if not rows:
        return None
    merge_jsonl(new, out / "records.jsonl")
    return write_report(exp, out, wall_s, rows=rows, plot=False)


def unpublished_report(exp: Experiment, results: str | Path) -> Path | None:
    """``results/<experiment>/report.json`` when it is there without the runs it summarises (no
    ``records.jsonl``, or none readable): publishing would replace it with a report of only the runs
    stored here, so the caller refuses."""
    out = Path(results) / exp.name
    return out / "report.json" if (out / "report.json").exists() and not read_records(out) else None


def _by_arm(exp: Experiment, records: list[dict[str, Any]]) -> tuple[dict[str, set[int]], dict[str, dict[int, float]]]:
    """Per arm: the seeds tried (any record under this evaluation) and the top-1 of those that trained."""
    eval_id = exp.evaluation.eval_id()
    tried: dict[str, set[int]] = {a.name: set() for a in exp.arms}
    acc: dict[str, dict[int, float]] = {a.name: {} for a in exp.arms}
    for r in records:
        if r.get("eval_id") != eval_id or r.get("arm") not in tried:
            continue
        tried[r["arm"]].add(r["seed"])
        if r.get("status") == "trained":
            acc[r["arm"]][r["seed"]] = r["accuracy"]
    return tried, acc


def _paired(acc: dict[str, dict[int, float]], arm: str, baseline: str) -> list[float]:
    """The arm's differences to the baseline on the seeds both trained, in seed order."""
    return [acc[arm][s] - acc[baseline][s] for s in sorted(acc[arm]) if s in acc[baseline]]


def arm_decisions(exp: Experiment, records: list[dict[str, Any]]) -> dict[str, str]:
    """Each non-baseline arm's :func:`~mfsearch.ablation.stats.seed_decision` from the stored records."""
    tried, acc = _by_arm(exp, records)
    return {a.name: seed_decision(_paired(acc, a.name, exp.baseline), len(tried[a.name]), exp.seed_rule)
            for a in exp.arms if a.name != exp.baseline}


def next_runs(exp: Experiment, records: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """The (arm, seed) runs to train next, in order, given the stored records; empty when the experiment is done.

    A fixed seed list: every missing (arm, seed), arm by arm. Adaptive seeds: the missing first
    ``min`` seeds seed by seed; then the baseline's missing seeds that other arms have; then one
    round of the rule in the module docstring (the baseline's new seeds first, then each open arm's
    next seed). Call again after training them: the next round depends on their results.
    """
    tried, _ = _by_arm(exp, records)
    if exp.seed_rule is None:
        return [(a.name, s) for a in exp.arms for s in exp.seeds if s not in tried[a.name]]
    first = [(a.name, s) for s in exp.seeds for a in exp.arms if s not in tried[a.name]]
    if first:
        return first
    base = exp.baseline
    others = [a.name for a in exp.arms if a.name != base]
    catch_up = sorted(set().union(*(tried[a] for a in others)) - tried[base])
    if catch_up:
        return [(base, s) for s in catch_up]
    nxt = []
    for arm, decision in arm_decisions(exp, records).items():
        if decision == "open":
            s = next(i for i in range(len(tried[arm]) + 1) if i not in tried[arm])  # fewer than max tried: < max
            nxt.append((arm, s))
    return [(base, s) for s in sorted({s for _, s in nxt} - tried[base])] + nxt


# ----------------------------------------------------------------------------- running


def run_experiment(exp: Experiment, runs: str | Path | None = None, log: Any = print,
                   results: str | Path | None = None) -> Path:
    """Train every (arm, seed) the seed rule asks for and is not yet recorded; returns the run directory.

    Each run is appended to ``records.jsonl`` as it finishes (with its CPU seconds and threads), so
    a killed campaign loses at most the run in progress; the same call resumes it. One process at a
    time per experiment (another is refused with :class:`RunError`); different experiments can run at once.
    With ``results``, the runs published there (:func:`publish`) count as done, runs another
    experiment published there are copied like those stored beside ``run_dir``, and every finished
    run is published there at once.
    """
    run_dir = run_dir_for(exp, runs)
    run_dir.mkdir(parents=True, exist_ok=True)
    with one_runner([run_dir], "mfsearch ablate"):
        return _run(exp, run_dir, log, results)


def _run(exp: Experiment, run_dir: Path, log: Any, results: str | Path | None = None) -> Path:
    import torch

    from ..evaluation.cost import cpu_seconds
    from ..evaluation.train import TrialFailed, proxy_data, train_and_evaluate
    from ..store import versions

    eval_id = exp.evaluation.eval_id()
    proxy_data(exp.evaluation)  # a missing data set fails here, before any training
    configs = {a.name: arm_config(exp, a) for a in exp.arms}
    costs = {n: complexity(c) for n, c in configs.items()}
    rounds = len(exp.arms) * exp.max_seeds + 3  # every round trains at least one new (arm, seed)
    check_same_experiment(exp, read_records(run_dir), run_dir / "records.jsonl")
    if results is not None:
        check_same_experiment(exp, read_records(Path(results) / exp.name), Path(results) / exp.name / "records.jsonl")
    for _ in range(rounds):
        todo = next_runs(exp, campaign_records(run_dir, results))
        if not todo:
            return run_dir
        elsewhere = stored_elsewhere(run_dir, results)
        for arm, seed in todo:
            cfg, cx = configs[arm], costs[arm]
            ev = dataclasses.replace(exp.evaluation, seed=seed)
            t0, c0 = time.perf_counter(), cpu_seconds()
            rec: dict[str, Any] = {"experiment": exp.name, "arm": arm, "seed": seed, "eval_id": eval_id,
                                   "config": cfg.to_dict(), "arch_id": cfg.arch_id, "macs": cx.macs,
                                   "params": cx.params, "versions": versions()}
            src = elsewhere.get((cfg.arch_id, eval_id, seed))
            if src is not None and _same_architecture(src.get("config"), rec["config"]):
                rec.update(status="trained", accuracy=src["accuracy"], history=src.get("history"),
                           train_s=src.get("train_s"), versions=src.get("versions", rec["versions"]),
                           threads=src.get("threads"), total_s=0.0, cpu_s=0.0, same_run_as=src["same_run_as"])
                append_jsonl(run_dir / "records.jsonl", rec)
                if results is not None:
                    publish(exp, run_dir, results)
                log(f"{exp.name}: {arm:<18} seed {seed}  MACs {cx.macs / 1e6:6.1f}M  top-1 {rec['accuracy']:.2f}%  "
                    f"the same run as {src['same_run_as']} (not trained again)")
                continue
            try:
                # adaptive rounds go seed by seed: keep only this seed's data in memory
                data = proxy_data(ev, only=exp.seed_rule is not None)
                res = train_and_evaluate(cfg, ev, data=data, evaluate_every_epoch=False)
                rec.update(status="trained", accuracy=res.accuracy, history=res.history,
                           train_s=round(res.train_s, 2))
            except TrialFailed as e:
                rec.update(status="failed", failure_reason=str(e))
            rec.update(total_s=round(time.perf_counter() - t0, 2), cpu_s=round(cpu_seconds() - c0, 2),
                       threads=torch.get_num_threads())
            append_jsonl(run_dir / "records.jsonl", rec)
            if results is not None:  # published at once: losing this machine loses at most the run in progress
                publish(exp, run_dir, results)
            acc = f"{rec['accuracy']:.2f}%" if "accuracy" in rec else rec.get("failure_reason")
            log(f"{exp.name}: {arm:<18} seed {seed}  MACs {cx.macs / 1e6:6.1f}M  top-1 {acc}  "
                f"{rec['total_s']:.0f}s ({rec['cpu_s'] / 60:.1f} CPU-min)")
    raise RunError(f"{run_dir / 'records.jsonl'}: runs are appended but not read back; check the file and the disk")


def stored_elsewhere(run_dir: Path, results: str | Path | None = None) -> dict[tuple[Any, Any, Any], dict[str, Any]]:
    """Trained runs that other experiments beside ``run_dir`` stored (or published in ``results``), by
    (arch_id, eval_id, seed).

    The same architecture under the same evaluation settings and seed is the same run: several
    experiments share arms (every axis's baseline is its preset as shipped), so a run another
    experiment has stored is copied (``same_run_as``: ``experiment:arm`` where it was trained) instead
    of trained again. Records are read as they stand: another experiment may be appending to them.
    """
    out: dict[tuple[Any, Any, Any], dict[str, Any]] = {}
    files = sorted(run_dir.parent.glob("*/records.jsonl"))
    files += sorted(Path(results).glob("*/records.jsonl")) if results is not None else []
    for f in files:
        if f.parent.name == run_dir.name:  # this experiment's own runs, here or published
            continue
        for r in read_records(f.parent):
            if r.get("status") != "trained" or not isinstance(r.get("accuracy"), (int, float)):
                continue
            key = (r.get("arch_id"), r.get("eval_id"), r.get("seed"))
            out.setdefault(key, {**r, "same_run_as": r.get("same_run_as") or f"{f.parent.name}:{r.get('arm')}"})
    return out


def _same_architecture(a: Any, b: dict[str, Any]) -> bool:
    """The same config whatever its name (the arm's name is not part of the architecture)."""
    return isinstance(a, dict) and {k: v for k, v in a.items() if k != "name"} == {
        k: v for k, v in b.items() if k != "name"}


# ----------------------------------------------------------------------------- reporting


def direction_of(diff: float, ci: tuple[float, float]) -> str:
    """``up`` / ``down`` when the CI excludes 0, else ``same`` (no detectable effect)."""
    if math.isnan(ci[0]):
        return "up" if diff > 0 else "down" if diff < 0 else "same"
    if ci[0] > 0:
        return "up"
    if ci[1] < 0:
        return "down"
    return "same"


def _agreement(paper: str | None, ours: str, ci: tuple[float, float] = (math.nan, math.nan),
               margin: float | None = None) -> bool | None:
    """True: same direction; False: a significant opposite (or a significant effect where the paper
    sees none); None: no paper direction, or ours is inconclusive (the CI includes 0).

    With adaptive seeds (a target half-width ``margin``), "no change" agrees only when the whole
    95% interval lies within +/- ``margin``: an interval that includes 0 but is wider says nothing.
    """
    if paper is None:
        return None
    if paper == ours:
        if paper == "same" and margin is not None and not (-margin <= ci[0] and ci[1] <= margin):
            return None
        return True
    if ours == "same":
        return None
    return False


VERDICTS = {True: "agree", False: "contradict", None: "inconclusive"}


def summarise(exp: Experiment, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-arm statistics; differences are paired by seed against the baseline arm."""
    eval_id = exp.evaluation.eval_id()
    recs = [r for r in records if r.get("eval_id") == eval_id]
    tried, by_arm = _by_arm(exp, recs)
    meta: dict[str, dict[str, Any]] = {}
    cpu: dict[str, float] = {}
    reused: dict[str, int] = {}
    for r in recs:
        cpu[r["arm"]] = cpu.get(r["arm"], 0.0) + r.get("cpu_s", r.get("total_s", 0.0))
        reused[r["arm"]] = reused.get(r["arm"], 0) + ("same_run_as" in r)
        if r.get("status") == "trained":
            meta[r["arm"]] = {"macs": r["macs"], "params": r["params"], "arch_id": r["arch_id"]}
    pending = next_runs(exp, recs)  # what the seed rule (or the fixed list) still wants
    base_macs = meta.get(exp.baseline, {}).get("macs")
    base_paper = exp.arm(exp.baseline).paper_top1
    decisions = arm_decisions(exp, recs)
    rows = []
    for arm in exp.arms:
        accs = by_arm.get(arm.name, {})
        if not accs:
            continue
        vals = [accs[s] for s in sorted(accs)]
        is_base = arm.name == exp.baseline
        st = paired_stats(_paired(by_arm, arm.name, exp.baseline))
        ci = (0.0, 0.0) if is_base else (st["ci_low"], st["ci_high"])
        ours = "baseline" if is_base else direction_of(st["diff"], ci)
        paper_arm = exp.arm(arm.twin_of) if arm.twin_of else arm
        paper_diff = (paper_arm.paper_top1 - base_paper
                      if paper_arm.paper_top1 is not None and base_paper is not None else None)
        paper_dir = exp.paper_direction.get(paper_arm.name)
        if paper_dir is None and paper_diff is not None and not is_base:
            paper_dir = "up" if paper_diff > 0 else "down" if paper_diff < 0 else "same"
        margin = exp.seed_rule.target if exp.seed_rule else None
        agree = None if is_base else _agreement(paper_dir, ours, ci, margin)
        macs = meta[arm.name]["macs"]
        rows.append({
            "experiment": exp.name, "model": exp.base, "arm": arm.name, "baseline": is_base, **meta[arm.name],
            "macs_change": (macs / base_macs - 1) if base_macs else None, "matched": rescaled(exp, arm),
            "twin_of": arm.twin_of,
            "seeds": len(vals), "seed_list": sorted(accs), "tried": len(tried[arm.name]),
            "failed": len(tried[arm.name]) - len(vals),
            "stop": "baseline" if is_base else decisions[arm.name],
            "seed_rule": exp.seed_rule.to_dict() if exp.seed_rule else None,
            "mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
            "pairs": st["n"], "diff": st["diff"], "ci_low": ci[0], "ci_high": ci[1],
            "half_width": None if is_base else st["half_width"], "sd_diff": None if is_base else st["sd_diff"],
            "mde": None if is_base else st["mde"], "ours": ours,
            "paper_top1": arm.paper_top1, "paper_diff": None if arm.twin_of else paper_diff,
            "paper_direction": None if is_base else paper_dir, "agree": agree,
            "verdict": (None if is_base or paper_dir is None
                        else "open" if decisions[arm.name] == "open" else VERDICTS[agree]),
            "cpu_s": round(cpu.get(arm.name, 0.0), 1), "reused": reused.get(arm.name, 0), "complete": not pending,
        })
    return rows


def _num(v: Any, fmt: str) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def _macs_change(r: dict[str, Any]) -> str:
    if r["baseline"]:
        return "baseline"
    ch = r.get("macs_change")
    text = "-" if ch is None else f"{ch * 100:+.1f}%"
    return f"{text} (matched)" if r.get("matched") else text


def _seeds_cell(r: dict[str, Any]) -> str:
    n = f"{r['seeds']}" + (f" (+{r['failed']} failed)" if r.get("failed") else "")
    stop = r.get("stop")
    return n if stop in (None, "fixed", "baseline") else f"{n}, {stop}"


def _diff_cell(r: dict[str, Any]) -> str:
    if r["baseline"]:
        return "-"
    return f"{_num(r['diff'], '+.2f')} [{_num(r['ci_low'], '+.2f')}, {_num(r['ci_high'], '+.2f')}]"


MDE_NOTE = ("MDE: the smallest true difference a two-sided paired t-test (alpha 0.05) over these seeds detects "
            "with 80% power, from the observed std s of the paired differences: the delta at which "
            "P(|T| > t(0.975, n-1)) = 0.8, T noncentral t with n-1 degrees of freedom and noncentrality "
            "delta*sqrt(n)/s (about (t(0.975, n-1) + t(0.8, n-1)) * s / sqrt(n)). An inconclusive arm's interval "
            "includes 0; an effect of the MDE or more would most likely have shown.")


def report_markdown(exp: Experiment, rows: list[dict[str, Any]], wall_s: float | None = None) -> str:
    ev = exp.evaluation
    match = {False: "budgets not matched", True: "arms more than 1% off the baseline's MACs rescaled to them",
             "both": "arms more than 1% off the baseline's MACs kept and also matched (`_matched`)"}[exp.match_budget]
    cpu_min = sum(r.get("cpu_s", 0.0) for r in rows) / 60
    n_reused = sum(r.get("reused", 0) for r in rows)
    src = f" (from `{exp.evaluation_from}`)" if exp.evaluation_from else ""
    lines = [f"# Ablation: {exp.name}", ""] + ([exp.description.strip(), ""] if exp.description.strip() else []) + [
             f"Baseline model `{exp.base}` (arm `{exp.baseline}`), {exp.seeds_text()}, {match}. "
             f"Proxy{src}: {ev.dataset} at {ev.image_size}x{ev.image_size}, {ev.train_size} images, "
             f"{ev.epochs} epoch(s), {ev.val_size} validation images (eval_id {ev.eval_id()}). "
             f"{cpu_min:.1f} CPU-minutes over all stored runs"
             + (f"; {n_reused} runs copied from another experiment's identical run (0 CPU)" if n_reused else "")
             + (f"; this command ran {wall_s / 60:.1f} min (wall)." if wall_s else "."), ""]
    if rows and not rows[0].get("complete", True):
        open_arms = [r["arm"] for r in rows if r.get("stop") == "open"]
        lines += ["**Unfinished:** the seed rule still wants runs"
                  + (f" (arms still open: {', '.join(open_arms)})" if open_arms else "")
                  + f"; `mfsearch ablate {exp.path}` resumes. Read an open arm's interval as provisional.", ""]
    lines += ["| arm | MACs@224 (M) | MACs vs baseline | params (M) | seeds | proxy top-1 (mean +/- std) "
             "| diff vs baseline [95% CI] | MDE 80% | ours | paper top-1 | paper diff | paper dir | verdict |",
             "|---|---:|---:|---:|---|---:|---:|---:|---|---:|---:|---|---|"]
    for r in rows:
        pt = _num(r["paper_top1"], ".1f")
        pd_ = "-" if r["baseline"] else _num(r["paper_diff"], "+.1f")
        lines.append(f"| {r['arm']} | {r['macs'] / 1e6:.1f} | {_macs_change(r)} | {r['params'] / 1e6:.2f} | "
                     f"{_seeds_cell(r)} | {r['mean']:.2f} +/- {r['std']:.2f} | {_diff_cell(r)} | "
                     f"{_num(r.get('mde'), '.2f')} | {r['ours']} | {pt} | {pd_} | "
                     f"{r['paper_direction'] or '-'} | {_verdict(r)} |")
    lines += ["", "Seeds: trained seeds per arm; with adaptive seeds, why the arm stopped ("
              + "; ".join(f"{k}: {v}" for k, v in STOP_REASONS.items() if k != "fixed") + "). " + MDE_NOTE]
    return "\n".join(lines) + "\n"


def plot_report(exp: Experiment, rows: list[dict[str, Any]], path: Path) -> Path:
    """Bar chart of each arm's mean +/- std, written to ``path`` (drawn on its own figure: no pyplot state)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(4.0, 1.1 * len(rows) + 1.5), 3.6), dpi=120)
    ax = fig.subplots()
    xs = range(len(rows))
    ax.bar(xs, [r["mean"] for r in rows], yerr=[r["std"] for r in rows], capsize=4,
           color=["C7" if r["baseline"] else "C0" for r in rows])
    ax.set_xticks(list(xs), [f"{r['arm']}\n(n={r['seeds']})" for r in rows], rotation=20, ha="right", fontsize=8)
    lo = min(r["mean"] - r["std"] for r in rows)
    hi = max(r["mean"] + r["std"] for r in rows)
    ax.set_ylim(lo - 0.5 * (hi - lo + 1), hi + 0.3 * (hi - lo + 1))
    ax.set_ylabel("proxy top-1 (%)")
    ax.set_title(f"{exp.name} ({exp.base}; mean +/- std over each arm's seeds)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return path


def write_report(exp: Experiment, run_dir: Path, wall_s: float | None = None,
                 rows: list[dict[str, Any]] | None = None, plot: bool = True) -> list[dict[str, Any]]:
    """Write ``report.{md,json,png}`` (``png`` only with ``plot``) from ``rows`` (default: :func:`summarise`
    of the stored records)."""
    rows = summarise(exp, read_records(run_dir)) if rows is None else rows
    if not rows:
        raise InputError(f"{exp.path}: no finished records in {run_dir}; run the experiment first")
    rep = {"experiment": exp.name, "base": exp.base, "eval_id": exp.evaluation.eval_id(),
           "seed_rule": exp.seed_rule.to_dict() if exp.seed_rule else None, "seeds": list(exp.seeds),
           "rows": rows, "wall_s": wall_s, "cpu_s": round(sum(r.get("cpu_s", 0.0) for r in rows), 1),
           "complete": rows[0]["complete"]}
    # each file whole or not at all: ablation-summary may read them while a campaign writes them
    atomic_write(run_dir / "report.md", lambda p: p.write_text(report_markdown(exp, rows, wall_s)))
    atomic_write(run_dir / "report.json", lambda p: p.write_text(finite_json(rep)))
    if plot:
        atomic_write(run_dir / "report.png", lambda p: plot_report(exp, rows, p))
    return rows


def collect_reports(root: str | Path) -> list[dict[str, Any]]:
    """Every ablation report under ``root`` (``runs/ablations``), flattened to rows."""
    from .._utils import read_text

    rows = []
    for f in sorted(Path(root).glob("*/report.json")):
        try:
            rep = json.loads(read_text(f, what="ablation report"))
        except json.JSONDecodeError:
            rep = None
        if not (isinstance(rep, dict) and isinstance(rep.get("rows"), list)
                and all(isinstance(r, dict) and REPORT_ROW_KEYS <= r.keys() for r in rep["rows"])):
            raise InputError(f"{f}: not an ablation report (torn or foreign); write it again with `mfsearch ablate "
                             f"experiments/{f.parent.name}.yaml --report-only`, or move it away")
        for r in rep["rows"]:
            rows.append({"model": rep.get("base"), **r, "wall_s": rep.get("wall_s")})
    return rows


#: what summary_markdown reads from every row of a report
REPORT_ROW_KEYS = frozenset({"experiment", "arm", "baseline", "seeds", "diff", "ci_low", "ci_high", "ours",
                             "paper_direction"})


def _verdict(r: dict[str, Any]) -> str:
    """The row's verdict (:func:`summarise` decides it: none for the baseline or without a paper direction)."""
    return r.get("verdict") or "-"


def _campaign_table(rows: list[dict[str, Any]]) -> str:
    """Per experiment: its runs, their CPU-minutes and whether the seed rule is done."""
    lines = ["| experiment | model | runs | CPU-min | seed rule |", "|---|---|---:|---:|---|"]
    for name in dict.fromkeys(r["experiment"] for r in rows):
        rs = [r for r in rows if r["experiment"] == name]
        runs, failed = sum(r.get("tried", r["seeds"]) for r in rs), sum(r.get("failed", 0) for r in rs)
        reused = sum(r.get("reused", 0) for r in rs)
        notes = ", ".join(([f"{failed} failed"] if failed else []) + ([f"{reused} copied"] if reused else []))
        n_open = sum(r.get("stop") == "open" for r in rs)
        done = rs[0].get("complete")
        state = ("-" if done is None else "done" if done
                 else f"unfinished ({n_open} arm(s) open)" if n_open else "unfinished")
        model = str(rs[0].get("model") or "-").removeprefix("mobile_former_")
        lines.append(f"| {name} | {model} | {runs}" + (f" ({notes})" if notes else "") + " | "
                     f"{sum(r.get('cpu_s', 0.0) for r in rs) / 60:.0f} | {state} |")
    total = sum(r.get("cpu_s", 0.0) for r in rows) / 60
    lines.append(f"| **total** | | {sum(r.get('tried', r['seeds']) for r in rows)} | {total:.0f} | |")
    return "\n".join(lines)


def summary_markdown(rows: list[dict[str, Any]]) -> str:
    """One table over all ablations: per arm its seeds, difference, MDE, our direction vs the paper's and the verdict.

    The counts at the end keep arms as the paper ran them apart from matched ones: the paper's
    claims were made at unequal MACs, a matched arm asks whether they hold at equal cost.
    """
    lines = ["| experiment | model | arm | MACs vs baseline | seeds | proxy diff vs baseline [95% CI] | MDE 80% "
             "| ours | paper | verdict |",
             "|---|---|---|---:|---|---:|---:|---|---|---|"]
    order = ("agree", "contradict", "inconclusive", "open")
    counts = {False: [0, 0, 0, 0], True: [0, 0, 0, 0]}  # matched -> a count per verdict, in that order
    for r in rows:
        if r["baseline"]:
            continue
        if r.get("verdict"):
            counts[bool(r.get("matched"))][order.index(r["verdict"])] += 1
        paper = r["paper_direction"] or "no number (hypothesis)"
        model = str(r.get("model") or "-").removeprefix("mobile_former_")
        lines.append(f"| {r['experiment']} | {model} | {r['arm']} | {_macs_change(r)} | {_seeds_cell(r)} | "
                     f"{_diff_cell(r)} | {_num(r.get('mde'), '.2f')} | {r['ours']} | {paper} | {_verdict(r)} |")
    lines.append("")
    a, c, i, o = counts[False]
    lines.append(f"Where the paper gives a direction ({a + c + i + o} arms): {a} agree, {c} contradict, "
                 f"{i} inconclusive (our 95% CI includes 0)"
                 + (f", {o} still open (more seeds to come)." if o else "."))
    a, c, i, o = counts[True]
    if a + c + i + o:
        lines.append(f"The same claims at matched MACs ({a + c + i + o} arms): {a} agree, {c} contradict, "
                     f"{i} inconclusive" + (f", {o} still open." if o else "."))
    lines += ["", _campaign_table(rows), "", MDE_NOTE]
    return "\n".join(lines) + "\n"
