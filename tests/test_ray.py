"""The Ray Tune engine on a real local Ray runtime: same store, same records, continued by Optuna."""

import optuna

from mfsearch.store import default_storage_url, open_storage

from .test_search import run_cli, tiny_space


def test_ray_engine_then_optuna_continues(tmp_path):
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
    over = [t for t in trials if t.user_attrs.get("status") == "over_budget"]
    assert all("history" not in t.user_attrs for t in over)
    # the Optuna engine continues the same study
    r = run_cli("run", str(p), "--no-progress", "--engine", "optuna", "--trials", "4", cwd=tmp_path)
    assert "study raytiny: 4 architectures evaluated" in r.stdout
    trials = optuna.load_study(study_name="raytiny", storage=open_storage(url)).trials
    engines = [t.user_attrs.get("engine", "optuna") for t in trials if t.user_attrs.get("status") == "trained"]
    assert sorted(engines) == ["optuna", "ray", "ray", "ray"]
