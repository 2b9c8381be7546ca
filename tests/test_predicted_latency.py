"""Searches with predicted latency (``latency: {source: predicted, table: FILE}``), the latency statistic, and
evaluation settings taken from another file."""

from __future__ import annotations

import json
import struct
import subprocess
import sys

import optuna
import pandas as pd
import pytest
import yaml

from mfsearch.analysis import pareto_front
from mfsearch.deploy.latency_table import load_table, predict_latency
from mfsearch.errors import InputError
from mfsearch.models import MobileFormer, get_config
from mfsearch.search.optuna_engine import check_definition, study_attrs
from mfsearch.space import load_space
from mfsearch.space.repair import repair
from mfsearch.space.sample import random_suggest, sample_config
from mfsearch.store import trial_constraints

TINY_LAT = {"threads": 1, "input_size": 32, "runs": 5, "warmup": 1}


def small_space(tmp_path, tiny_space, **changes):
    """A corner of the tiny space with few units: a table builds in seconds at 32x32."""
    return tiny_space(tmp_path, name="small", space={
        "num_tokens": 2, "token_dim": 32, "stem": 8, "head": 64, "activation": {"choice": ["dyrelu", "relu"]},
        "former_heads": 4, "groups": 1, "lite": {"out": 8, "e1": 2, "stride": 2},
        "stages": [{"out": {"choice": [8, 16]}, "depth": {"int": [1, 2]}, "e1": 2, "stride": 2, "down_e1": 2,
                    "down_e2": 2}]}, **changes)


@pytest.fixture(scope="module")
def table(tmp_path_factory, run_cli, tiny_space):
    """A latency table of the small space at 32x32 (cpu_min, one thread), built by the command line."""
    tmp = tmp_path_factory.mktemp("ptable")
    out = tmp / "tables" / "small.json"
    run_cli("latency-table", "build", "--space", str(small_space(tmp, tiny_space)), "--input-size", "32",
            "--no-presets", "--calibration", "4", "--out", str(out), cwd=tmp)
    return out


def predicted_space(folder, tiny_space, table_path, budget=None, **changes):
    lat = {**TINY_LAT, "source": "predicted", "table": "tables/small.json", "statistic": "cpu_min"}
    (folder / "tables").mkdir(exist_ok=True)
    if table_path != folder / "tables" / "small.json":
        (folder / "tables" / "small.json").write_text(table_path.read_text())
    kw = {"objectives": [{"accuracy": "maximize"}, {"latency": "minimize"}], "latency": lat,
          "search": {"trials": 3, "sampler": "random", "reference_models": False}}
    if budget is not None:
        kw["budget"] = {"latency_ms": budget}
    kw.update(changes)
    return small_space(folder, tiny_space, **kw)


def _png_width(path):
    with open(path, "rb") as f:
        head = f.read(24)
    return struct.unpack(">I", head[16:20])[0]


@pytest.mark.slow
def test_a_predicted_latency_search_builds_no_model_per_sample_and_measures_its_front(
        tmp_path, table, load, run_cli, tiny_space):
    t = load_table(table)
    space = load_space(predicted_space(tmp_path, tiny_space, table))
    preds = sorted({round(predict_latency(sample_config(space, random_suggest(s)), t), 4) for s in range(40)})
    assert len(preds) == 8  # activation x stage width x depth
    budget = preds[3]  # four of the eight fit: three to train, and over-budget samples on the way
    p = predicted_space(tmp_path, tiny_space, table, budget)
    r = run_cli("run", str(p), "--no-progress", cwd=tmp_path)
    assert "measuring" in r.stderr and "front member(s)" in r.stderr
    study = load(tmp_path, "small")
    trials = study.trials
    trained = [x for x in trials if x.user_attrs.get("status") == "trained"]
    over = [x for x in trials if x.user_attrs.get("status") == "over_budget"]
    assert len(trained) == 3 and over, [x.user_attrs.get("status") for x in trials]
    for x in trained + over:  # every value is the table's prediction: nothing was timed per sample
        cfg = sample_config(space, lambda n, d, params=x.params: params[n])
        assert x.user_attrs["latency_ms"] == round(predict_latency(cfg, t), 4)
    for x in trained:
        rec = x.user_attrs["latency"]
        assert rec["source"] == "predicted" and rec["statistic"] == "cpu_min" and "median_ms" not in rec
        assert rec["device"] == t.device and rec["runtime_version"] == t.runtime_version
        assert x.user_attrs["latency_ms"] <= budget and x.values[1] == x.user_attrs["latency_ms"]
    for x in over:  # told infeasible without being built or trained
        assert x.user_attrs["latency_ms"] > budget and "history" not in x.user_attrs and "config" not in x.user_attrs
        assert trial_constraints(x)[list(study.user_attrs["constraint_names"]).index("latency")] > 0
    assert study.user_attrs["definition"]["latency"]["source"] == "predicted"
    assert study.user_attrs["definition"]["latency"]["table_built"] == t.meta["created"]
    # after the search: every front member measured for real, both values kept
    df = pd.read_csv(tmp_path / "runs" / "small" / "results.csv")
    front = pareto_front(df, study.user_attrs["objectives"])
    assert len(front) >= 1 and front["latency_measured_ms"].notna().all()
    for _, row in front.iterrows():
        m = study.user_attrs[f"latency_measured:{row['arch_id']}"]
        assert m["latency_measured_ms"] == row["latency_measured_ms"] > 0
        assert m["predicted_ms"] == pytest.approx(row["latency_ms"])
        assert m["statistic"] == "cpu_min" and m["device"] == t.device and m["runtime_version"] == t.runtime_version
        assert len(m["passes"]) == 2 and m["latency_measured_ms"] == min(m["passes"])
    not_front = set(df["arch_id"]) - set(front["arch_id"])
    assert all(f"latency_measured:{a}" not in study.user_attrs for a in not_front)
    assert _png_width(tmp_path / "runs" / "small" / "pareto_latency.png") == 1440  # two panels: predicted, measured
    md = (tmp_path / "runs" / "small" / "pareto.md").read_text()
    assert "measured latency (ms)" in md
    point = json.loads(md.split("(reference point ")[1].split(")")[0])  # in the objectives' space only
    assert set(point) == {n for n, _ in study.user_attrs["objectives"]} == {"accuracy", "latency"}
    # a second run finds the front measured already
    r = run_cli("run", str(p), "--no-progress", cwd=tmp_path)
    assert "measuring" not in r.stderr


def test_a_predicted_budget_prunes_and_repairs_without_building_a_model(tmp_path, table, tiny_space, monkeypatch):
    t = load_table(table)
    base = load_space(predicted_space(tmp_path, tiny_space, table))
    grid = [{"activation": a, "stages.0.out": w, "stages.0.depth": d}
            for a in ("dyrelu", "relu") for w in (8, 16) for d in (1, 2)]

    def pred(params):
        return round(predict_latency(sample_config(base, lambda n, dist: params[n]), t), 4)

    largest = max(grid, key=pred)
    cheapest_like_it = {**largest, "stages.0.out": 8, "stages.0.depth": 1}  # repair lowers widths and depths only
    budget = pred(cheapest_like_it)
    assert budget < pred(largest)
    space = load_space(predicted_space(tmp_path, tiny_space, table, budget))

    def no_model(self, *a, **k):
        raise AssertionError("a model was built to check a predicted latency budget")

    monkeypatch.setattr(MobileFormer, "__init__", no_model)
    for params in grid:  # pruned or kept by the table's prediction alone
        fits, cost = space.within_budget(sample_config(space, lambda n, dist, p=params: p[n]))
        assert cost["latency_ms"] == pred(params) and fits == (pred(params) <= budget)
    fixed = repair(space, largest)  # MACs alone are no budget here: only the predicted latency makes it repair
    assert fixed is not None and fixed != largest and pred(fixed) <= budget


def test_an_unknown_or_missing_runtime_is_one_line(tmp_path, table, run_cli, tiny_space, without_onnxruntime):
    p = predicted_space(tmp_path, tiny_space, table, 5.0)
    data = yaml.safe_load(p.read_text())
    data["latency"]["runtime"] = "trt"
    bad = tmp_path / "trt.yaml"
    bad.write_text(yaml.safe_dump(data))
    r = run_cli("run", str(bad), "--no-progress", cwd=tmp_path, check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "latency.runtime" in r.stderr and "trt" in r.stderr
    env = without_onnxruntime  # the import really fails, in a real process
    r = subprocess.run([sys.executable, "-m", "mfsearch.cli", "run", str(p), "--no-progress"], capture_output=True,
                       text=True, cwd=tmp_path, env=env, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    line = r.stderr.strip()
    assert len(line.splitlines()) == 1 and f"{p}: latency.runtime: onnxruntime is not installed" in line
    assert "pip install onnx onnxruntime" in line
    assert not (tmp_path / "runs" / "small" / "journal.log").exists()  # refused before any work


def test_a_table_for_another_machine_or_statistic_is_one_line(tmp_path, table, run_cli, tiny_space):
    p = predicted_space(tmp_path, tiny_space, table, 5.0)
    stored = tmp_path / "tables" / "small.json"
    good = stored.read_text()
    cases = [("device", "cpu: Another CPU (1 thread)", "built on 'cpu: Another CPU (1 thread)'"),
             ("runtime_version", "onnxruntime 0.0.1", "built with onnxruntime 0.0.1"),
             ("statistic", "wall", "its entries are wall times, cpu_min was asked for")]
    for field, value, msg in cases:
        data = json.loads(good)
        data[field] = value
        stored.write_text(json.dumps(data))
        r = run_cli("run", str(p), "--no-progress", cwd=tmp_path, check=False)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        line = r.stderr.strip()
        assert len(line.splitlines()) == 1 and msg in line and str(stored) in line
        assert "latency.table" in line and f"latency-table build --space {p}" in line
    stored.unlink()
    r = run_cli("run", str(p), "--no-progress", cwd=tmp_path, check=False)
    assert r.returncode == 2 and "no such latency table" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs" / "small" / "journal.log").exists()  # refused before any work


@pytest.mark.parametrize("latency, field", [
    ({"source": "predicted", "statistic": "cpu_min"}, "latency.table"),
    ({"source": "predicted", "table": "t.json"}, "latency.statistic"),
    ({"source": "predicted", "table": "t.json", "statistic": "cpu_min", "runtime": "eager"}, "latency.runtime"),
    ({"source": "predicted", "table": "t.json", "statistic": "cpu_min", "batch": 4}, "latency.batch"),
    ({"table": "t.json"}, "latency.table"),
    ({"source": "guessed"}, "latency.source"),
    ({"statistic": "fastest"}, "latency.statistic"),
    ({"statistic": "cpu_min", "device": "cuda"}, "latency.statistic"),
])
def test_bad_latency_source_settings_name_the_field(tmp_path, tiny_space, latency, field):
    p = tiny_space(tmp_path, objectives=[{"accuracy": "maximize"}, {"latency": "minimize"}], latency=latency)
    with pytest.raises(InputError, match=rf"{field}: "):
        load_space(p)


def test_ray_takes_a_predicted_latency_budget_not_a_measured_one(tmp_path, tiny_space):
    lat = {"source": "predicted", "table": "t.json", "statistic": "cpu_min"}
    assert load_space(tiny_space(tmp_path, budget={"latency_ms": 5}, latency=lat,
                                 search={"engine": "ray"})).predicts_latency
    with pytest.raises(InputError, match="search.engine: "):
        load_space(tiny_space(tmp_path, budget={"latency_ms": 5}, search={"engine": "ray"}))


def test_the_statistic_and_source_are_part_of_a_studys_definition(tmp_path, tiny_space):
    def space(**lat):
        return load_space(tiny_space(tmp_path, objectives=[{"accuracy": "maximize"}, {"latency": "minimize"}],
                                     latency={**TINY_LAT, **lat}))

    wall = space()
    assert wall.latency.statistic == "wall" and wall.latency.source == "measured"  # today's behaviour by default
    study = optuna.create_study(directions=["maximize", "minimize"])
    for k, v in study_attrs(wall).items():
        study.set_user_attr(k, v)
    check_definition(wall, study, "tiny")
    with pytest.raises(InputError, match=r"latency\.statistic: study tiny was created with 'wall', this file has "
                                         r"'cpu_min'"):
        check_definition(space(statistic="cpu_min"), study, "tiny", allow_change=True)
    # a study pinned before the setting existed measured the median wall clock: it goes on under that only
    old = json.loads(json.dumps(study.user_attrs["definition"]))
    for k in ("source", "table", "statistic"):
        del old["latency"][k]
    study.set_user_attr("definition", old)
    check_definition(wall, study, "tiny")
    with pytest.raises(InputError, match=r"latency\.statistic"):
        check_definition(space(statistic="cpu_min"), study, "tiny")


def test_a_measured_search_reads_its_statistic(tmp_path, load, run_cli, tiny_space):
    p = tiny_space(tmp_path, objectives=[{"synflow": "maximize"}, {"latency": "minimize"}],
                   latency={**TINY_LAT, "statistic": "cpu_min"},
                   search={"trials": 2, "sampler": "random", "reference_models": False})
    run_cli("run", str(p), "--no-progress", cwd=tmp_path)
    done = [t for t in load(tmp_path).trials if t.user_attrs.get("status") == "trained"]
    assert len(done) == 2
    for t in done:
        lat = t.user_attrs["latency"]
        assert lat["source"] == "measured" and lat["statistic"] == "cpu_min"
        assert t.user_attrs["latency_ms"] == lat["cpu_min_ms"] == t.values[1] and lat["cpu_min_ms"] < lat["median_ms"]


def test_evaluation_from_another_file(tmp_path, tiny_space, tiny_yaml):
    base = yaml.safe_load(tiny_yaml.read_text())["evaluation"]
    p = tiny_space(tmp_path, name="child", evaluation={"from": str(tiny_yaml), "epochs": 2})
    ev = load_space(p).evaluation
    assert ev.epochs == 2 and ev.train_size == base["train_size"] and ev.image_size == base["image_size"]
    rel = tmp_path / "sub"
    rel.mkdir()
    (rel / "parent.yaml").write_text(yaml.safe_dump({"evaluation": {**base, "lr": 0.02}}))
    data = yaml.safe_load(p.read_text())
    data["evaluation"] = {"from": "sub/parent.yaml"}  # relative to the file that says it
    p.write_text(yaml.safe_dump(data))
    assert load_space(p).evaluation.lr == 0.02
    for ev_raw, msg in (({"from": "sub/none.yaml"}, "none.yaml"),
                        ({"from": 3}, "evaluation.from: must be the path"),
                        ({"from": "sub/parent.yaml", "epochs": 0}, f"{p}:.*evaluation.epochs")):
        data["evaluation"] = ev_raw
        p.write_text(yaml.safe_dump(data))
        with pytest.raises(InputError, match=msg):
            load_space(p)
    (rel / "parent.yaml").write_text(yaml.safe_dump({"evaluation": {**base, "epochs": 0}}))
    data["evaluation"] = {"from": "sub/parent.yaml"}
    p.write_text(yaml.safe_dump(data))
    with pytest.raises(InputError, match="parent.yaml.*evaluation.epochs"):  # the other file's mistake, its lines
        load_space(p)
    (rel / "parent.yaml").write_text(yaml.safe_dump({"evaluation": {"from": "x.yaml"}}))
    with pytest.raises(InputError, match="evaluation.from: .*from another file too"):
        load_space(p)


def test_shipped_latency_space_is_macs300s_proxy_under_294ms_latency():
    space = load_space("spaces/latency_cpu.yaml")
    assert space.evaluation == load_space("spaces/macs300.yaml").evaluation
    assert space.predicts_latency and space.latency.statistic == "cpu_min" and space.latency.threads == 1
    assert space.budget.latency_ms is not None and space.budget.macs is None
    assert sample_config(space, lambda n, d: {  # Mobile-Former-294M is a point of the space
        "activation": "dyrelu", "bridges": "both", "num_tokens": 6, "token_dim": 192, "stem": 16, "head": 1920,
        "stages.0.out": 24, "stages.0.depth": 2, "stages.1.out": 48, "stages.1.depth": 2, "stages.1.e1": 4,
        "stages.2.out": 96, "stages.2.depth": 2, "stages.2.e1": 4, "stages.3.out": 128, "stages.3.depth": 2,
        "stages.4.out": 192, "stages.4.depth": 3, "stages.4.e1": 6}[n]).arch_id == \
        get_config("mobile_former_294m").arch_id
