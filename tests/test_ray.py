"""The Ray Tune engine on a real local Ray runtime and on a real two-node cluster: same store, same records."""

import subprocess
import sys

import optuna
import pytest

from mfsearch.store import default_storage_url, open_storage

from .raycluster import RayCluster

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_ray_engine_then_optuna_continues(tmp_path, run_cli, tiny_space):
    p = tiny_space(tmp_path, name="raytiny", evaluation={"epochs": 2},
                   search={"trials": 3, "sampler": "tpe", "reference_models": False, "engine": "ray",
                           "cpus_per_trial": 1, "max_concurrent": 2})
    r = run_cli("run", str(p), "--no-progress", cwd=tmp_path)
    assert "study raytiny: 3 architectures evaluated" in r.stdout
    url = default_storage_url(tmp_path / "runs" / "raytiny")
    trials = optuna.load_study(study_name="raytiny", storage=open_storage(url)).trials
    ray_trained = [t for t in trials if t.user_attrs.get("status") == "trained"]
    assert len(ray_trained) == 3 == len({t.user_attrs["arch_id"] for t in ray_trained})
    for t in ray_trained:
        ua = t.user_attrs
        assert ua["engine"] == "ray" and ua["ray_trial_id"] and ua["history"]
        assert ua["macs"] <= 8_500_000 and all(v <= 0 for v in t.constraints.values())
        assert t.values[0] == ua["accuracy"] and 1 <= len(ua["history"]) <= 2  # ASHA may stop after epoch 1
        assert [h["epoch"] for h in ua["history"]] == list(range(1, len(ua["history"]) + 1))  # each epoch once
        assert ua["stopped_early"] == (len(ua["history"]) < 2) and ua["ray_node"]["node_id"]
        assert ua["cpu_s"] > 0  # what it cost, stopped by ASHA or not
    over = [t for t in trials if t.user_attrs.get("status") == "over_budget"]
    assert all("history" not in t.user_attrs for t in over)
    # the Optuna engine continues the same study
    r = run_cli("run", str(p), "--no-progress", "--engine", "optuna", "--trials", "4", cwd=tmp_path)
    assert "study raytiny: 4 architectures evaluated" in r.stdout
    trials = optuna.load_study(study_name="raytiny", storage=open_storage(url)).trials
    engines = [t.user_attrs.get("engine", "optuna") for t in trials if t.user_attrs.get("status") == "trained"]
    assert sorted(engines) == ["optuna", "ray", "ray", "ray"]


def test_cli_on_a_two_node_cluster_with_token_authentication(tmp_path, tiny_space):
    """Two real raylets (`ray start --head`, `ray start --address`, one CPU each, RAY_AUTH_MODE=token) and
    `mfsearch run --engine ray --address`: every trial lands in the store, and the trials ran on both nodes."""
    p = tiny_space(tmp_path, name="raycluster",
                   search={"trials": 3, "sampler": "random", "reference_models": False, "engine": "ray",
                           "cpus_per_trial": 1, "max_concurrent": 2})
    cluster = RayCluster()
    try:
        assert len(set(cluster.node_ids)) == 2
        run = [sys.executable, "-m", "mfsearch.cli", "run", str(p), "--engine", "ray", "--address", cluster.address,
               "--no-progress"]
        # without the token: one line that says what to set
        (tmp_path / "home").mkdir()
        env = {k: v for k, v in cluster.env.items() if k != "RAY_AUTH_TOKEN_PATH"}
        env.update(HOME=str(tmp_path / "home"), MFSEARCH_RUNS=str(tmp_path / "runs"))
        r = subprocess.run(run, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith(f"mfsearch: error: Ray cluster {cluster.address}: cannot connect (")
        assert "RAY_AUTH_MODE=token" in last and "RAY_AUTH_TOKEN_PATH" in last
        # with it
        r = subprocess.run(run, cwd=tmp_path, env=dict(cluster.env, MFSEARCH_RUNS=str(tmp_path / "runs")),
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        assert "study raycluster: 3 architectures evaluated" in r.stdout
    finally:
        cluster.stop()
    url = default_storage_url(tmp_path / "runs" / "raycluster")
    trials = optuna.load_study(study_name="raycluster", storage=open_storage(url)).trials
    trained = [t for t in trials if t.user_attrs.get("status") == "trained"]
    assert len(trained) == 3 == len({t.user_attrs["arch_id"] for t in trained})
    assert all(t.state.name == "COMPLETE" and t.user_attrs["engine"] == "ray" for t in trained)
    # one epoch, no ASHA: each trial's own final record, its one epoch once
    assert all(not t.user_attrs.get("stopped_early") and len(t.user_attrs["history"]) == 1 for t in trained)
    assert all(t.values[0] == t.user_attrs["accuracy"] == t.user_attrs["history"][0]["val_acc"] for t in trained)
    ran_on = [t.user_attrs["ray_node"] for t in trained]
    assert {n["node_id"] for n in ran_on} == set(cluster.node_ids)  # both nodes trained
    assert all(n["host"] and n["pid"] > 0 for n in ran_on)
