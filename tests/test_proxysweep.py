"""proxy-check --sweep: sweep files, run order, variant records, and a real tiny sweep with resume."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from mfsearch.errors import InputError
from mfsearch.proxycheck import cpu_minutes, select_records
from mfsearch.proxycheck.sweep import load_sweep, sweep_jobs
from mfsearch.space import load_space

SMALL = {"train_size": 256, "val_size": 128}  # on the tiny space: 16x16, one epoch
MODELS = ["52m", "26m", "96m"]
SHIPPED = Path(__file__).parent.parent / "experiments" / "proxy_sweeps" / "macs300.yaml"


def sweep_file(tmp_path: Path, settings: dict, name: str = "smoke", **top) -> Path:
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump({"name": name, "seeds": [0, 1], "models": MODELS, "settings": settings, **top},
                                sort_keys=False))
    return p


@pytest.mark.slow
def test_sweep_reports_resumes_and_shares_runs_with_a_plain_check(tmp_path, tiny_yaml, run_cli):
    f = sweep_file(tmp_path, {"small": SMALL, "small_det": {**SMALL, "deterministic": True}})
    r = run_cli("proxy-check", str(tiny_yaml), "--sweep", str(f), cwd=tmp_path)
    order = re.findall(r"seed (\d) \[(\w+)\]", r.stderr)
    assert order == [(sd, s) for sd in "01" for s in ("small", "small_det") for _ in MODELS]  # seed-major
    out = tmp_path / "runs" / "proxy-check"
    rep = json.loads((out / "sweep-smoke" / "report.json").read_text())
    rows = {x["setting"]: x for x in rep["rows"]}
    assert list(rows) == ["small", "small_det"]
    for x in rows.values():
        assert x["seeds_done"] == 2 and len(x["per_seed"]) == 2 and x["meets_goals"] is None  # 2 of 3 seeds
        assert -1 <= x["per_seed_spearman_min"] <= x["per_seed_spearman_mean"] <= 1
        assert x["interval"]["spearman"][0] <= x["interval"]["spearman"][1]
        assert x["seed_std_max"] >= x["seed_std_mean"] >= 0 and x["cpu_minutes"] > 0 and x["cpu_from"] == "cpu_s"
        assert x["threads_used"] == [1]
    (check,) = rep["variant_checks"]
    assert (check["setting"], check["reference"]) == ("small_det", "small") and len(check["seeds"]) == 2
    assert all(0 <= c["max_abs_diff"] <= 100 for c in check["seeds"])
    text = (out / "sweep-smoke" / "report.md").read_text()
    assert "| small | train_size=256, val_size=128 | 2/2 (6 runs) |" in text and "Thread / determinism check" in text
    assert (out / "sweep-smoke" / "sweep.png").stat().st_size > 5000
    # the deterministic variant shares its sibling's eval_id folder; its runs are told apart
    (folder,) = [p for p in out.iterdir() if p.name.startswith("tiny-")]
    recs = [json.loads(x) for x in (folder / "paper.jsonl").read_text().splitlines()]
    assert len(recs) == 12 and all(x["cpu_s"] > 0 and x["threads"] == 1 for x in recs)
    assert sum(x["deterministic"] for x in recs) == 6
    # resumed: nothing left to train, and a report of what is stored trains nothing
    sweep = load_sweep(f, load_space(tiny_yaml))
    assert sweep_jobs(sweep, workers=1, runs=tmp_path / "runs") == []
    stored = (folder / "paper.jsonl").read_text()
    r2 = run_cli("proxy-check", str(tiny_yaml), "--sweep", str(f), "--report-only", cwd=tmp_path)
    assert "top-1" not in r2.stderr and "| small_det |" in r2.stdout
    assert json.loads((out / "sweep-smoke" / "report.json").read_text())["rows"] == rep["rows"]
    # a plain proxy-check of the same settings finds the sweep's runs, and not the deterministic variant's
    r3 = run_cli("proxy-check", str(tiny_yaml), "--set", "evaluation.train_size=256",
                 "--set", "evaluation.val_size=128", "--models", ",".join(MODELS), "--seeds", "2", cwd=tmp_path)
    assert "top-1" not in r3.stderr and (folder / "paper.jsonl").read_text() == stored
    plain = json.loads((folder / "report.json").read_text())["paper"]
    assert [x["seeds"] for x in plain["rows"]] == [2, 2, 2]
    assert plain["per_seed"] == rows["small"]["per_seed"]


def test_sweep_file_errors_name_file_line_and_field(tmp_path, tiny_yaml, run_cli):
    space = load_space(tiny_yaml)
    bad = [({"a": {"val_size": 5}}, {}, r":\d+: settings.a.val_size: must be in \[10"),
           ({"a": {"bogus": 1}}, {}, r"settings.a.bogus: unknown key"),
           ({"a": {"augment": "yes"}}, {}, r"settings.a.augment: must be true or false"),
           ({"a": {}, "b": {"cuda_graphs": False}}, {}, r"settings.b: trains exactly what setting a trains"),
           ({"a": SMALL}, {"models": ["26m", "52m"]}, r"models: a rank correlation needs at least 3"),
           ({"a": SMALL}, {"models": ["26m", "52m", "7b"]}, r"models: unknown paper model '7b'"),
           ({"a": SMALL}, {"seeds": [0, 0]}, r"seeds: has repeated seeds"),
           ({}, {}, r"settings: names no setting"),
           ({"a": SMALL}, {"trials": 3}, r"trials: unknown key")]
    for settings, top, msg in bad:
        with pytest.raises(InputError, match=msg):
            load_sweep(sweep_file(tmp_path, settings, **top), space)
    # a thread variant and a deterministic variant of one setting are distinct settings
    ok = load_sweep(sweep_file(tmp_path, {"a": SMALL, "a_t2": {**SMALL, "threads": 2},
                                          "a_det": {**SMALL, "deterministic": True}}), space)
    assert len({s.evaluation.eval_id() for s in ok.settings}) == 1
    assert [s.variant for s in ok.settings] == [(None, False), (2, False), (None, True)]
    r = run_cli("proxy-check", str(tiny_yaml), "--sweep", str(sweep_file(tmp_path, {"a": {"val_size": 5}})),
                cwd=tmp_path, check=False)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "settings.a.val_size" in r.stderr, r.stderr
    r = run_cli("proxy-check", str(tiny_yaml), "--sweep", str(sweep_file(tmp_path, {"a": SMALL})), "--zero-cost",
                cwd=tmp_path, check=False)
    assert r.returncode == 2 and "--zero-cost" in r.stderr and "Traceback" not in r.stderr


def test_run_order_is_seed_major_cheapest_first(tmp_path, tiny_yaml):
    settings = {"big": {"image_size": 32}, "base_det": {"deterministic": True}, "base": {}, "long": {"epochs": 3}}
    sweep = load_sweep(sweep_file(tmp_path, settings, seeds=[4, 5]), load_space(tiny_yaml))
    jobs = sweep_jobs(sweep, workers=1, runs=tmp_path / "runs")
    order = [(rec["seed"], rec["setting"]) for _, _, rec, _ in jobs]
    # seed-major; cheapest first; the thread / determinism variants after the candidates of their seed
    assert order == [(sd, s) for sd in (4, 5) for s in ("base", "long", "big", "base_det") for _ in MODELS]
    assert all(args[1]["seed"] == rec["seed"] for _, args, rec, _ in jobs)
    folders = {rec["setting"]: path.parent.name for _, _, rec, path in jobs}  # one eval_id folder per setting
    assert len(set(folders.values())) == 3 and folders["base"] == folders["base_det"]


def test_a_thread_variant_runs_no_more_at_once_than_the_cores_hold(tmp_path, tiny_yaml):
    from mfsearch.proxycheck.sweep import worker_groups

    sweep = load_sweep(sweep_file(tmp_path, {"base": {}, "t2": {"threads": 2}}, seeds=[0, 1]), load_space(tiny_yaml))
    jobs = sweep_jobs(sweep, workers=2, runs=tmp_path / "runs")
    groups = worker_groups(jobs, 2, cores=2)
    # seed-major order kept; the 2-thread runs one at a time on 2 cores, the 1-thread ones two at a time
    assert [(g[0][2]["seed"], g[0][2]["setting"], len(g), w) for g, w in groups] == [
        (0, "base", len(MODELS), 2), (0, "t2", len(MODELS), 1), (1, "base", len(MODELS), 2), (1, "t2", len(MODELS), 1)]
    assert [j for g, _ in groups for j in g] == jobs
    assert [w for _, w in worker_groups(jobs, 2, cores=4)] == [2]  # room for two 2-thread runs: one group
    assert [w for _, w in worker_groups(jobs, 1, cores=2)] == [1]


def test_records_of_variants_do_not_mix():
    def rec(name: str, seed: int, acc: float, **kw) -> dict:
        return {"name": name, "seed": seed, "accuracy": acc, "total_s": 1.0, **kw}

    old = rec("a", 0, 1.0)  # stored before threads were recorded
    recs = [old, rec("a", 0, 2.0, threads=1), rec("a", 0, 3.0, threads=2, threads_pinned=True),
            rec("a", 0, 4.0, threads=1, deterministic=True), rec("a", 1, 5.0, threads=1),
            rec("b", 0, 6.0, threads=1, threads_pinned=True)]
    acc = lambda rs: sorted((r["name"], r["seed"], r["accuracy"]) for r in rs)  # noqa: E731
    assert acc(select_records(recs, ["a", "b"], [0, 1])) == [("a", 0, 1.0), ("a", 1, 5.0)]  # first stored wins
    assert acc(select_records(recs, ["a", "b"], [0, 1], pinned_threads=2)) == [("a", 0, 3.0)]
    assert acc(select_records(recs, ["a", "b"], [0, 1], pinned_threads=1)) == [("a", 0, 2.0), ("a", 1, 5.0),
                                                                               ("b", 0, 6.0)]
    assert acc(select_records(recs, ["a", "b"], [0, 1], deterministic=True)) == [("a", 0, 4.0)]
    assert acc(select_records(recs, ["a"], [1])) == [("a", 1, 5.0)]
    assert cpu_minutes([{"cpu_s": 30.0, "total_s": 90.0}, {"cpu_s": 90.0, "total_s": 90.0}]) == (2.0, "cpu_s")
    assert cpu_minutes([{"cpu_s": 30.0, "total_s": 90.0}, {"total_s": 90.0}])[0] == 2.0
    assert "without cpu_s" in cpu_minutes([{"total_s": 90.0}])[1]


@pytest.mark.slow
def test_estimate_times_every_setting_and_trains_nothing(tmp_path, tiny_yaml, run_cli):
    small = {**SMALL, "batch_size": 32}
    f = sweep_file(tmp_path, {"small": small, "wide": {**small, "image_size": 48}}, seeds=[0])
    r = run_cli("proxy-check", str(tiny_yaml), "--sweep", str(f), "--estimate", cwd=tmp_path)
    est = json.loads((tmp_path / "runs" / "proxy-check" / "sweep-smoke" / "estimate.json").read_text())
    assert set(est["settings"]) == {"small", "wide"}
    assert 0 < est["settings"]["small"]["per_seed_minutes"] < est["settings"]["wide"]["per_seed_minutes"]
    assert "| total |" in r.stdout
    assert not [p for p in (tmp_path / "runs" / "proxy-check").iterdir() if p.name.startswith("tiny-")]


def test_shipped_sweep_file_loads_on_its_space():
    root = Path(__file__).parent.parent
    sweep = load_sweep(SHIPPED, load_space(root / "spaces" / "macs300.yaml"))
    names = [s.name for s in sweep.settings]
    assert names[0] == "base" and sweep.settings[0].overrides == {} and sweep.seeds == (0, 1, 2)
    assert len(sweep.models) == 7 and "strong" in names
    assert sweep.settings[0].evaluation.eval_id() == "0690aee35625"  # base: the shipped proxy, its stored runs
    val1k = next(s for s in sweep.settings if s.name == "val1k")  # the proxy shipped before the sweep chose val5k
    assert val1k.evaluation.eval_id() == "286cf287a99b"
    text = SHIPPED.read_text()
    for s in sweep.settings:  # every setting says what it is for
        line = next(x for x in text.splitlines() if x.strip().startswith(f"{s.name}:"))
        assert "#" in line, s.name
