"""End-to-end searches on the tiny space: real Optuna journal storage, real training on Fashion-MNIST."""

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest

from mfsearch.analysis import hypervolume, pareto_front, trials_frame
from mfsearch.models import MobileFormerConfig, complexity
from mfsearch.search import OptunaSearch
from mfsearch.space import load_space, within_budget
from mfsearch.store import StudyRef, default_storage_url, open_storage


def search(space_path: Path, cwd: Path, n_classes: int = 10) -> OptunaSearch:
    space = load_space(space_path)
    run_dir = cwd / "runs" / space.name
    s = OptunaSearch(space, StudyRef(space.name, default_storage_url(run_dir), run_dir), progress=False)
    s.run(n_classes)
    return s


@pytest.mark.slow
def test_search_records_budget_dedupe_and_resume(tmp_path, load, run_cli, tiny_space):
    p = tiny_space(tmp_path, search={"trials": 5, "sampler": "random", "seed": 3, "reference_models": False})
    r = run_cli("run", str(p), "--no-progress", cwd=tmp_path)
    assert "study tiny: 5 architectures evaluated" in r.stdout
    study = load(tmp_path)
    space = load_space(p)
    done = [t for t in study.trials
            if t.state.name == "COMPLETE" and t.user_attrs["status"] in ("trained", "duplicate")]
    trained = [t for t in done if t.user_attrs["status"] == "trained"]
    assert len(trained) == 5
    assert len({t.user_attrs["arch_id"] for t in trained}) == len(trained)  # nothing trained twice
    for t in trained:
        ua = t.user_attrs
        cfg = MobileFormerConfig.from_dict(ua["config"])
        assert cfg.arch_id == ua["arch_id"]
        assert ua["macs"] == complexity(cfg.replace(num_classes=1000), 224).macs <= space.budget.macs
        assert len(ua["history"]) == 1 and 0 <= ua["accuracy"] <= 100
        assert ua["history"][0]["val_acc"] == ua["accuracy"] == t.values[0]
        assert ua["seed"] == 0 and ua["versions"]["torch"] and ua["train_s"] > 0
        assert 0 < ua["cpu_s"]  # what the trial cost the machine (process CPU), beside its wall time
        assert ua["threads"] == (space.evaluation.threads or ua["threads"]) >= 1
        assert ua["eval_id"] == space.evaluation.eval_id()
        assert all(v <= 0 for v in t.constraints.values())
    over = [t for t in study.trials if t.user_attrs.get("status") == "over_budget"]
    for t in over:  # over budget: told to the sampler as infeasible, never trained
        assert t.user_attrs["macs"] > space.budget.macs and "history" not in t.user_attrs
        assert t.constraints["macs"] > 0
    # the run directory holds the exports
    run_dir = tmp_path / "runs" / "tiny"
    for f in ("results.csv", "results.parquet", "pareto.png", "pareto.md", "study.json"):
        assert (run_dir / f).is_file(), f
    df = pd.read_parquet(run_dir / "results.parquet")
    assert len(df) == len(study.trials) and set(df["status"]) >= {"trained"}
    assert all(t.user_attrs["cpu_s"] == 0.0 for t in done if t.user_attrs["status"] == "duplicate")  # trained nothing
    cpu_min = sum(t.user_attrs["cpu_s"] for t in trained) / 60
    assert f"Cost: 5 evaluations, {cpu_min:.1f} CPU-min." in (run_dir / "pareto.md").read_text()
    assert f"Cost: 5 evaluations, {cpu_min:.1f} CPU-min." in r.stdout
    summary = json.loads((run_dir / "summary.json").read_text())  # the same figures for programs
    assert summary["cost"] == {"evaluations": 5, "trials_cpu_s": pytest.approx(cpu_min * 60, abs=1e-2),
                               "without_cpu": 0, "supernet": None, "supernet_cpu_s": None}
    assert summary["trials"] == len(study.trials) and summary["hypervolume"] > 0
    assert "storage" not in json.dumps(summary) and "journal" not in json.dumps(summary)
    # the same command again continues: nothing retrained, nothing lost
    before = {t.number: (t.values, t.user_attrs["arch_id"]) for t in done}
    r2 = run_cli("run", str(p), "--no-progress", cwd=tmp_path)
    assert "0 trained now" in r2.stdout
    study = load(tmp_path)
    after = {t.number: (t.values, t.user_attrs.get("arch_id")) for t in study.trials if t.number in before}
    assert after == before
    # raising the target adds only the difference
    r3 = run_cli("run", str(p), "--no-progress", "--trials", "7", cwd=tmp_path)
    assert "study tiny: 7 architectures evaluated" in r3.stdout


@pytest.mark.slow
def test_reference_models_results_and_pareto_commands(tmp_path, run_cli, tiny_space):
    p = tiny_space(tmp_path, name="tinyref", budget={"macs": 30_000_000},
                   search={"trials": 2, "reference_models": ["mobile_former_26m"], "sampler": "tpe"})
    run_cli("run", str(p), "--no-progress", cwd=tmp_path)
    ref_study = optuna.load_study(study_name="tinyref.reference",
                                  storage=open_storage(default_storage_url(tmp_path / "runs" / "tinyref")))
    (t,) = ref_study.trials
    assert t.user_attrs["name"] == "mobile_former_26m" and t.user_attrs["kind"] == "reference"
    assert t.user_attrs["macs"] == 26_046_336
    r = run_cli("results", "tinyref", cwd=tmp_path)
    assert "mobile_former_26m" in r.stdout
    df = pd.read_csv(tmp_path / "runs" / "tinyref" / "results.csv")
    assert set(df["kind"]) == {"search", "reference"}
    r = run_cli("pareto", str(p), cwd=tmp_path)
    assert "hypervolume" in r.stdout and "| rank |" in r.stdout
    assert (tmp_path / "runs" / "tinyref" / "pareto.png").stat().st_size > 10_000
    # re-running does not retrain the reference
    run_cli("run", str(p), "--no-progress", cwd=tmp_path)
    assert len(optuna.load_study(study_name="tinyref.reference",
                                 storage=open_storage(default_storage_url(tmp_path / "runs" / "tinyref"))).trials) == 1


@pytest.mark.parametrize("sampler", ["nsga2", "grid"])
def test_other_samplers_run(tmp_path, sampler, load, tiny_space):
    p = tiny_space(tmp_path, search={"trials": 2, "sampler": sampler, "reference_models": False})
    s = search(p, tmp_path)
    study = load(tmp_path)
    assert sum(t.user_attrs.get("status") == "trained" for t in study.trials) == 2
    assert s.space.search.sampler == sampler


def test_mostly_over_budget_space_still_progresses(tmp_path, load, tiny_space):
    # at 5.6M MACs only the smallest corner fits: random sampling rarely hits it, repair does
    p = tiny_space(tmp_path, budget={"macs": 5_600_000},
                   search={"trials": 2, "sampler": "random", "max_resample": 10, "reference_models": False})
    search(p, tmp_path)
    study = load(tmp_path)
    ok = [t for t in study.trials if t.user_attrs.get("status") in ("trained", "duplicate")]
    assert sum(t.user_attrs["status"] == "trained" for t in ok) == 2
    assert all(t.user_attrs["macs"] <= 5_600_000 for t in ok)
    misses = sum(t.user_attrs.get("status") == "over_budget" for t in study.trials)
    assert misses <= 10 * (len(ok) + 1)  # bounded: at most max_resample misses per success


def test_interrupted_trial_is_failed_with_reason_then_study_completes(tmp_path, load, tiny_space):
    p = tiny_space(tmp_path, search={"trials": 2, "sampler": "random", "reference_models": False})
    space = load_space(p)
    run_dir = tmp_path / "runs" / "tiny"
    storage = open_storage(default_storage_url(run_dir))
    study = optuna.create_study(storage=storage, study_name="tiny", directions=["maximize", "minimize"])
    from mfsearch.search.optuna_engine import study_attrs

    for k, v in study_attrs(space).items():
        study.set_user_attr(k, v)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    t = study.ask()
    t.set_user_attr("worker", {"host": os.uname().nodename, "pid": dead.pid})
    search(p, tmp_path)
    study = load(tmp_path)
    stale = study.trials[t.number]
    assert stale.state.name == "FAIL"
    assert stale.user_attrs["status"] == "interrupted"
    assert f"worker pid {dead.pid}" in stale.user_attrs["failure_reason"]
    assert sum(x.user_attrs.get("status") == "trained" for x in study.trials) == 2


def test_changed_evaluation_is_refused_not_mixed(tmp_path, load, run_cli, tiny_space):
    p = tiny_space(tmp_path, search={"trials": 1, "sampler": "random", "reference_models": False})
    run_cli("run", str(p), "--no-progress", cwd=tmp_path)
    p2 = tiny_space(tmp_path, evaluation={"lr": 0.02}, search={"trials": 1, "sampler": "random",
                                                               "reference_models": False})
    r = run_cli("run", str(p2), "--no-progress", cwd=tmp_path, check=False)
    assert r.returncode == 2 and "evaluation.lr: study tiny was created with 0.01, this file has 0.02" in r.stderr
    assert "Traceback" not in r.stderr
    assert len(load(tmp_path).trials) >= 1


def test_missing_dataset_is_one_clear_line(tmp_path, run_cli, tiny_space):
    p = tiny_space(tmp_path, evaluation={"data_root": str(tmp_path / "nowhere")})
    r = run_cli("run", str(p), "--no-progress", cwd=tmp_path, check=False)
    assert r.returncode == 2
    assert "evaluation.dataset" in r.stderr and "apt-get install dataset-fashion-mnist" in r.stderr
    assert "Traceback" not in r.stderr


def test_bad_storage_url_is_clear_and_redacted(tmp_path, run_cli, tiny_space):
    p = tiny_space(tmp_path, storage="postgresql://mf:s3cret@127.0.0.1:1/nodb")
    r = run_cli("run", str(p), "--no-progress", cwd=tmp_path, check=False)
    assert r.returncode == 2
    assert "s3cret" not in r.stderr and "mf:***@127.0.0.1" in r.stderr
    assert "Traceback" not in r.stderr


def test_hypervolume_and_front_on_known_points():
    df = pd.DataFrame({
        "trial": [0, 1, 2, 3], "kind": ["search"] * 4, "arch_id": list("abcd"), "feasible": [True] * 4,
        "accuracy": [50.0, 80.0, 70.0, 60.0], "macs": [10.0, 80.0, 40.0, 60.0], "params": [1.0] * 4,
    })
    obj = [["accuracy", "maximize"], ["macs", "minimize"]]
    front = pareto_front(df, obj)
    assert list(front["arch_id"]) == ["a", "c", "b"]  # d is dominated by c
    # normalised boxes: (0.5 x 0.9) + (0.2 x 0.6) + (0.1 x 0.2) = 0.45 + 0.12 + 0.02
    assert hypervolume(df, obj, {"accuracy": 0.0, "macs": 100.0}) == pytest.approx(0.59)


def test_confirmed_means_keep_every_objective_so_a_latency_front_has_a_hypervolume():
    """search.confirm in a latency search: the confirmed table carries each architecture's latency, and the
    hypervolume of the confirmed means is computed in accuracy x latency (it raised KeyError: latency_ms)."""
    from mfsearch.analysis import confirmed

    rows = [{"trial": 0, "kind": "search", "arch_id": "a", "name": "", "accuracy": 80.0, "latency_ms": 5.0},
            {"trial": 1, "kind": "search", "arch_id": "b", "name": "", "accuracy": 70.0, "latency_ms": 2.0}]
    rows += [{"trial": 2 + i, "kind": "confirm", "arch_id": a, "name": "", "seed": s, "accuracy": acc,
              "latency_ms": lat} for i, (a, s, acc, lat) in enumerate(
                  [("a", 0, 80.0, 5.0), ("a", 1, 78.0, 5.0), ("b", 0, 70.0, 2.0), ("b", 1, 72.0, 2.0)])]
    df = pd.DataFrame(rows).assign(status=lambda d: d["kind"].map({"search": "trained", "confirm": "confirmed"}),
                                   feasible=True, macs=1e6, params=1e5, summary="x")
    conf = confirmed(df)
    assert list(conf["arch_id"]) == ["a", "b"] and list(conf["latency_ms"]) == [5.0, 2.0]
    assert list(conf["accuracy"]) == [79.0, 71.0] and list(conf["seeds"]) == [2, 2]
    obj = [["accuracy", "maximize"], ["latency", "minimize"]]
    # boxes of (79 %, 5 ms) and (71 %, 2 ms) under (0 %, 10 ms): 0.79 x 0.5 + 0.71 x 0.3
    assert hypervolume(conf, obj, {"accuracy": 0.0, "latency": 10.0}) == pytest.approx(0.79 * 0.5 + 0.71 * 0.3)


def test_confirmed_reads_a_results_csv_searched_architectures_stay_searched(tmp_path):
    """Read back from results.csv a searched architecture's empty name is NaN, not None: it is still a searched
    architecture (it was labelled a paper model, which left the confirmed searched front empty)."""
    from mfsearch.analysis import confirmed

    rows = [{"trial": 0, "kind": "search", "arch_id": "a", "name": None, "accuracy": 80.0},
            {"trial": 1, "kind": "reference", "arch_id": "p", "name": "mobile_former_26m", "accuracy": 70.0}]
    rows += [{"trial": 2 + i, "kind": "confirm", "arch_id": a, "name": n, "seed": s, "accuracy": acc}
             for i, (a, n, s, acc) in enumerate([("a", None, 0, 80.0), ("a", None, 1, 78.0),
                                                  ("p", "mobile_former_26m", 0, 70.0)])]
    df = pd.DataFrame(rows).assign(status=lambda d: d["kind"].map({"search": "trained", "reference": "trained",
                                                                   "confirm": "confirmed"}),
                                   feasible=True, macs=1e6, params=1e5, summary="x")
    df.to_csv(tmp_path / "results.csv", index=False)
    for frame in (df, pd.read_csv(tmp_path / "results.csv")):
        conf = confirmed(frame).set_index("arch_id")
        assert conf.loc["a", "source"] == "search" and conf.loc["a", "name"] == ""
        assert conf.loc["p", "source"] == "reference" and conf.loc["p", "name"] == "mobile_former_26m"


def test_trials_frame_is_tidy(tmp_path):
    study = optuna.create_study(directions=["maximize", "minimize"])
    t = study.ask()
    t.suggest_int("x", 0, 3)
    t.set_user_attr("arch_id", "abc")
    t.set_user_attr("config", {"a": 1})
    study.tell(t, [1.0, 2.0])
    df = trials_frame(study)
    assert df.loc[0, "arch_id"] == "abc" and json.loads(df.loc[0, "config"]) == {"a": 1}
    assert "p.x" in df.columns


def test_within_budget_uses_1000_classes(tiny_yaml):
    space = load_space(tiny_yaml)
    cfg = MobileFormerConfig.from_dict(dict(space.base_config.to_dict(), num_classes=10))
    assert within_budget(cfg, space.budget)[1]["macs"] == complexity(cfg.replace(num_classes=1000)).macs


def test_single_objective_tpe(tmp_path, load, tiny_space):
    p = tiny_space(tmp_path, objectives=[{"accuracy": "maximize"}],
                   search={"trials": 2, "sampler": "tpe", "reference_models": False})
    search(p, tmp_path)
    study = load(tmp_path)
    assert len(study.directions) == 1
    best = max((t for t in study.trials if t.user_attrs.get("status") == "trained"), key=lambda t: t.values[0])
    assert best.values == [best.user_attrs["accuracy"]]


def test_a_trial_between_status_and_tell_still_counts_as_claimed():
    """A worker writes ``status: trained`` just before ``tell``: another worker counting then must not overshoot."""
    from mfsearch.search.optuna_engine import in_flight

    study = optuna.create_study()
    claimed = study.ask()
    claimed.set_user_attr("arch_id", "a" * 16)
    claimed.set_user_attr("status", "training")
    told_soon = study.ask()
    told_soon.set_user_attr("arch_id", "b" * 16)
    told_soon.set_user_attr("status", "trained")
    study.ask()  # asked but not claimed yet: no arch_id
    assert in_flight(study, exclude=None) == {"a" * 16: claimed.number, "b" * 16: told_soon.number}
    assert in_flight(study, exclude=claimed.number) == {"b" * 16: told_soon.number}


def test_the_target_count_reads_one_snapshot(tmp_path, tiny_space):
    """Another worker's ``tell`` landing between two reads must not hide its trial from the count."""
    from mfsearch.search.optuna_engine import OptunaSearch

    space = load_space(tiny_space(tmp_path, search={"trials": 2, "sampler": "random", "reference_models": False}))
    study = optuna.create_study(directions=["maximize", "minimize"])
    done, other = study.ask(), study.ask()
    for t, arch, status in ((done, "a" * 16, "trained"), (other, "b" * 16, "trained")):
        t.set_user_attr("arch_id", arch)
        t.set_user_attr("status", status)
    study.tell(done, [50.0, 1e6])  # trained and told; `other` is trained, about to be told by its worker
    real = study.get_trials
    calls = []

    def get_trials(*a, **k):  # the other worker tells right after this worker's first read
        out = real(*a, **k)
        calls.append(1)
        if len(calls) == 1:
            study.tell(other, [60.0, 2e6])
        return out

    study.get_trials = get_trials
    search = OptunaSearch(space, StudyRef("t", "memory", tmp_path), progress=False)
    search._runs, search.stats = {"infeasible": 0, "dup": 0, "fail": 0}, {"trained": 0, "duplicates": 0,
                                                                           "infeasible": 0, "failed": 0}
    assert search._next_locked(study, 10, None) == "wait"  # 1 told + 1 in flight: nothing new is claimed
    assert len(real()) == 2
