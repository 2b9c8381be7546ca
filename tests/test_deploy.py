"""Deployment: ONNX / YAML / state-dict export, ONNX Runtime equality, and the latency table predictor."""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest
import torch
import yaml

import mfsearch
from mfsearch.deploy.export import ExportSource, export_files
from mfsearch.deploy.latency_table import (
    LatencyTable,
    TableError,
    fit_correction,
    load_table,
    predict_latency,
    space_unit_keys,
    unit_keys,
)
from mfsearch.deploy.onnx_graph import DEFAULT_OPSET, model_proto
from mfsearch.deploy.runtime import make_session
from mfsearch.models import BlockConfig, MobileFormerConfig
from mfsearch.models.mobile_former import plain_kernels
from mfsearch.models.random import random_config
from mfsearch.space import load_space
from mfsearch.space.sample import random_suggest, sample_config


def lively(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Weights and statistics far from their initial values, so every path (token MLPs, gates, BN) shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.Linear):
                bound = mod.in_features ** -0.5
                mod.weight.copy_((torch.rand(mod.weight.shape, generator=g) * 2 - 1) * 2 * bound)
                mod.bias.copy_(torch.randn(mod.bias.shape, generator=g) * 0.3)
            elif isinstance(mod, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
                mod.running_mean.copy_(torch.randn(mod.running_mean.shape, generator=g) * 0.2)
                mod.running_var.copy_(torch.rand(mod.running_var.shape, generator=g) * 1.5 + 0.5)
                mod.weight.copy_(torch.rand(mod.weight.shape, generator=g) + 0.5)
                mod.bias.copy_(torch.randn(mod.bias.shape, generator=g) * 0.1)
            elif isinstance(mod, torch.nn.LayerNorm):
                mod.weight.copy_(torch.rand(mod.weight.shape, generator=g) + 0.5)
                mod.bias.copy_(torch.randn(mod.bias.shape, generator=g) * 0.1)
            elif isinstance(mod, torch.nn.PReLU):
                mod.weight.copy_(torch.rand(mod.weight.shape, generator=g) * 0.5)
    return model.eval()


def ort_vs_eager(cfg: MobileFormerConfig, size: int, batch: int | None = 1, opset: int = DEFAULT_OPSET) -> float:
    """Max |ONNX Runtime - eager| of the logits (fp32, seeded random input, eval mode)."""
    torch.manual_seed(0)
    model = lively(mfsearch.create_model(cfg))
    proto = model_proto(model, size, opset, batch=batch)
    onnx.checker.check_model(proto, full_check=True)
    x = torch.randn(batch or 2, 3, size, size)
    out = make_session(proto).run(None, {"input": x.numpy()})[0]
    with torch.no_grad(), plain_kernels():
        ref = model(x)
    assert out.shape == tuple(ref.shape) and np.isfinite(out).all()
    assert ref.abs().max() > 0.05  # the logits carry signal: a wrong graph cannot hide under the tolerance
    return float(np.abs(out - ref.numpy()).max())


# ----------------------------------------------------------------------------- ONNX equality


@pytest.mark.parametrize("name", mfsearch.list_models())
def test_presets_run_in_onnx_runtime_like_eager(name):
    size = 224 if name in ("mobile_former_294m", "mobile_former_26m") else 96
    assert ort_vs_eager(mfsearch.get_config(name), size) <= 1e-4


VARIANT_SEEDS = (*range(40), 52, 66)  # 52 and 66: the first seeds without tokens (a rare corner)


def _coverage(cfgs: list[MobileFormerConfig]) -> set[str]:
    got = set()
    for c in cfgs:
        got.add(f"activation={c.activation}")
        got.add(f"bridges={c.bridges}")
        for flag, name in ((c.arrangement == "serial", "serial"), (c.projections == "full", "full projections"),
                           (c.groups > 1, "grouped pointwise"), (not c.former, "former off"),
                           (c.former and not c.ffn, "ffn off"), (c.width_mult != 1.0, "width_mult != 1"),
                           (c.num_tokens == 0 and c.activation != "dyrelu", "no tokens, static activation"),
                           (not c.gate and c.m2f, "gate off"), (c.former and c.former_gate, "former gate"),
                           (c.f2m and c.f2m_gate, "former->mobile gate"),
                           (c.m2f and c.final_bridge_projections == "full", "full final bridge")):
            if flag:
                got.add(name)
    return got


def test_variant_sample_covers_every_knob():
    got = _coverage([random_config(s) for s in VARIANT_SEEDS])
    want = {f"activation={a}" for a in ("dyrelu", "relu", "relu6", "prelu", "hswish")}
    want |= {f"bridges={b}" for b in ("both", "mobile_to_former", "former_to_mobile", "none")}
    want |= {"serial", "full projections", "grouped pointwise", "former off", "ffn off", "width_mult != 1",
             "no tokens, static activation", "gate off", "former gate", "former->mobile gate", "full final bridge"}
    assert want <= got, f"seeded variants miss {sorted(want - got)}"


@pytest.mark.parametrize("seed", VARIANT_SEEDS)
def test_variants_run_in_onnx_runtime_like_eager(seed):
    cfg = random_config(seed)
    # every third with a symbolic batch (run at batch 2), opsets 17..21 in turn (GELU op from 20)
    diff = ort_vs_eager(cfg, 64, batch=None if seed % 3 == 0 else 1, opset=17 + seed % 5)
    assert diff <= 1e-4, cfg.summary()


def test_graph_is_plain_default_domain_ops():
    # 64x64 makes the last maps 2x2: the eager fast paths (direct depthwise, matmul pointwise) would run there
    for cfg in (mfsearch.get_config("mobile_former_26m"), random_config(3)):
        proto = model_proto(mfsearch.create_model(cfg).eval(), 64)
        assert [(o.domain, o.version) for o in proto.opset_import] == [("", DEFAULT_OPSET)]
        ops = {n.op_type for n in proto.graph.node}
        assert {n.domain for n in proto.graph.node} == {""}
        assert all(onnx.defs.has(op, "") for op in ops)
        assert "BatchNormalization" not in ops  # folded
        assert ops <= {"Conv", "Clip", "Add", "Sub", "Mul", "Div", "Max", "Relu", "PRelu", "Reshape", "Transpose",
                       "MatMul", "Softmax", "LayerNormalization", "Gemm", "Gather", "GlobalAveragePool", "Flatten",
                       "Concat", "Expand", "Shape", "Erf", "Gelu"}, ops


# ----------------------------------------------------------------------------- export command


def test_export_writes_onnx_yaml_and_state_dict(tmp_path, run_cli):
    out = tmp_path / "exp"
    r = run_cli("export", "mobile_former_26m", "--format", "onnx,yaml,pt", "--out", str(out), "--input-size", "64",
                "--opset", "18", cwd=tmp_path)
    assert "opset 18" in r.stdout and "onnx.checker ok" in r.stdout and "random initialisation (seed 0)" in r.stdout
    model = onnx.load(str(out / "mobile_former_26m.onnx"))
    onnx.checker.check_model(model)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 18)]
    meta = {p.key: p.value for p in model.metadata_props}
    cfg = mfsearch.get_config("mobile_former_26m")
    assert meta["mfsearch.arch_id"] == cfg.arch_id and json.loads(meta["mfsearch.config"]) == cfg.to_dict()
    # the YAML is an architecture config: `mfsearch info` and create_model read it
    info = json.loads(run_cli("info", str(out / "mobile_former_26m.yaml"), "--json", cwd=tmp_path).stdout)
    assert info["arch_id"] == cfg.arch_id
    rebuilt = mfsearch.create_model(str(out / "mobile_former_26m.yaml")).eval()
    rebuilt.load_state_dict(torch.load(out / "mobile_former_26m.pt", weights_only=True))
    # the ONNX file and the state dict hold the same weights: same logits (dynamic batch, run at 3)
    x = torch.randn(3, 3, 64, 64)
    sess = make_session(model.SerializeToString())
    with torch.no_grad(), plain_kernels():
        np.testing.assert_allclose(sess.run(None, {"input": x.numpy()})[0], rebuilt(x).numpy(), atol=1e-4)
    assert not list(out.glob(".*"))  # no temporary files left


def test_export_python_api_verifies_against_eager(tmp_path):
    cfg = random_config(7)
    res = export_files(ExportSource(cfg, "r7", "test"), ["onnx"], tmp_path, input_size=48)
    assert res.max_abs_diff is not None and res.max_abs_diff <= 1e-4 and res.paths["onnx"].stat().st_size > 0


@pytest.mark.parametrize("args, msg", [
    (("mobile_former_26m", "--format", "tflite"), "--format: unknown format 'tflite'"),
    (("mobile_former_26m", "--opset", "9"), "--opset: must be an integer in [17,"),
    (("mobile_former_26m", "--input-size", "4"), "--input-size"),
    (("nope",), "unknown model 'nope'"),
    (("mobile_former_26m", "--rank", "2"), "--rank: picks a member of a study"),
])
def test_export_bad_input_is_one_line(tmp_path, args, msg, run_cli):
    r = run_cli("export", *args, "--out", str(tmp_path / "o"), cwd=tmp_path, check=False)
    assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_export_to_an_unwritable_place_is_one_line(tmp_path, run_cli):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = run_cli("export", "mobile_former_26m", "--out", str(blocker / "sub"), cwd=tmp_path, check=False)
    assert r.returncode == 2 and "--out: cannot write" in r.stderr and "Traceback" not in r.stderr


def test_what_cannot_be_exported_is_named():
    from mfsearch.deploy.onnx_graph import ExportError

    with pytest.raises(ExportError, match="features_only=True"):
        model_proto(mfsearch.create_model("mobile_former_26m", features_only=True), 64)
    model = mfsearch.create_model("mobile_former_26m").eval()
    model.blocks[1].mobile.act1 = torch.nn.GELU()  # a layer the graph writer does not know
    with pytest.raises(ExportError, match="no ONNX emitter for GELU; add one to mfsearch/deploy/onnx_graph.py"):
        model_proto(model, 64)
    with pytest.raises(ExportError, match=r"--opset: must be an integer in \[17, "):
        model_proto(mfsearch.create_model("mobile_former_26m").eval(), 64, opset=16)


@pytest.mark.slow
def test_export_a_study_member(tmp_path, load, run_cli, tiny_space):
    p = tiny_space(tmp_path, search={"trials": 3, "sampler": "random", "reference_models": False})
    run_cli("run", str(p), "--no-progress", cwd=tmp_path)
    trials = [t for t in load(tmp_path).trials if t.user_attrs.get("status") == "trained"]
    best = max(trials, key=lambda t: t.user_attrs["accuracy"])  # the most accurate is always on the front
    r = run_cli("export", str(p), "--format", "yaml,onnx", "--input-size", "32", "--out", str(tmp_path / "e"),
                cwd=tmp_path)
    aid = best.user_attrs["arch_id"]
    assert "rank 1 of the Pareto front" in r.stdout and aid in r.stdout
    exported = yaml.safe_load((tmp_path / "e" / f"tiny_rank1_{aid}.yaml").read_text())
    assert exported == best.user_attrs["config"]
    other = min(trials, key=lambda t: t.user_attrs["accuracy"])
    run_cli("export", "tiny", "--arch-id", other.user_attrs["arch_id"], "--format", "yaml", "--out",
            str(tmp_path / "e"), cwd=tmp_path)
    assert (tmp_path / "e" / f"tiny_{other.user_attrs['arch_id']}.yaml").is_file()
    # the 8 characters a trial line prints are enough (a unique prefix); the file carries the full id
    short = other.user_attrs["arch_id"][:8]
    run_cli("export", "tiny", "--arch-id", short, "--format", "yaml", "--out", str(tmp_path / "p"), cwd=tmp_path)
    assert [f.name for f in (tmp_path / "p").iterdir()] == [f"tiny_{other.user_attrs['arch_id']}.yaml"]
    for args, msg in ((("--rank", "99"), "--rank: study tiny has"), (("--arch-id", "0" * 16), "--arch-id: no")):
        r = run_cli("export", str(p), *args, "--out", str(tmp_path / "e"), cwd=tmp_path, check=False)
        assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr


def test_an_arch_id_prefix_of_two_architectures_is_refused_naming_both(monkeypatch):
    import pandas as pd

    import mfsearch
    from mfsearch.deploy.export import study_source
    from mfsearch.errors import InputError

    cfg = json.dumps(mfsearch.get_config("mobile_former_26m").to_dict())  # as results tables hold it
    df = pd.DataFrame({"study": ["s", "s"], "trial": [0, 1], "kind": ["search", "search"],
                       "arch_id": ["abcd0001", "abcd0002"], "config": [cfg, cfg], "accuracy": [50.0, 60.0]})
    monkeypatch.setattr(mfsearch, "load_results", lambda *a, **k: (df, {}))
    with pytest.raises(InputError, match=r"abcd is the start of 2 architectures .*abcd0001, abcd0002.*more characters"):
        study_source("s", arch_id="abcd")
    assert study_source("s", arch_id="abcd0002") is not None


# ----------------------------------------------------------------------------- latency table


def small_space(tmp_path, tiny_space):
    """A corner of the tiny space with a handful of units (a table builds in seconds at 32x32)."""
    return tiny_space(tmp_path, name="small", space={
        "num_tokens": 2, "token_dim": 32, "stem": 8, "head": 64, "activation": {"choice": ["dyrelu", "relu"]},
        "former_heads": 4, "groups": 1, "lite": {"out": 8, "e1": 2, "stride": 2},
        "stages": [{"out": {"choice": [8, 16]}, "depth": {"int": [1, 2]}, "e1": 2, "stride": 2, "down_e1": 2,
                    "down_e2": 2}]})


def test_space_unit_keys_cover_every_sampled_config(tiny_yaml):
    space = load_space(tiny_yaml)
    keys = space_unit_keys(space, 64)
    n = 0
    for s in range(200):
        cfg = sample_config(space, random_suggest(s))
        assert set(unit_keys(cfg, 64)) <= keys, cfg.summary()
        n += 1
    assert n == 200 and len(keys) < 400


@pytest.fixture(scope="module")
def small_table(tmp_path_factory, run_cli, tiny_space):
    tmp = tmp_path_factory.mktemp("table")
    out = tmp / "small.json"
    r = run_cli("latency-table", "build", "--space", str(small_space(tmp, tiny_space)), "--input-size", "32",
                "--no-presets", "--calibration", "6", "--out", str(out), cwd=tmp)
    assert "wrote" in r.stdout
    return tmp, out


def test_table_records_where_and_how_it_was_measured(small_table):
    tmp, out = small_table
    data = json.loads(out.read_text())
    assert data["device"].startswith("cpu: ") and data["runtime_version"].startswith("onnxruntime ")
    assert data["threads"] == 1 and data["input_size"] == 32 and data["statistic"] == "cpu_min"
    assert data["load_start"] and len(data["calibration"]) == 6
    kinds = {tuple(u["key"])[0] for u in data["units"]}
    assert kinds == {"stem", "lite", "mf1", "mf2", "tail"}
    assert all(u["ms"] > 0 and u["runs"] >= 25 and u["macs"] > 0 for u in data["units"])


def test_predict_sums_the_units_and_applies_the_correction(small_table, run_cli, tiny_space):
    tmp, out = small_table
    table = load_table(out)
    space = load_space(small_space(tmp, tiny_space))
    for s in range(5):
        cfg = sample_config(space, random_suggest(s))
        keys = unit_keys(cfg, 32)
        assert all(k in table.entries for k in keys)
        want = table.scale * sum(table.entries[k] for k in keys) + table.offset_ms + table.per_unit_ms * len(keys)
        assert math.isclose(predict_latency(cfg, table), max(want, 0.0), rel_tol=1e-12)
        assert table.predict(cfg).missing == 0
    r = run_cli("latency-table", "predict", str(out), "mobile_former_26m", "--json", cwd=tmp)
    assert json.loads(r.stdout)["predicted_ms"] > 0


def test_missing_units_are_estimated_or_measured_never_a_crash(small_table, tmp_path, run_cli):
    _, out = small_table
    copy = tmp_path / "t.json"
    copy.write_text(out.read_text())
    table = load_table(copy)
    cfg = mfsearch.get_config("mobile_former_26m")  # a 26M block is no unit of the small space
    keys = unit_keys(cfg, 32)
    absent = [k for k in keys if k not in table.entries]
    assert len(absent) >= len(keys) - 2
    pred = table.predict(cfg)
    assert pred.missing == len(absent) and {k for k, _, s in pred.units if s == "estimate"} == set(absent)
    assert pred.ms > 0 and math.isfinite(pred.ms) and predict_latency(cfg, table) == pytest.approx(pred.ms)
    r = run_cli("latency-table", "predict", str(copy), "mobile_former_26m", cwd=tmp_path)
    assert f"{len(absent)} of {len(keys)} units not in the table: estimated" in r.stdout
    r = run_cli("latency-table", "predict", str(copy), "mobile_former_26m", "--measure-missing", cwd=tmp_path)
    assert "measured and added" in r.stdout
    again = load_table(copy)
    assert again.predict(cfg).missing == 0 and len(again.entries) == len(table.entries) + len(set(absent))
    assert all(again.extra[k].get("on_demand") for k in absent)


@pytest.mark.parametrize("field, value, msg", [
    ("device", "cpu: Another CPU (1 thread)", "built on 'cpu: Another CPU (1 thread)'"),
    ("runtime_version", "onnxruntime 0.0.1", "built with onnxruntime 0.0.1"),
    ("format", "something", "not an mfsearch latency table"),
])
def test_a_foreign_or_damaged_table_is_refused(small_table, tmp_path, field, value, msg, run_cli):
    _, out = small_table
    data = json.loads(out.read_text())
    data[field] = value
    bad = tmp_path / "foreign.json"
    bad.write_text(json.dumps(data))
    r = run_cli("latency-table", "predict", str(bad), "mobile_former_26m", cwd=tmp_path, check=False)
    assert r.returncode == 2 and str(bad) in r.stderr and msg in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    with pytest.raises(TableError):
        load_table(bad)


def test_a_table_for_other_settings_is_refused(small_table, tmp_path, run_cli):
    tmp, out = small_table
    for args, msg in ((("--threads", "2"), "built for 1 thread(s), asked for 2"),
                      (("--input-size", "224"), "built at input size 32, asked for 224")):
        r = run_cli("latency-table", "predict", str(out), "mobile_former_26m", *args, cwd=tmp_path, check=False)
        assert r.returncode == 2 and msg in r.stderr and "rebuild it" in r.stderr
    (tmp_path / "junk.json").write_text("{not json")
    r = run_cli("latency-table", "predict", str(tmp_path / "junk.json"), "mobile_former_26m", cwd=tmp_path,
                check=False)
    assert r.returncode == 2 and "not a readable latency table" in r.stderr


def test_table_build_bad_input(tmp_path, run_cli):
    for args, msg in ((("--runtime", "eager"), "--runtime: a latency table is measured on onnxruntime"),
                      (("--threads", "0"), "--threads"),
                      (("--space", str(tmp_path / "none.yaml")), "no such file")):
        r = run_cli("latency-table", "build", *args, cwd=tmp_path, check=False)
        assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_correction_fit_keeps_to_what_the_calibration_supports():
    s = [10, 12, 15, 11, 20, 9, 14, 13, 16, 18]
    u = [10, 12, 14, 11, 16, 10, 13, 12, 15, 16]
    m = [1.2 * a + 0.5 + 0.2 * b for a, b in zip(s, u)]
    assert fit_correction(s, u, m) == pytest.approx((1.2, 0.5, 0.2, 0.0))
    assert fit_correction(s[:5], u[:5], m[:5])[2] == 0.0  # too few configs for three terms
    # a falling relation: no offset fit (its scale would be negative), only the proportional one
    assert fit_correction([3, 2, 1], [5, 6, 7], [1, 2, 3]) == pytest.approx((10 / 14, 0.0, 0.0, 0.0))
    assert fit_correction([], [], []) == (1.0, 0.0, 0.0, 0.0)  # nothing to fit
    # a cost per Mobile->Former bridge the units miss: found when the calibration varies the bridges
    s2, u2 = s + [11, 17], u + [13, 11]
    br = [0, 12, 12, 0, 12, 0, 12, 0, 12, 12, 0, 12]
    m2 = [1.2 * a + 0.5 + 0.2 * b + 0.1 * c for a, b, c in zip(s2, u2, br)]
    assert fit_correction(s2, u2, m2, br) == pytest.approx((1.2, 0.5, 0.2, 0.1))
    # a bridge count that explains nothing is not kept: the richer fit must predict left-out configs better
    rng = np.random.default_rng(0)
    noisy = [1.2 * a + 0.5 + 0.2 * b + rng.normal(0, 0.3) for a, b in zip(s2, u2)]
    chance = [int(v) for v in rng.integers(0, 2, len(s2)) * 12]
    assert fit_correction(s2, u2, noisy, chance)[3] == 0.0 or \
        _loo(s2, u2, noisy, chance, 4) < _loo(s2, u2, noisy, chance, 3)


def test_correction_fit_adds_a_term_only_where_it_predicts_clearly_better():
    """The one-standard-error rule: over a narrow calibration range an offset fits noise about as well as a
    proportional fit, and then the proportional one (through zero, safe for smaller models) is kept; a real
    offset, or a real cost per bridge, is kept."""
    rng = np.random.default_rng(1)
    s = rng.uniform(7, 19, 30)  # a space's range, as latency_cpu's calibration (8-18 ms)
    u = rng.integers(10, 16, 30)
    br = rng.integers(0, 2, 30) * 10
    noise = rng.normal(1.0, 0.06, 30)  # 6% measurement noise, as on a shared machine
    scale, offset, per_unit, per_bridge = fit_correction(s, u, 1.1 * s * noise, br)
    assert (offset, per_unit, per_bridge) == (0.0, 0.0, 0.0) and scale == pytest.approx(1.1, rel=0.03)
    # what it predicts for a model a quarter of the calibration's smallest: the proportional fit, not the offset
    assert scale * 2.0 == pytest.approx(1.1 * 2.0, rel=0.05)
    scale, offset, *_ = fit_correction(s, u, (1.1 * s + 4.0) * rng.normal(1.0, 0.01, 30), br)
    assert offset == pytest.approx(4.0, abs=0.6) and scale == pytest.approx(1.1, rel=0.05)  # a real offset is kept
    *_, per_bridge = fit_correction(s, u, (1.1 * s + 0.3 * br) * rng.normal(1.0, 0.01, 30), br)
    assert per_bridge == pytest.approx(0.3, rel=0.1)  # and a real cost per bridge


def _loo(s, u, m, b, terms):
    from mfsearch.deploy.latency_table import _loo_rms

    a = np.stack([np.asarray(s, float), np.ones(len(s)), np.asarray(u, float), np.asarray(b, float)], 1)[:, :terms]
    return _loo_rms(a, np.asarray(m, float))[0]


def test_table_round_trips_through_json(small_table):
    _, out = small_table
    t = load_table(out)
    again = LatencyTable.from_json(json.loads(json.dumps(t.to_json())), str(out))
    assert again.entries == t.entries and again.scale == t.scale and again.statistic == t.statistic
    cfg = MobileFormerConfig(stem=8, blocks=(BlockConfig("lite", 8, 2, 2), BlockConfig("mf", 16, 2, 2, 2)), head=64,
                             num_tokens=2, token_dim=32, activation="relu")
    assert predict_latency(cfg, again) == predict_latency(cfg, t)
