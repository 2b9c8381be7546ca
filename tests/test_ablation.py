"""Ablation experiments: files, budget matching, statistics, adaptive seeds, the plan, a real tiny run with resume."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from mfsearch import complexity, get_config
from mfsearch._utils import append_jsonl
from mfsearch.ablation import (
    arm_config,
    arm_decisions,
    direction_of,
    load_experiment,
    match_macs,
    next_runs,
    read_records,
    rescaled,
    run_experiment,
    summarise,
    summary_markdown,
    t_interval,
)
from mfsearch.ablation.plan import plan_campaign, plan_markdown
from mfsearch.ablation.stats import SeedRule, mde, permutation_p, seed_decision, welch_interval
from mfsearch.errors import InputError, RunError
from mfsearch.space import load_space

ROOT = Path(__file__).parent.parent
EXPERIMENTS = sorted((ROOT / "experiments").glob("*.yaml"))
AXES = {"components", "activation", "tokens", "token_width", "bridge_heads", "projections", "bridges", "ffn",
        "arrangement"}
PAPER_AXES = ("components", "activation", "tokens")  # the axes with paper numbers: also on 294M
TINY_EVAL = "evaluation: {image_size: 16, epochs: 1, train_size: 300, val_size: 100, batch_size: 50, threads: 1}\n"


def _macs(cfg):
    return complexity(cfg.replace(num_classes=1000)).macs


# ----------------------------------------------------------------------------- shipped files


def test_every_axis_has_an_experiment_and_all_arms_build():
    names = set()
    for f in EXPERIMENTS:
        exp = load_experiment(f)
        names.add(exp.name)
        assert len(exp.seeds) >= 3
        for arm in exp.arms:
            complexity(arm_config(exp, arm))
    assert AXES <= names


def test_shipped_experiments_take_the_validated_evaluation_from_one_place():
    macs300 = load_space(ROOT / "spaces" / "macs300.yaml").evaluation
    for f in EXPERIMENTS:
        raw = yaml.safe_load(f.read_text())
        assert raw["evaluation"] == {"from": "../spaces/macs300.yaml"}, f.name  # nothing set beside it
        exp = load_experiment(f)
        assert exp.evaluation == macs300 and exp.evaluation_from == "../spaces/macs300.yaml", f.name
        assert exp.seed_rule == SeedRule(3, 10, 0.5, confirm=5), f.name  # every axis adapts its seeds


def test_the_committed_summary_tables_are_what_the_committed_reports_give():
    from mfsearch.ablation import collect_reports

    results = ROOT / "experiments" / "results"
    rows = collect_reports(results)
    names = {r["experiment"] for r in rows}
    assert {p.stem for p in EXPERIMENTS} <= names  # every shipped axis has a committed report
    want = summary_markdown(rows).strip()
    assert (results / "SUMMARY.md").read_text().strip().endswith(want)
    for doc in (ROOT / "README.md", ROOT / "experiments" / "README.md"):
        text = doc.read_text()
        begin, end = "<!-- ablation-summary: begin -->", "<!-- ablation-summary: end -->"
        assert begin in text and end in text, doc
        assert text.split(begin)[1].split(end)[0].strip() == want, f"{doc}: regenerate (experiments/README.md)"


def test_paper_axes_also_run_on_294m_with_the_same_arms_and_numbers():
    exps = {e.name: e for e in map(load_experiment, EXPERIMENTS)}
    for axis in PAPER_AXES:
        small, big = exps[axis], exps[f"{axis}_294m"]
        assert small.base == "mobile_former_52m" and big.base == "mobile_former_294m"
        def written(e):  # the arms of the file (matched twins depend on each model's MACs)
            return {a.name: (a.changes, a.paper_top1) for a in e.arms if not a.twin_of}

        assert {k: v[1] for k, v in written(small).items()} == {k: v[1] for k, v in written(big).items()}
        assert any(a.changes == {} for a in big.arms)  # the paper model itself is an arm
    for name, exp in exps.items():  # every other axis says why it keeps 52M
        if exp.base == "mobile_former_52m" and name not in PAPER_AXES:
            assert "Why 52M" in Path(exp.path).read_text(), name


def test_shipped_arms_off_budget_are_matched_and_paper_arms_kept_as_written():
    for f in EXPERIMENTS:
        exp = load_experiment(f)
        target = _macs(arm_config(exp, exp.arm(exp.baseline)))
        for arm in exp.arms:
            macs = _macs(arm_config(exp, arm))
            if arm.match or exp.match_budget is True:
                assert abs(macs - target) <= 0.01 * target, (exp.name, arm.name)
            elif abs(macs - target) > 0.01 * target:  # an unmatched off-budget arm has its matched twin beside it
                assert exp.match_budget == "both" and exp.arm(arm.name + "_matched").twin_of == arm.name
        if exp.paper_direction or any(a.paper_top1 is not None for a in exp.arms):
            assert exp.match_budget == "both", exp.name  # the paper compared at unequal cost: keep those arms


# ----------------------------------------------------------------------------- budget matching


def test_match_budget_within_one_percent():
    exp = load_experiment(next(f for f in EXPERIMENTS if f.stem == "components"))
    target = _macs(arm_config(exp, exp.arm(exp.baseline)))
    twins = [a for a in exp.arms if a.twin_of]
    assert [a.name for a in twins] == ["former_bridges_relu_matched", "former_bridges_dyrelu_matched"]
    for arm in twins:
        assert abs(_macs(arm_config(exp, arm)) - target) <= 0.01 * target and rescaled(exp, arm)
        assert _macs(arm_config(exp, exp.arm(arm.twin_of))) > 1.1 * target and not rescaled(exp, exp.arm(arm.twin_of))
        assert arm.paper_top1 is None and exp.arm(arm.twin_of).paper_top1 is not None
    target = _macs(get_config("mobile_former_52m"))
    full = get_config("mobile_former_52m").replace(projections="full")
    assert _macs(full) > 1.2 * target  # far off before matching
    assert abs(_macs(match_macs(full, target)) - target) <= 0.01 * target


def test_match_true_leaves_arms_within_one_percent_alone(tmp_path):
    f = tmp_path / "e.yaml"
    f.write_text("name: e\nbase: mobile_former_52m\nmatch_budget: true\narms:\n  a: {}\n  b: {activation: relu}\n"
                 "  c: {projections: full}\n")
    exp = load_experiment(f)
    assert [a.name for a in exp.arms] == ["a", "b", "c"]  # true: no twins
    assert not rescaled(exp, exp.arm("b")) and rescaled(exp, exp.arm("c"))  # relu: -0.6% MACs


@pytest.mark.parametrize("text,pattern", [
    ("match_budget: maybe\narms:\n  a: {}\n  b: {}\n", r"match_budget: must be true .* both .* or false"),
    ("match_budget: both\narms:\n  a: {}\n  b: {projections: full}\n  b_matched: {}\n",
     r"arms.b_matched: match_budget: both names the matched twin of b so"),
])
def test_bad_match_budget(tmp_path, text, pattern):
    f = tmp_path / "e.yaml"
    f.write_text("name: e\nbase: mobile_former_52m\n" + text)
    with pytest.raises(InputError, match=pattern):
        load_experiment(f)


# ----------------------------------------------------------------------------- evaluation from one file


def test_evaluation_from_another_file_with_overrides(tmp_path, tiny_space):
    space = tiny_space(tmp_path, evaluation={"epochs": 3, "val_size": 200})
    (tmp_path / "exp").mkdir()
    f = tmp_path / "exp" / "e.yaml"
    f.write_text(f"name: e\narms:\n  a: {{}}\n  b: {{}}\nevaluation: {{from: ../{space.name}}}\n")
    exp = load_experiment(f)
    assert exp.evaluation == load_space(space).evaluation and exp.evaluation.epochs == 3
    f.write_text(f"name: e\narms:\n  a: {{}}\n  b: {{}}\nevaluation: {{from: ../{space.name}, epochs: 1}}\n")
    exp = load_experiment(f)
    assert exp.evaluation.epochs == 1 and exp.evaluation.val_size == 200


@pytest.mark.parametrize("ref,text,pattern", [
    ("missing.yaml", None, r":5: evaluation.from: .*missing.yaml: no such file"),
    ("ref.yaml", "name: x\n", r"evaluation.from: .*ref.yaml has no evaluation: section"),
    ("ref.yaml", "evaluation: {from: other.yaml}\n", r"evaluation.from: .*takes its evaluation from another file"),
    ("ref.yaml", "evaluation:\n  epochs: zero\n", r"ref.yaml:2: evaluation.epochs: must be an integer"),
    ("", None, r"evaluation.from: must be the path of a file"),
])
def test_bad_evaluation_from(tmp_path, ref, text, pattern):
    if text is not None:
        (tmp_path / ref).write_text(text)
    f = tmp_path / "e.yaml"
    f.write_text(f"name: e\narms:\n  a: {{}}\n  b: {{}}\nevaluation: {{from: '{ref}'}}\n")
    with pytest.raises(InputError, match=pattern):
        load_experiment(f)


# ----------------------------------------------------------------------------- statistics


def test_statistics():
    lo, hi = t_interval([1.0, 2.0, 3.0])
    assert lo == pytest.approx(2 - 4.302653 * 1 / 3**0.5, rel=1e-5) and hi == pytest.approx(4 - lo)
    assert direction_of(2.0, (0.5, 3.5)) == "up"
    assert direction_of(-2.0, (-3.5, -0.5)) == "down"
    assert direction_of(0.3, (-1.0, 1.6)) == "same"


@pytest.mark.parametrize("d,n", [(0.8, 15), (0.5, 34), (0.2, 199)])
def test_mde_matches_textbook_sample_sizes(d, n):
    """Paired / one-sample t-test, two-sided alpha 0.05, power 0.8: an effect of d standard deviations needs
    n = 15 / 34 / 199 pairs (Cohen's tables; G*Power's exact noncentral-t answer): so the MDE reaches d at n
    and not at n - 1."""
    assert mde(1.0, n) <= d < mde(1.0, n - 1)
    assert mde(2.5, n) == pytest.approx(2.5 * mde(1.0, n))  # in the unit of the std


def test_mde_against_simulation_and_the_normal_approximation():
    rng = np.random.default_rng(0)
    from scipy import stats

    for n, sd in ((3, 1.3), (5, 0.7), (10, 2.0)):
        delta = mde(sd, n)
        x = rng.normal(delta, sd, size=(40_000, n))
        t = x.mean(1) / (x.std(1, ddof=1) / math.sqrt(n))
        power = float(np.mean(np.abs(t) > stats.t.ppf(0.975, n - 1)))
        assert power == pytest.approx(0.8, abs=0.01), (n, power)  # 5 standard errors of the simulated rate
    # many pairs: the normal approximation (z_0.975 + z_0.8) * sd / sqrt(n)
    assert mde(1.0, 2000) == pytest.approx((1.959964 + 0.841621) / math.sqrt(2000), rel=2e-3)
    assert math.isnan(mde(1.0, 1)) and mde(0.0, 5) == 0.0


def test_summarise_pairs_by_seed_and_compares_with_paper(tmp_path):
    f = tmp_path / "e.yaml"
    f.write_text("name: e\nbase: mobile_former_52m\nbaseline: a\nseeds: [0, 1, 2]\narms:\n  a: {}\n"
                 "  b: {activation: relu}\n  c: {ffn: false}\npaper:\n  top1: {a: 77.9, b: 76.9}\n"
                 "  direction: {c: same}\n")
    exp = load_experiment(f)
    eid = exp.evaluation.eval_id()
    recs = []
    for arm, accs in {"a": [80, 81, 82], "b": [78, 79.5, 80], "c": [80.5, 80, 83]}.items():
        for seed, acc in enumerate(accs):
            recs.append({"arm": arm, "seed": seed, "eval_id": eid, "status": "trained", "accuracy": acc,
                         "macs": 1, "params": 1, "arch_id": arm, "cpu_s": 30.0})
    rows = {r["arm"]: r for r in summarise(exp, recs)}
    assert rows["b"]["diff"] == pytest.approx(-5.5 / 3)
    assert rows["b"]["ours"] == "down" and rows["b"]["paper_direction"] == "down" and rows["b"]["agree"] is True
    assert rows["b"]["verdict"] == "agree" and rows["b"]["seed_list"] == [0, 1, 2] and rows["b"]["stop"] == "fixed"
    diffs = [-2.0, -1.5, -2.0]
    assert rows["b"]["sd_diff"] == pytest.approx(np.std(diffs, ddof=1))
    assert rows["b"]["mde"] == pytest.approx(mde(np.std(diffs, ddof=1), 3))
    assert rows["c"]["ours"] == "same" and rows["c"]["agree"] is True  # a fixed list: "same" as before
    assert rows["a"]["std"] == pytest.approx(1.0) and rows["a"]["mde"] is None and rows["a"]["cpu_s"] == 90.0
    text = summary_markdown(list(rows.values()))
    assert "(2 arms): 2 agree, 0 contradict, 0 inconclusive" in text
    assert "| e | 52m | b | +0.0% | 3 | -1.83 [-2.55, -1.12] | 0.94 | down | down | agree |" in text
    assert "noncentral t" in text


def test_same_needs_the_interval_inside_the_target_and_verdict_words(tmp_path):
    f = tmp_path / "e.yaml"
    f.write_text("name: e\nbase: mobile_former_52m\nbaseline: a\nseeds: {min: 3, max: 4, target: 0.5}\narms:\n"
                 "  a: {}\n  narrow: {}\n  wide: {}\n  opposite: {}\n"
                 "paper:\n  direction: {narrow: same, wide: same, opposite: up}\n")
    exp = load_experiment(f)
    eid = exp.evaluation.eval_id()
    accs = {"a": [80, 81, 82, 80], "narrow": [80.1, 80.9, 82.1, 80], "wide": [81, 80, 84, 79],
            "opposite": [78, 79, 80, 78]}
    recs = [{"arm": a, "seed": s, "eval_id": eid, "status": "trained", "accuracy": v, "macs": 1, "params": 1,
             "arch_id": a} for a, vs in accs.items() for s, v in enumerate(vs)]
    rows = {r["arm"]: r for r in summarise(exp, recs)}
    assert rows["narrow"]["ours"] == "same" and rows["narrow"]["verdict"] == "agree"
    assert rows["narrow"]["half_width"] < 0.5 and rows["narrow"]["stop"] == "target"
    assert rows["wide"]["ours"] == "same" and rows["wide"]["verdict"] == "inconclusive"  # +/- 3 points says nothing
    assert rows["wide"]["stop"] == "max"
    assert rows["opposite"]["ours"] == "down" and rows["opposite"]["verdict"] == "contradict"
    assert rows["opposite"]["stop"] == "excludes 0"


# ----------------------------------------------------------------------------- adaptive seeds


def _synthetic(tmp_path, seeds="{min: 3, max: 8, target: 0.5}"):
    f = tmp_path / "e.yaml"
    f.write_text(f"name: e\nbase: mobile_former_52m\nbaseline: base\nseeds: {seeds}\narms:\n  base: {{}}\n"
                 "  clear: {activation: relu}\n  noisy: {activation: relu6}\n  flat: {activation: prelu}\n"
                 "  diverges: {ffn: false}\n")
    return load_experiment(f)


#: synthetic arms: (true difference to the baseline, std of the arm's own seed noise), in points
ARMS = {"base": (0.0, 0.05), "clear": (3.0, 0.3), "noisy": (0.0, 3.0), "flat": (0.0, 0.05), "diverges": (0.0, 3.0)}


def _accuracy(arm: str, seed: int) -> float | None:
    """Synthetic top-1: a per-seed level every arm shares (cancelled by pairing), the arm's effect and own noise."""
    if arm == "diverges" and seed % 2:
        return None  # every odd seed diverges
    level = 80 + np.random.default_rng(seed).normal(0, 1.5)
    effect, noise = ARMS[arm]
    return float(level + effect + np.random.default_rng([seed, sum(map(ord, arm))]).normal(0, noise))


def _record(exp, arm, seed):
    acc = _accuracy(arm, seed)
    r = {"arm": arm, "seed": seed, "eval_id": exp.evaluation.eval_id(), "macs": 1, "params": 1, "arch_id": arm}
    return {**r, "status": "failed"} if acc is None else {**r, "status": "trained", "accuracy": acc}


def _drive(exp, records, limit=1000):
    """Train what next_runs asks for until it asks for nothing; returns the records and the rounds."""
    rounds = []
    for _ in range(limit):
        todo = next_runs(exp, records)
        if not todo:
            return records, rounds
        rounds.append(todo)
        records = records + [_record(exp, a, s) for a, s in todo]
    raise AssertionError("next_runs never finished")


def test_seed_rule_stops_early_on_a_clear_effect_and_keeps_adding_on_a_noisy_one(tmp_path):
    exp = _synthetic(tmp_path)
    records, rounds = _drive(exp, [])
    tried = {a.name: sorted(r["seed"] for r in records if r["arm"] == a.name) for a in exp.arms}
    decisions = arm_decisions(exp, records)
    assert rounds[0] == [(a.name, s) for s in range(3) for a in exp.arms]  # the first min seeds, seed by seed
    assert tried["clear"] == [0, 1, 2] and decisions["clear"] == "excludes 0"  # stopped at min
    assert tried["flat"] == [0, 1, 2] and decisions["flat"] == "target"  # no effect, but pinned within +/- 0.5
    assert tried["noisy"] == list(range(8)) and decisions["noisy"] == "max"  # kept adding up to max, no further
    assert tried["diverges"] == list(range(8)) and decisions["diverges"] == "max"  # failed seeds count as tried
    assert tried["base"] == list(range(8))  # the baseline trains every seed an arm needs (paired differences)
    for todo in rounds[1:]:  # later rounds: the baseline's new seed first, then the open arms' next seed
        assert todo[0][0] == "base" and {a for a, _ in todo[1:]} <= {"noisy", "diverges"}
    # the noisy arm was open after every one of its seeds before max: interval wider than +/- 0.5 and around 0
    recs = [r for r in records if r["arm"] in ("base", "noisy")]
    for n in range(3, 8):
        sub = [r for r in recs if r["seed"] < n]
        assert seed_decision([x["accuracy"] - y["accuracy"] for x in sub if x["arm"] == "noisy"
                              for y in sub if y["arm"] == "base" and y["seed"] == x["seed"]], n,
                             exp.seed_rule) == "open"


def test_seed_rule_resumes_to_the_same_runs_after_an_interruption_anywhere(tmp_path):
    exp = _synthetic(tmp_path, "{min: 3, max: 6, target: 0.5}")
    full, _ = _drive(exp, [])
    want = sorted((r["arm"], r["seed"]) for r in full)
    for cut in range(len(full)):  # killed after any number of runs (in the order they were appended)
        resumed, _ = _drive(exp, full[:cut])
        assert sorted((r["arm"], r["seed"]) for r in resumed) == want, cut


def _synthetic_with_paper(tmp_path):
    f = tmp_path / "e.yaml"
    f.write_text("name: e\nbase: mobile_former_52m\nbaseline: base\nseeds: {min: 3, max: 8, target: 0.5}\narms:\n"
                 "  base: {}\n  clear: {activation: relu}\n  noisy: {activation: relu6}\n  flat: {activation: prelu}\n"
                 "  diverges: {ffn: false}\npaper:\n  direction: {clear: up, noisy: up, flat: same}\n")
    return load_experiment(f)


def test_an_unfinished_campaign_says_which_arms_are_open_and_gives_them_no_verdict(tmp_path):
    exp = _synthetic_with_paper(tmp_path)
    first = [_record(exp, a.name, s) for s in range(3) for a in exp.arms]  # the first min seeds only
    rows = summarise(exp, first)
    by = {r["arm"]: r for r in rows}
    assert by["noisy"]["stop"] == "open" and not any(r["complete"] for r in rows)
    assert by["clear"]["verdict"] == "agree"  # stopped: excludes 0 on the paper's side
    assert by["noisy"]["verdict"] == "open" and by["diverges"]["verdict"] is None  # no paper claim
    text = summary_markdown(rows)
    assert "| e | 52m | noisy | +0.0% | 3, open |" in text and text.count("| open |") == 1
    assert "(3 arms): 2 agree, 0 contradict, 0 inconclusive (our 95% CI includes 0), 1 still open" in text
    assert "| e | 52m | 15 (1 failed) | 0 | unfinished (2 arm(s) open) |" in text  # diverges' seed 1 failed
    from mfsearch.ablation import report_markdown

    assert "**Unfinished:**" in report_markdown(exp, rows) and "open: noisy, diverges" in report_markdown(exp, rows)
    done, _ = _drive(exp, first)  # run the rule to its end: every arm stopped, the campaign done
    rows = summarise(exp, done)
    assert all(r["complete"] for r in rows) and "open" not in {r["stop"] for r in rows}
    text = summary_markdown(rows)
    assert "still open" not in text and "| done |" in text and "**Unfinished:**" not in report_markdown(exp, rows)


def test_a_fixed_seed_list_runs_as_before(tmp_path):
    exp = _synthetic(tmp_path, "[4, 0, 7]")
    assert exp.seed_rule is None and exp.seeds == (4, 0, 7)
    records, rounds = _drive(exp, [])
    assert rounds == [[(a.name, s) for a in exp.arms for s in (4, 0, 7)]]  # one pass, arm by arm
    assert set(arm_decisions(exp, records).values()) == {"fixed"}


def test_seed_decision_rule():
    rule = SeedRule(3, 5, 0.5)
    assert seed_decision([1.0, 1.2], 2, rule) == "open"  # under min
    assert seed_decision([1.0, 1.2, 1.1], 3, rule) == "excludes 0"
    assert seed_decision([0.1, -0.1, 0.05], 3, rule) == "target"
    assert seed_decision([2.0, -2.0, 1.0], 3, rule) == "open"
    assert seed_decision([2.0, -2.0, 1.0, -1.0, 0.5], 5, rule) == "max"
    assert seed_decision([], 5, rule) == "max"  # every run diverged: stop at max all the same
    assert seed_decision([2.0, -2.0], 3, None) == "fixed"



def test_confirm_keeps_an_early_exclusion_open_until_it_holds_at_confirm_seeds():
    rule = SeedRule(3, 8, 0.5, confirm=5)
    lucky = [0.8, 0.9, 0.85, -0.6, 0.1, -0.4]  # excludes 0 at 3 seeds, then does not
    assert seed_decision(lucky[:3], 3, SeedRule(3, 8, 0.5)) == "excludes 0"  # without confirm: stops on luck
    assert seed_decision(lucky[:3], 3, rule) == "open"
    assert seed_decision([0.8, 0.81, 0.8], 3, rule) == "open"  # narrow and clear of 0: still open, not "target"
    assert seed_decision(lucky[:5], 5, rule) == "open" and seed_decision(lucky, 6, rule) == "open"
    assert seed_decision([1.0, 1.2, 1.1, 0.9, 1.05], 5, rule) == "excludes 0"  # holds at 5 seeds
    assert seed_decision([0.1, -0.1, 0.05], 3, rule) == "target"  # confirm is only about exclusions
    assert SeedRule(3, 4, 0.5, confirm=9).confirm == 4 and SeedRule(3, 8, 0.5).confirm == 3  # within [min, max]


@pytest.mark.parametrize("seeds,pattern", [
    ("{min: 1, max: 5, target: 0.5}", r"seeds.min: must be in \[2, 100\]"),
    ("{min: 4, max: 3, target: 0.5}", r"seeds.max: must be in \[4, 100\]"),
    ("{min: 3, max: 5}", r"seeds.target: missing"),
    ("{min: 3, max: 5, target: 0}", r"seeds.target: must be in"),
    ("{min: 3, max: 5, target: 0.5, step: 2}", r"seeds.step: unknown key"),
    ("{min: 3, max: 5, target: 0.5, confirm: 6}", r"seeds.confirm: must be in \[3, 5\]"),
    ("{min: 3, max: 5, target: 0.5, confirm: 2}", r"seeds.confirm: must be in \[3, 5\]"),
    ("7", r"seeds: must be a list of 1-100 integers, or \{min"),
])
def test_bad_seed_rules(tmp_path, seeds, pattern):
    f = tmp_path / "e.yaml"
    f.write_text(f"name: e\nseeds: {seeds}\narms:\n  a: {{}}\n  b: {{}}\n")
    with pytest.raises(InputError, match=pattern):
        load_experiment(f)


def test_a_second_runner_of_the_same_experiment_is_refused(tmp_path):
    import fcntl

    f = tmp_path / "e.yaml"
    f.write_text("name: e\nbase: mobile_former_26m\narms:\n  a: {}\n  b: {}\n" + TINY_EVAL)
    exp = load_experiment(f)
    run_dir = tmp_path / "runs" / "ablations" / "e"
    run_dir.mkdir(parents=True)
    with open(run_dir / ".lock", "a") as fh:  # as a running `ablate` holds it
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(RunError, match="is running `mfsearch ablate` into this folder"):
            run_experiment(exp, tmp_path / "runs", log=lambda s: None)
    assert read_records(run_dir) == []


def test_append_after_a_torn_line_keeps_the_new_record(tmp_path):
    p = tmp_path / "records.jsonl"
    p.write_text('{"arm": "a", "seed": 0, "eval_id": "e", "status": "failed"}\n{"arm": "a", "se')  # a crash mid-write
    append_jsonl(p, {"arm": "a", "seed": 1, "eval_id": "e", "status": "failed"})
    assert [r["seed"] for r in read_records(tmp_path)] == [0, 1]


@pytest.mark.parametrize("text,pattern", [
    ("name: e\narms:\n  a: {}\n", r"arms: needs at least two arms"),
    ("name: e\narms:\n  a: {}\n  b: {activation: swish}\n", r":4: arms.b.activation: unknown value 'swish'"),
    ("name: e\narms:\n  a: {}\n  b: {colour: 1}\n", r"arms.b"),
    ("name: e\nbaseline: z\narms:\n  a: {}\n  b: {}\n", r"baseline: names no arm"),
    ("name: e\nseeds: [1, 1]\narms:\n  a: {}\n  b: {}\n", r"seeds: has repeated seeds"),
    ("name: e\narms:\n  a: {}\n  b: {}\npaper:\n  direction: {b: sideways}\n", r"paper.direction.b: must be one of"),
    ("name: e\narms:\n  a: {}\n  b: {}\npaper:\n  top1: {q: 70}\n", r"paper.top1.q: names no arm"),
])
def test_bad_experiment_files(tmp_path, text, pattern):
    f = tmp_path / "e.yaml"
    f.write_text(text)
    with pytest.raises(InputError, match=pattern):
        load_experiment(f)


# ----------------------------------------------------------------------------- the plan


@pytest.mark.slow
def test_plan_estimates_every_arm_at_min_and_max_seeds(tmp_path):
    f = tmp_path / "exp.yaml"
    f.write_text("name: planned\nbase: mobile_former_26m\nbaseline: a\nseeds: {min: 2, max: 5, target: 0.5}\n"
                 "match_budget: both\narms:\n  a: {}\n  b: {projections: full}\n" + TINY_EVAL)
    exp = load_experiment(f)
    plan = plan_campaign([exp], steps=1, warmup=1, runs=tmp_path / "runs")
    (e,) = plan["experiments"]
    assert [a["arm"] for a in e["arms"]] == ["a", "b", "b_matched"]
    assert [a["matched"] for a in e["arms"]] == [False, False, True]
    for a in e["arms"]:
        assert a["run_minutes"] > 0 and a["stored"] == 0
        assert a["min_minutes"] == pytest.approx(2 * a["run_minutes"], abs=0.01)
        assert a["max_minutes"] == pytest.approx(5 * a["run_minutes"], abs=0.01)
    assert e["min_minutes"] == pytest.approx(sum(a["min_minutes"] for a in e["arms"]) + 2 * e["data_minutes"], abs=0.1)
    text = plan_markdown(plan)
    assert "| planned | 26m | 3 | 1 of 3 arms | 2-5 |" in text and "| planned | b_matched | 26m | yes |" in text
    # a second experiment with the same baseline architecture: counted once, where it comes first
    g = tmp_path / "other.yaml"
    g.write_text("name: other\nbase: mobile_former_26m\nbaseline: base\nseeds: {min: 2, max: 5, target: 0.5}\n"
                 "arms:\n  base: {}\n  relu: {activation: relu}\n" + TINY_EVAL)
    plan = plan_campaign([exp, load_experiment(g)], steps=1, warmup=1, runs=tmp_path / "runs")
    base, relu = plan["experiments"][1]["arms"]
    assert base["shared_with"] == "planned:a" and base["min_minutes"] == base["max_minutes"] == 0
    assert relu["shared_with"] is None and relu["min_minutes"] > 0
    text = plan_markdown(plan)
    assert "| other | base | 26m | baseline |" in text and "0 (runs of planned:a) | 0 |" in text
    # runs published in a results folder count as stored
    _published(exp, tmp_path / "res", {("a", 0): 80.0, ("b", 0): 80.5})
    plan = plan_campaign([exp], steps=1, warmup=1, runs=tmp_path / "runs", results=tmp_path / "res")
    assert [a["stored"] for a in plan["experiments"][0]["arms"]] == [1, 1, 0]


# ----------------------------------------------------------------------------- a real run


def _cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "mfsearch.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_ablate_cli_runs_resumes_and_summarises(tmp_path):
    f = tmp_path / "exp.yaml"
    f.write_text("name: quick\nbase: mobile_former_26m\nbaseline: a\nseeds: [0, 1, 2]\narms:\n  a: {}\n"
                 "  b: {activation: relu}\npaper:\n  top1: {a: 64.0, b: 63.0}\n" + TINY_EVAL)
    runs = str(tmp_path / "runs")
    r = _cli("ablate", str(f), "--runs-dir", runs)
    assert r.returncode == 0, r.stderr[-2000:]
    run_dir = tmp_path / "runs" / "ablations" / "quick"
    recs = read_records(run_dir)
    assert sorted((x["arm"], x["seed"]) for x in recs) == [(a, s) for a in "ab" for s in range(3)]
    assert all(x["status"] == "trained" and x["versions"]["torch"] and x["versions"]["cpu"] for x in recs)
    assert all(x["cpu_s"] > 0 and x["threads"] == 1 for x in recs)
    report = json.loads((run_dir / "report.json").read_text())
    assert [row["arm"] for row in report["rows"]] == ["a", "b"]
    assert (run_dir / "report.png").is_file() and "| b |" in (run_dir / "report.md").read_text()
    assert "MDE 80%" in (run_dir / "report.md").read_text() and report["rows"][1]["mde"] > 0
    # the same command again trains nothing new
    r = _cli("ablate", str(f), "--runs-dir", runs)
    assert r.returncode == 0 and len(read_records(run_dir)) == 6 and "seed 0" not in r.stderr
    r = _cli("ablation-summary", "--runs-dir", runs, timeout=120)
    assert r.returncode == 0 and "| quick | 26m | b |" in r.stdout
    assert (tmp_path / "runs" / "ablations" / "SUMMARY.md").is_file()


@pytest.mark.slow
def test_ablate_report_only_reports_the_stored_runs_and_trains_nothing(tmp_path):
    exp = _synthetic_with_paper(tmp_path)
    runs = tmp_path / "runs"
    r = _cli("ablate", str(exp.path), "--report-only", "--runs-dir", str(runs), timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "--report-only" in r.stderr
    assert "no finished runs" in r.stderr
    run_dir = runs / "ablations" / "e"
    for s in range(3):
        for a in exp.arms:
            append_jsonl(run_dir / "records.jsonl", {**_record(exp, a.name, s), "cpu_s": 60.0,
                                                     "arch_id": arm_config(exp, a).arch_id})
    before = (run_dir / "records.jsonl").read_text()
    r = _cli("ablate", str(exp.path), "--report-only", "--runs-dir", str(runs), timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (run_dir / "records.jsonl").read_text() == before  # trained nothing
    assert "**Unfinished:**" in (run_dir / "report.md").read_text() and (run_dir / "report.png").is_file()
    rep = json.loads((run_dir / "report.json").read_text())
    assert rep["complete"] is False and {x["arm"]: x["stop"] for x in rep["rows"]}["noisy"] == "open"
    assert not list(run_dir.glob(".*.tmp*"))  # written whole, then moved into place
    r = _cli("ablation-summary", "--runs-dir", str(runs), timeout=120)
    assert r.returncode == 0 and "| e | 52m | 15 (1 failed) | 15 | unfinished (2 arm(s) open) |" in r.stdout


def test_summary_update_puts_the_table_between_the_markers_and_nothing_else(tmp_path):
    from mfsearch.ablation import write_report

    exp = _synthetic_with_paper(tmp_path)
    run_dir = tmp_path / "res" / "e"
    for s in range(3):
        for a in exp.arms:
            append_jsonl(run_dir / "records.jsonl", _record(exp, a.name, s))
    write_report(exp, run_dir)
    doc, bad = tmp_path / "doc.md", tmp_path / "bad.md"
    doc.write_text("# Doc\n\nbefore\n<!-- ablation-summary: begin -->\nold table\n"
                   "<!-- ablation-summary: end -->\nafter\n")
    bad.write_text("# no markers\n")
    r = _cli("ablation-summary", str(tmp_path / "res"), "--update", str(doc), str(bad), timeout=120)
    assert r.returncode == 2 and "bad.md" in r.stderr and "Traceback" not in r.stderr
    assert "old table" in doc.read_text() and not (tmp_path / "res" / "SUMMARY.md").exists()  # nothing written
    r = _cli("ablation-summary", str(tmp_path / "res"), "--update", str(doc), timeout=120)
    assert r.returncode == 0, r.stderr
    text = doc.read_text()
    assert text.startswith("# Doc\n\nbefore\n<!-- ablation-summary: begin -->\n| experiment |")
    assert text.endswith("<!-- ablation-summary: end -->\nafter\n") and "old table" not in text
    inner = text.split("begin -->")[1].split("<!-- ablation")[0].strip()
    assert inner == summary_markdown(summarise(exp, read_records(run_dir))).strip()


@pytest.mark.parametrize("text", ['{"rows": [', '{"a": 1}', '[1, 2]', '{"rows": [{"arm": "b"}]}', "\udcff"])
def test_a_torn_or_foreign_report_is_one_line_naming_it(tmp_path, text):
    (tmp_path / "res" / "x").mkdir(parents=True)
    (tmp_path / "res" / "x" / "report.json").write_text(text, errors="surrogateescape")
    r = _cli("ablation-summary", str(tmp_path / "res"), timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "res/x/report.json" in r.stderr


@pytest.mark.slow
def test_a_run_another_experiment_stored_is_copied_not_trained_again(tmp_path):
    one, two = tmp_path / "one.yaml", tmp_path / "two.yaml"
    one.write_text("name: one\nbase: mobile_former_26m\nbaseline: a\nseeds: [0, 1]\narms:\n  a: {}\n"
                   "  b: {activation: relu}\n" + TINY_EVAL)
    # the same relu architecture under another arm name, and one seed more than `one` has
    two.write_text("name: two\nbase: mobile_former_26m\nbaseline: relu\nseeds: [0, 1, 2]\narms:\n"
                   "  relu: {activation: relu}\n  relu6: {activation: relu6}\n" + TINY_EVAL)
    runs = str(tmp_path / "runs")
    assert _cli("ablate", str(one), "--runs-dir", runs).returncode == 0
    r = _cli("ablate", str(two), "--runs-dir", runs)
    assert r.returncode == 0, r.stderr[-2000:]
    recs = {(x["arm"], x["seed"]): x for x in read_records(tmp_path / "runs" / "ablations" / "two")}
    first = {(x["arm"], x["seed"]): x for x in read_records(tmp_path / "runs" / "ablations" / "one")}
    for s in (0, 1):  # copied from `one`, where they were trained
        assert recs["relu", s]["same_run_as"] == "one:b" and recs["relu", s]["cpu_s"] == 0.0
        assert recs["relu", s]["accuracy"] == first["b", s]["accuracy"]
    assert "same_run_as" not in recs["relu", 2] and recs["relu", 2]["cpu_s"] > 0  # `one` has no seed 2
    assert not any("same_run_as" in recs["relu6", s] for s in range(3))
    assert "the same run as one:b (not trained again)" in r.stderr
    assert "2 runs copied from another experiment's identical run (0 CPU)" in r.stdout
    # and a copy is what training would have given: `two` alone, in a folder of its own
    alone = str(tmp_path / "alone")
    assert _cli("ablate", str(two), "--runs-dir", alone).returncode == 0
    fresh = {(x["arm"], x["seed"]): x for x in read_records(tmp_path / "alone" / "ablations" / "two")}
    assert all("same_run_as" not in x for x in fresh.values())
    assert {k: x["accuracy"] for k, x in fresh.items()} == {k: x["accuracy"] for k, x in recs.items()}


@pytest.mark.slow
def test_ablate_cli_adaptive_seeds_run_to_the_rule_and_resume(tmp_path):
    f = tmp_path / "exp.yaml"
    # a target no real difference reaches at 2-4 seeds: an arm stops only on a clear effect or at max
    f.write_text("name: adapt\nbase: mobile_former_26m\nbaseline: a\nseeds: {min: 2, max: 3, target: 0.001}\n"
                 "arms:\n  a: {}\n  b: {activation: relu}\n" + TINY_EVAL)
    runs = str(tmp_path / "runs")
    r = _cli("ablate", str(f), "--runs-dir", runs)
    assert r.returncode == 0, r.stderr[-2000:]
    exp = load_experiment(f)
    run_dir = tmp_path / "runs" / "ablations" / "adapt"
    recs = read_records(run_dir)
    assert next_runs(exp, recs) == []
    decisions = arm_decisions(exp, recs)
    tried = {a: sorted(x["seed"] for x in recs if x["arm"] == a) for a in "ab"}
    assert decisions["b"] in ("excludes 0", "max") and tried["b"] == list(range(len(tried["b"])))
    assert (decisions["b"] == "max") == (len(tried["b"]) == 3) and tried["a"] == tried["b"]
    rows = {row["arm"]: row for row in json.loads((run_dir / "report.json").read_text())["rows"]}
    assert rows["b"]["stop"] == decisions["b"] and rows["b"]["seed_list"] == tried["b"]
    assert "adaptive seeds (min 2, max 3" in (run_dir / "report.md").read_text()
    r = _cli("ablate", str(f), "--runs-dir", runs)  # resumes: nothing left to train
    assert r.returncode == 0 and len(read_records(run_dir)) == len(recs) and "seed 0" not in r.stderr


@pytest.mark.slow
def test_a_campaign_published_with_results_continues_on_another_machine(tmp_path):
    one, two = tmp_path / "one.yaml", tmp_path / "two.yaml"
    one.write_text("name: one\nbase: mobile_former_26m\nbaseline: a\nseeds: [0, 1, 2]\narms:\n  a: {}\n"
                   "  b: {activation: relu}\n" + TINY_EVAL)
    two.write_text("name: two\nbase: mobile_former_26m\nbaseline: relu\nseeds: [0, 1, 2]\narms:\n"
                   "  relu: {activation: relu}\n  relu6: {activation: relu6}\n" + TINY_EVAL)
    res = tmp_path / "res"
    # machine 1 trains seeds 0 and 1 and publishes them; its runs folder is then lost
    r = _cli("ablate", str(one), "--seeds", "2", "--runs-dir", str(tmp_path / "m1"), "--results", str(res))
    assert r.returncode == 0, r.stderr[-2000:]
    published = (res / "one" / "records.jsonl").read_bytes()
    assert len(read_records(res / "one")) == 4 and (res / "one" / "report.json").exists()
    assert not (res / "one" / "report.png").exists()
    # machine 2 continues from the published runs: only seed 2 is trained
    r = _cli("ablate", str(one), "--runs-dir", str(tmp_path / "m2"), "--results", str(res))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "seed 2" in r.stderr and "seed 0" not in r.stderr and "seed 1" not in r.stderr
    assert len(read_records(tmp_path / "m2" / "ablations" / "one")) == 2
    assert (res / "one" / "records.jsonl").read_bytes().startswith(published)  # published runs only appended to
    recs = read_records(res / "one")
    assert sorted((x["arm"], x["seed"]) for x in recs) == [(a, s) for a in "ab" for s in range(3)]
    rep = json.loads((res / "one" / "report.json").read_text())
    assert rep["complete"] and {row["arm"]: row["seeds"] for row in rep["rows"]} == {"a": 3, "b": 3}
    # and it is what one machine training everything gives (one thread is deterministic)
    alone = tmp_path / "alone"
    assert _cli("ablate", str(one), "--runs-dir", str(alone)).returncode == 0
    mine = {(x["arm"], x["seed"]): x["accuracy"] for x in read_records(alone / "ablations" / "one")}
    assert {(x["arm"], x["seed"]): x["accuracy"] for x in recs} == mine
    # machine 3: another experiment copies the published relu runs instead of training them
    r = _cli("ablate", str(two), "--runs-dir", str(tmp_path / "m3"), "--results", str(res))
    assert r.returncode == 0, r.stderr[-2000:]
    copied = {(x["arm"], x["seed"]): x for x in read_records(res / "two")}
    assert all(copied["relu", s]["same_run_as"] == "one:b" and copied["relu", s]["cpu_s"] == 0.0 for s in range(3))
    assert all(copied["relu", s]["accuracy"] == mine["b", s] for s in range(3))
    # --report-only publishes what is stored here, and leaves alone an experiment with nothing stored here
    before = (res / "one" / "report.json").read_bytes()
    r = _cli("ablate", str(one), str(two), "--report-only", "--runs-dir", str(tmp_path / "m3"), "--results", str(res))
    assert r.returncode == 0, r.stderr[-2000:]
    assert (res / "one" / "report.json").read_bytes() == before and "left as it is" in r.stderr


def test_results_without_their_runs_or_unwritable_are_one_line_and_nothing_runs(tmp_path):
    f = tmp_path / "x.yaml"
    f.write_text("name: x\nbase: mobile_former_26m\nbaseline: a\nseeds: [0]\narms:\n  a: {}\n  b: {activation: relu}\n"
                 + TINY_EVAL)
    (tmp_path / "res" / "x").mkdir(parents=True)
    (tmp_path / "res" / "x" / "report.json").write_text('{"rows": []}')  # a report published without its runs
    runs = tmp_path / "runs"
    r = _cli("ablate", str(f), "--runs-dir", str(runs), "--results", str(tmp_path / "res"), timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "res/x/report.json" in r.stderr and "records.jsonl" in r.stderr
    assert not read_records(runs / "ablations" / "x") and (tmp_path / "res" / "x" / "report.json").read_text() == (
        '{"rows": []}')
    (tmp_path / "file").write_text("")
    for bad in (tmp_path / "file", tmp_path / "file" / "sub"):
        r = _cli("ablate", str(f), "--runs-dir", str(runs), "--results", str(bad), timeout=120)
        assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
        assert f"--results {bad}" in r.stderr


def _published(exp, res, accs, arch_id=None, extra=()):
    """Write ``res/<exp>/records.jsonl`` by hand: a trained run per (arm, seed) -> top-1 of ``accs``."""
    lines = []
    for (arm, seed), acc in accs.items():
        cfg = arm_config(exp, exp.arm(arm))
        lines.append(json.dumps({"experiment": exp.name, "arm": arm, "seed": seed, "eval_id": exp.evaluation.eval_id(),
                                 "arch_id": arch_id or cfg.arch_id, "macs": 1000, "params": 10, "status": "trained",
                                 "accuracy": acc, "cpu_s": 1.0}))
    (res / exp.name).mkdir(parents=True, exist_ok=True)
    (res / exp.name / "records.jsonl").write_text("\n".join([*lines, *extra]) + "\n")


def test_published_runs_of_another_file_under_the_same_name_are_refused_before_anything_runs(tmp_path):
    f = tmp_path / "x.yaml"
    f.write_text("name: x\nbase: mobile_former_26m\nbaseline: a\nseeds: [0]\narms:\n  a: {}\n  b: {activation: relu}\n"
                 + TINY_EVAL)
    exp = load_experiment(f)
    res, runs = tmp_path / "res", tmp_path / "runs"
    _published(exp, res, {("a", 0): 50.0, ("b", 0): 51.0}, arch_id="0123456789abcdef")  # another file's arms
    for extra in ((), ("--report-only",)):
        r = _cli("ablate", str(f), "--runs-dir", str(runs), "--results", str(res), *extra, timeout=120)
        assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
        assert "res/x/records.jsonl" in r.stderr and "another architecture" in r.stderr
    assert not read_records(runs / "ablations" / "x") and not (res / "x" / "report.json").exists()
    # the same under the local runs folder, without --results
    (runs / "ablations").mkdir(parents=True)
    (res / "x").rename(runs / "ablations" / "x")
    r = _cli("ablate", str(f), "--runs-dir", str(runs), timeout=120)
    assert r.returncode == 2 and "runs/ablations/x/records.jsonl" in r.stderr and "Traceback" not in r.stderr
    assert len(read_records(runs / "ablations" / "x")) == 2  # nothing trained, nothing appended


def test_report_only_publishes_from_published_runs_alone_and_skips_damaged_lines(tmp_path):
    f = tmp_path / "x.yaml"
    f.write_text("name: x\nbase: mobile_former_26m\nbaseline: a\nseeds: [0, 1, 2]\narms:\n  a: {}\n"
                 "  b: {activation: relu}\n" + TINY_EVAL)
    exp = load_experiment(f)
    res = tmp_path / "res"
    eid = exp.evaluation.eval_id()
    damaged = [json.dumps({"arm": "a", "seed": 0, "eval_id": eid, "status": "trained"}),  # no top-1
               json.dumps({"arm": "a", "seed": "7", "eval_id": eid, "status": "failed"}),  # a seed that is text
               json.dumps({"arm": ["a"], "seed": 0, "eval_id": eid, "status": "failed"}), "{}", '{"arm": "b", "se',
               json.dumps({"arm": "a", "seed": 0, "eval_id": eid, "status": "failed", "cpu_s": None}),
               json.dumps({"arm": "a", "seed": 0, "eval_id": eid, "status": "failed", "total_s": "q"}),
               json.dumps({"arm": "a", "seed": 0, "eval_id": eid, "status": "trained", "accuracy": 10**400,
                           "macs": 1, "params": 1, "arch_id": "x"}),
               '{"arm": "a", "seed": %s}' % ("9" * 5000), "[" * 200000]
    _published(exp, res, {(a, s): 80.0 + s + (a == "b") for a in "ab" for s in range(3)}, extra=damaged)
    (res / "x" / "records.jsonl").write_bytes(b"\xef\xbb\xbf" + (res / "x" / "records.jsonl").read_bytes())  # a BOM
    r = _cli("ablate", str(f), "--report-only", "--runs-dir", str(tmp_path / "empty"), "--results", str(res),
             timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = {row["arm"]: row for row in json.loads((res / "x" / "report.json").read_text())["rows"]}
    assert rows["b"]["seeds"] == 3 and rows["b"]["diff"] == pytest.approx(1.0) and rows["a"]["mean"] == 81.0
    assert len(read_records(res / "x")) == 6
    # a records.jsonl with no readable run (a Git LFS pointer): its report is not replaced by a smaller one
    (res / "x" / "records.jsonl").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 9\n")
    before = (res / "x" / "report.json").read_bytes()
    stored = tmp_path / "runs"
    (stored / "ablations" / "x").mkdir(parents=True)
    append_jsonl(stored / "ablations" / "x" / "records.jsonl", {
        "arm": "a", "seed": 0, "eval_id": eid, "status": "trained", "accuracy": 70.0, "macs": 1000, "params": 10,
        "arch_id": arm_config(exp, exp.arm("a")).arch_id})
    r = _cli("ablate", str(f), "--report-only", "--runs-dir", str(stored), "--results", str(res), timeout=120)
    assert r.returncode == 2 and "res/x/report.json" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert (res / "x" / "report.json").read_bytes() == before


@pytest.mark.parametrize("broken", ["file", "dangling link", "records.jsonl a folder", "empty --results"])
def test_a_results_subfolder_that_cannot_take_the_runs_is_refused_before_training(tmp_path, broken):
    f = tmp_path / "x.yaml"
    f.write_text("name: x\nbase: mobile_former_26m\nbaseline: a\nseeds: [0]\narms:\n  a: {}\n  b: {activation: relu}\n"
                 + TINY_EVAL)
    (tmp_path / "res").mkdir()
    if broken == "file":
        (tmp_path / "res" / "x").write_text("")  # a file where the experiment's folder goes
    elif broken == "dangling link":
        (tmp_path / "res" / "x").symlink_to(tmp_path / "gone")
    elif broken == "records.jsonl a folder":
        (tmp_path / "res" / "x" / "records.jsonl").mkdir(parents=True)
    runs = tmp_path / "runs"
    results = "" if broken == "empty --results" else str(tmp_path / "res")
    r = _cli("ablate", str(f), "--runs-dir", str(runs), "--results", results, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert ("--results: empty" if not results else "res/x is not a writable folder") in r.stderr
    assert not read_records(runs / "ablations" / "x")


def test_two_files_under_one_name_in_one_command_are_refused_before_anything_runs(tmp_path):
    one, two = tmp_path / "one.yaml", tmp_path / "two.yaml"
    one.write_text("name: z\nbase: mobile_former_26m\nbaseline: a\nseeds: [0]\narms:\n  a: {}\n"
                   "  b: {activation: relu}\n" + TINY_EVAL)
    two.write_text(one.read_text().replace("relu", "relu6"))
    runs = tmp_path / "runs"
    r = _cli("ablate", str(one), str(two), "--runs-dir", str(runs), "--results", str(tmp_path / "res"), timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "two.yaml: name: 'z' is also the name of" in r.stderr and not (runs / "ablations" / "z").exists()


@pytest.mark.slow
def test_with_results_every_finished_run_is_published_at_once_even_under_kill_9(tmp_path):
    import os
    import signal
    import time

    f = tmp_path / "k.yaml"
    f.write_text("name: k\nbase: mobile_former_26m\nbaseline: a\nseeds: [0, 1, 2, 3, 4, 5]\narms:\n  a: {}\n"
                 "  b: {activation: relu}\n" + TINY_EVAL)
    runs, res = tmp_path / "runs", tmp_path / "res"
    proc = subprocess.Popen([sys.executable, "-m", "mfsearch.cli", "ablate", str(f), "--runs-dir", str(runs),
                             "--results", str(res)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    while len(read_records(runs / "ablations" / "k")) < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    local = {(x["arm"], x["seed"]): x["accuracy"] for x in read_records(runs / "ablations" / "k")}
    published = {(x["arm"], x["seed"]): x["accuracy"] for x in read_records(res / "k")}
    assert 3 <= len(local) < 12, "killed mid-campaign"
    # every published run is a stored one; at most the run stored in the instant before the kill is missing
    assert published.items() <= local.items() and len(published) >= len(local) - 1
    assert json.loads((res / "k" / "report.json").read_text())["complete"] is False


def test_publish_writes_nothing_when_every_run_failed(tmp_path):
    from mfsearch.ablation import publish

    f = tmp_path / "x.yaml"
    f.write_text("name: x\nbase: mobile_former_26m\nbaseline: a\nseeds: [0]\narms:\n  a: {}\n  b: {activation: relu}\n"
                 + TINY_EVAL)
    exp = load_experiment(f)
    run_dir = tmp_path / "runs" / "x"
    for arm in "ab":
        append_jsonl(run_dir / "records.jsonl", {"arm": arm, "seed": 0, "eval_id": exp.evaluation.eval_id(),
                                                 "status": "failed", "failure_reason": "loss is nan",
                                                 "arch_id": arm_config(exp, exp.arm(arm)).arch_id})
    assert publish(exp, run_dir, tmp_path / "res") is None and not (tmp_path / "res" / "x").exists()


def test_report_only_rewrites_a_published_report_a_run_behind_its_records(tmp_path):
    f = tmp_path / "x.yaml"
    f.write_text("name: x\nbase: mobile_former_26m\nbaseline: a\nseeds: [0, 1, 2]\narms:\n  a: {}\n"
                 "  b: {activation: relu}\n" + TINY_EVAL)
    exp = load_experiment(f)
    res, empty = tmp_path / "res", tmp_path / "empty"
    accs = {(a, s): 80.0 + s + (a == "b") for a in "ab" for s in range(3)}
    _published(exp, res, {k: v for k, v in accs.items() if k[1] < 2})
    assert _cli("ablate", str(f), "--report-only", "--runs-dir", str(empty), "--results", str(res)).returncode == 0
    before = (res / "x" / "report.json").read_bytes()
    r = _cli("ablate", str(f), "--report-only", "--runs-dir", str(empty), "--results", str(res))
    assert r.returncode == 0 and "left as it is" in r.stderr and (res / "x" / "report.json").read_bytes() == before
    _published(exp, res, accs)  # the runs moved on and the report did not (a kill between the two writes)
    r = _cli("ablate", str(f), "--report-only", "--runs-dir", str(empty), "--results", str(res))
    assert r.returncode == 0, r.stderr
    rows = {row["arm"]: row for row in json.loads((res / "x" / "report.json").read_text())["rows"]}
    assert rows["a"]["seeds"] == rows["b"]["seeds"] == 3


def test_two_group_statistics_of_search_methods_over_seeds():
    # Welch: difference 3, standard error sqrt(1/3 + 1/3), 4 degrees of freedom (equal variances, equal sizes)
    lo, hi = welch_interval([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    from scipy import stats

    h = stats.t.ppf(0.975, 4) * (2 / 3) ** 0.5
    assert (lo, hi) == pytest.approx((3 - h, 3 + h))
    assert all(v != v for v in welch_interval([1.0], [2.0, 3.0]))  # one run: no interval
    # exact permutation: of the 20 splits of 3 + 3, only the observed one and its mirror are this extreme
    assert permutation_p([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]) == pytest.approx(0.1)
    assert permutation_p([4.0, 5.0, 6.0], [1.0, 2.0, 3.0]) == pytest.approx(0.1)  # two-sided
    assert permutation_p([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == 1.0
    assert permutation_p([0.429, 0.383, 0.482], [0.318, 0.364, 0.390]) == pytest.approx(0.2)
    # unequal sizes: 1 + 3 values, 4 splits; the lone high value is the most extreme of them
    assert permutation_p([1.0, 1.1, 0.9], [5.0]) == pytest.approx(0.25)
