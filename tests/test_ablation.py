"""Ablation experiments: files, budget matching, statistics, and a real tiny run with resume."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mfsearch import complexity, get_config
from mfsearch.ablation import (
    arm_config,
    direction_of,
    load_experiment,
    match_macs,
    read_records,
    summarise,
    summary_markdown,
    t_interval,
)
from mfsearch.errors import InputError

EXPERIMENTS = sorted((Path(__file__).parent.parent / "experiments").glob("*.yaml"))
AXES = {"components", "activation", "tokens", "token_width", "bridge_heads", "projections", "bridges", "ffn",
        "arrangement"}


def test_every_axis_has_an_experiment_and_all_arms_build():
    names = set()
    for f in EXPERIMENTS:
        exp = load_experiment(f)
        names.add(exp.name)
        assert len(exp.seeds) >= 3
        for arm in exp.arms:
            complexity(arm_config(exp, arm))
    assert AXES <= names


def test_match_budget_within_one_percent():
    exp = load_experiment(next(f for f in EXPERIMENTS if f.stem == "components_matched"))
    target = complexity(arm_config(exp, exp.arm(exp.baseline))).macs
    for arm in exp.arms:
        macs = complexity(arm_config(exp, arm)).macs
        assert abs(macs - target) <= 0.01 * target, arm.name
    full = get_config("mobile_former_52m").replace(projections="full")
    assert complexity(full).macs > 1.2 * target  # far off before matching
    assert abs(complexity(match_macs(full, target)).macs - target) <= 0.01 * target


def test_statistics():
    lo, hi = t_interval([1.0, 2.0, 3.0])
    assert lo == pytest.approx(2 - 4.302653 * 1 / 3**0.5, rel=1e-5) and hi == pytest.approx(4 - lo)
    assert direction_of(2.0, (0.5, 3.5)) == "up"
    assert direction_of(-2.0, (-3.5, -0.5)) == "down"
    assert direction_of(0.3, (-1.0, 1.6)) == "same"


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
                         "macs": 1, "params": 1, "arch_id": arm})
    rows = {r["arm"]: r for r in summarise(exp, recs)}
    assert rows["b"]["diff"] == pytest.approx(-5.5 / 3)
    assert rows["b"]["ours"] == "down" and rows["b"]["paper_direction"] == "down" and rows["b"]["agree"] is True
    assert rows["c"]["ours"] == "same" and rows["c"]["agree"] is True
    assert rows["a"]["std"] == pytest.approx(1.0)
    assert "(2 arms): 2 agree, 0 contradict, 0 inconclusive" in summary_markdown(list(rows.values()))


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


def test_ablate_cli_runs_resumes_and_summarises(tmp_path):
    f = tmp_path / "exp.yaml"
    f.write_text("name: quick\nbase: mobile_former_26m\nbaseline: a\nseeds: [0, 1, 2]\narms:\n  a: {}\n"
                 "  b: {activation: relu}\npaper:\n  top1: {a: 64.0, b: 63.0}\n"
                 "evaluation: {image_size: 16, train_size: 300, val_size: 100, batch_size: 50, threads: 1}\n")
    cmd = [sys.executable, "-m", "mfsearch.cli"]
    r = subprocess.run([*cmd, "ablate", str(f), "--runs-dir", str(tmp_path / "runs")], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    run_dir = tmp_path / "runs" / "ablations" / "quick"
    recs = read_records(run_dir)
    assert sorted((x["arm"], x["seed"]) for x in recs) == [(a, s) for a in "ab" for s in range(3)]
    assert all(x["status"] == "trained" and x["versions"]["torch"] for x in recs)
    report = json.loads((run_dir / "report.json").read_text())
    assert [row["arm"] for row in report["rows"]] == ["a", "b"]
    assert (run_dir / "report.png").is_file() and "| b |" in (run_dir / "report.md").read_text()
    # the same command again trains nothing new
    r = subprocess.run([*cmd, "ablate", str(f), "--runs-dir", str(tmp_path / "runs")], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0 and len(read_records(run_dir)) == 6 and "seed 0" not in r.stderr
    r = subprocess.run([*cmd, "ablation-summary", "--runs-dir", str(tmp_path / "runs")], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and "| quick | b |" in r.stdout
    assert (tmp_path / "runs" / "ablations" / "SUMMARY.md").is_file()
