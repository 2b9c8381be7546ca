"""Latency measurement, the inference form of a model, and latency / zero-cost / prescreen searches."""

from __future__ import annotations

import json
import subprocess
import sys

import onnxruntime
import pytest
import torch

import mfsearch
from mfsearch.evaluation.latency import (
    DEPRECATED,
    LatencySettings,
    compile_for_inference,
    device_description,
    measure_latency,
)
from mfsearch.models import inference_model
from mfsearch.space import load_space

QUICK = LatencySettings(threads=1, input_size=64, warmup=1, runs=5)


def _perturbed(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = mfsearch.create_model(name).eval()
    for m in model.modules():  # running statistics away from (0, 1), so folding has work to do
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    return model


@pytest.mark.parametrize("name", ["mobile_former_26m", "mobile_former_96m"])
def test_inference_model_computes_the_eval_function(name):
    model = _perturbed(name).double()
    fused = inference_model(model)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), rtol=1e-10, atol=1e-12)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the original is untouched
    assert all(not p.requires_grad for p in fused.parameters())


@pytest.mark.parametrize("runtime", ["onnxruntime", "eager", "jit"])
def test_runtimes_compute_the_same_function(runtime):
    model = _perturbed("mobile_former_26m")
    x = torch.randn(1, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    if runtime == "jit":  # deprecated: it says so
        with pytest.warns(FutureWarning, match="runtime jit .* is deprecated"):
            fn = compile_for_inference(model, x, runtime)
    else:
        fn = compile_for_inference(model, x, runtime)
    with torch.inference_mode():
        torch.testing.assert_close(fn(x), model(x), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="onnxruntime, eager, compile, jit"):
        compile_for_inference(model, x, "tensorrt")


def test_measure_latency_records_where_and_how():
    threads = torch.get_num_threads()
    lat = measure_latency(mfsearch.get_config("mobile_former_26m"), QUICK)
    assert torch.get_num_threads() == threads  # restored
    assert 0 < lat.p10_ms <= lat.median_ms <= lat.p90_ms
    assert lat.runs == 5 and lat.runtime == "onnxruntime" and lat.threads == 1 and lat.input_size == 64
    assert lat.runtime_version == f"onnxruntime {onnxruntime.__version__}"
    assert lat.device == device_description("cpu", 1) and lat.device.startswith("cpu: ")
    assert lat.torch == torch.__version__ and 0 < lat.cpu_median_ms
    assert 0 < lat.build_s < 30  # export + session + warm-up
    # a model with 20x the MACs is slower, measured the same way
    big = measure_latency(mfsearch.get_config("mobile_former_508m"), QUICK)
    assert big.median_ms > lat.median_ms


@pytest.mark.slow
def test_latency_command(tmp_path, run_cli):
    r = run_cli("latency", "mobile_former_26m", "mobile_former_52m", "--input-size", "64", "--runs", "3",
                "--warmup", "1", "--runtime", "eager", "--json", cwd=tmp_path)
    rows = json.loads(r.stdout)
    assert [x["model"] for x in rows] == ["mobile_former_26m", "mobile_former_52m"]
    assert all(x["median_ms"] > 0 and x["device"].startswith("cpu: ") and x["runtime"] == "eager" for x in rows)
    r = run_cli("latency", "mobile_former_26m", "--input-size", "64", "--runs", "3", cwd=tmp_path)
    assert f"runtime onnxruntime (onnxruntime {onnxruntime.__version__})" in r.stdout
    assert "mobile_former_26m" in r.stdout and r.stderr == ""
    r = run_cli("latency", "mobile_former_26m", "--input-size", "64", "--runs", "2", "--runtime", "jit", cwd=tmp_path)
    assert "runtime jit (torch " in r.stdout
    assert r.stderr.strip().splitlines() == [f"mfsearch: warning: {DEPRECATED['jit']}"]  # one line, nothing else
    for args, msg in [(("nope",), "unknown model 'nope'"), (("mobile_former_26m", "--device", "tpu"), "--device"),
                      (("mobile_former_26m", "--runtime", "trt"), "--runtime"),
                      (("mobile_former_26m", "--runs", "0"), "--runs")]:
        r = run_cli("latency", *args, cwd=tmp_path, check=False)
        assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr


def test_a_runtime_that_is_not_installed_is_one_line(tmp_path, tiny_yaml, without_onnxruntime):
    env = without_onnxruntime  # the import really fails, in a real process

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "mfsearch.cli", *args], capture_output=True, text=True,
                              cwd=tmp_path, env=env, timeout=300)

    probe = subprocess.run([sys.executable, "-c", "import onnxruntime"], capture_output=True, text=True, env=env)
    assert probe.returncode == 1 and "blocked for a test" in probe.stderr
    r = cli("latency", "mobile_former_26m", "--input-size", "64", "--runs", "2")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("mfsearch: error: --runtime auto: onnxruntime is not installed")
    assert "pip install onnx onnxruntime" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = cli("latency-table", "build", "--no-presets", "--space", str(tiny_yaml))
    assert r.returncode == 2 and "onnxruntime is not installed" in r.stderr and "Traceback" not in r.stderr
    r = cli("export", "mobile_former_26m", "--input-size", "32", "--out", str(tmp_path / "e"))
    assert r.returncode == 2 and "onnxruntime is not installed" in r.stderr and "Traceback" not in r.stderr
    # the torch runtimes do not need it
    r = cli("latency", "mobile_former_26m", "--input-size", "32", "--runs", "2", "--runtime", "eager")
    assert r.returncode == 0 and "runtime eager" in r.stdout, r.stderr


def test_search_with_a_latency_budget_and_objective(tmp_path, load, run_cli, tiny_space):
    from mfsearch.space.sample import fixed_suggest, sample_config

    lat = {"threads": 1, "input_size": 64, "runs": 7, "warmup": 2, "runtime": "onnxruntime"}
    p = tiny_space(tmp_path, objectives=[{"accuracy": "maximize"}, {"latency": "minimize"}], latency=lat,
                   search={"trials": 3, "sampler": "random", "reference_models": False})
    space = load_space(p)
    corners = [measure_latency(sample_config(space, fixed_suggest(c)), space.latency).median_ms
               for c in ("low", "high")]
    budget = round(0.4 * corners[0] + 0.6 * corners[1], 3)  # on this machine: part of the space fits, part not
    p = tiny_space(tmp_path, objectives=[{"accuracy": "maximize"}, {"latency": "minimize"}], latency=lat,
                   budget={"latency_ms": budget}, search={"trials": 3, "sampler": "random", "reference_models": False})
    run_cli("run", str(p), "--no-progress", cwd=tmp_path)
    study = load(tmp_path)
    assert study.user_attrs["latency_settings"]["device_description"].startswith("cpu: ")
    assert study.user_attrs["reference_point"]["latency"] == budget
    trained = [t for t in study.trials if t.user_attrs.get("status") == "trained"]
    assert len(trained) == 3
    for t in trained:
        assert t.user_attrs["latency_ms"] <= budget and t.values[1] == t.user_attrs["latency_ms"]
        assert t.user_attrs["latency"]["device"].startswith("cpu: ") and t.user_attrs["history"]
        assert t.user_attrs["latency"]["runtime_version"] == f"onnxruntime {onnxruntime.__version__}"
    over = [t for t in study.trials if t.user_attrs.get("status") == "over_budget" and "latency_ms" in t.user_attrs]
    for t in over:  # measured, found over, never trained, and the sampler is told why
        assert t.user_attrs["latency_ms"] > budget and "history" not in t.user_attrs
        assert t.constraints["latency"] > 0 and "latency" in t.user_attrs["failure_reason"]
    png = tmp_path / "runs" / "tiny" / "pareto_latency.png"  # the front on the latency axis, too
    assert png.stat().st_size > 1000


def test_zero_cost_objective_search_trains_nothing(tmp_path, load, run_cli, tiny_space):
    p = tiny_space(tmp_path, objectives=[{"snip": "maximize"}, {"macs": "minimize"}],
                   search={"trials": 4, "sampler": "random", "reference_models": False})
    r = run_cli("run", str(p), "--no-progress", cwd=tmp_path)
    assert "| snip |" in r.stdout and "hypervolume n/a" in r.stdout
    done = [t for t in load(tmp_path).trials if t.user_attrs.get("status") == "trained"]
    assert len(done) == 4
    for t in done:
        assert "history" not in t.user_attrs and "accuracy" not in t.user_attrs
        assert t.values[0] == t.user_attrs["snip"] and t.user_attrs["snip"] > 0


def test_prescreen_trains_the_best_scored_candidate(tmp_path, load, run_cli, tiny_space):
    p = tiny_space(tmp_path, prescreen={"proxy": "synflow", "candidates": 3},
                   search={"trials": 2, "sampler": "random", "reference_models": False})
    run_cli("run", str(p), "--no-progress", cwd=tmp_path)
    trials = load(tmp_path).trials
    trained = [t for t in trials if t.user_attrs.get("status") == "trained"]
    out = [t for t in trials if t.user_attrs.get("status") == "screened_out"]
    assert len(trained) == 2 and len(out) == 4
    for t in trained:
        assert t.user_attrs["prescreen"] == {"proxy": "synflow", "of": 3} and t.user_attrs["history"]
        rivals = [o for o in out if f"trial {t.number})" in o.user_attrs["failure_reason"]]
        assert len(rivals) == 2 and all(o.user_attrs["synflow"] <= t.user_attrs["synflow"] for o in rivals)
        assert all("history" not in o.user_attrs for o in rivals)


@pytest.mark.parametrize("changes, field", [
    ({"prescreen": {"proxy": "vibes"}}, "prescreen.proxy"),
    ({"prescreen": {"candidates": 3}}, "prescreen.proxy"),
    ({"objectives": [{"accuracy": "maximize"}, {"snip": "maximize"}]}, "objectives"),
    ({"objectives": [{"latency": "maximize"}]}, "objectives[0]"),
    ({"budget": {"latency_ms": -1}}, "budget.latency_ms"),
    ({"latency": {"runtime": "trt"}}, "latency.runtime"),
    ({"latency": {"device": "tpu"}}, "latency.device"),
    ({"search": {"engine": "ray"}, "budget": {"latency_ms": 5}}, "search.engine"),
    ({"objectives": [{"snip": "maximize"}], "prescreen": {"proxy": "snip"}}, "prescreen"),
])
def test_bad_latency_and_proxy_settings_name_the_field(tmp_path, changes, field, tiny_space):
    from mfsearch.errors import InputError

    with pytest.raises(InputError, match=rf"{field.replace('[', '.').replace(']', '.')}: "):
        load_space(tiny_space(tmp_path, **changes))
