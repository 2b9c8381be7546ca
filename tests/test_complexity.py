"""Analytic MACs / params equal fvcore's count and the built model, exactly."""

import logging

import pytest
import torch
from fvcore.nn import FlopCountAnalysis

import mfsearch
from mfsearch.models import MobileFormer, complexity, count_params
from mfsearch.models.random import random_config

from .reference import SIZES, reference

logging.getLogger("fvcore").setLevel(logging.ERROR)
N_RANDOM = 300


def fvcore_macs(model, size: int) -> int:
    fa = FlopCountAnalysis(model.eval(), torch.zeros(1, 3, size, size))
    fa.unsupported_ops_warnings(False)
    fa.uncalled_modules_warnings(False)
    return int(fa.total())


@pytest.mark.parametrize("size", SIZES)
def test_presets_equal_reference_fvcore_and_params(size):
    ref = reference(size)
    cfg = mfsearch.get_config(f"mobile_former_{size}")
    cx = complexity(cfg, 224)
    assert cx.macs == ref["fvcore_macs_224"]
    assert cx.params == ref["params"]
    model = MobileFormer(cfg)
    assert fvcore_macs(model, 224) == ref["fvcore_macs_224"]
    # other sizes: the analytic count follows the input; at 32 the last maps are 1x1 and 2x2,
    # where the fast depthwise path runs in training (tracing counts the plain ops)
    assert complexity(cfg, 160).macs == fvcore_macs(model, 160)
    assert complexity(cfg, 32).macs == fvcore_macs(model, 32)


@pytest.mark.slow
@pytest.mark.parametrize("chunk", range(10))
def test_random_configs_equal_fvcore_at_two_sizes(chunk):
    for seed in range(chunk * N_RANDOM // 10, (chunk + 1) * N_RANDOM // 10):
        cfg = random_config(seed)
        model = MobileFormer(cfg)
        assert complexity(cfg).params == count_params(model), seed
        for size in (224, 97):
            assert complexity(cfg, size).macs == fvcore_macs(model, size), (seed, size, cfg.to_dict())


def test_random_sample_covers_every_knob():
    cfgs = [random_config(s) for s in range(N_RANDOM)]
    seen = {
        "activation": {c.activation for c in cfgs},
        "bridges": {c.bridges for c in cfgs},
        "projections": {c.projections for c in cfgs},
        "arrangement": {c.arrangement for c in cfgs},
        "gate": {c.gate for c in cfgs},
        "former": {c.former for c in cfgs},
        "ffn": {c.ffn for c in cfgs},
        "groups": {c.groups for c in cfgs},
        "bridge_heads": {c.bridge_heads for c in cfgs},
        "zero_tokens": {c.num_tokens == 0 for c in cfgs},
        "width_mult": {c.width_mult != 1.0 for c in cfgs},
        "down": {any(b.is_down for b in c.blocks) for c in cfgs},
        "final_bridge_projections": {c.final_bridge_projections for c in cfgs if c.m2f},
        "former_gate": {c.former_gate for c in cfgs if c.former},
        "f2m_gate": {c.f2m_gate for c in cfgs if c.f2m},
        # the final bridge's projections differ from the blocks' ones, both ways
        "final_differs": {(c.projections, c.final_bridge_projections) for c in cfgs if c.m2f},
    }
    assert seen["activation"] == {"dyrelu", "relu", "relu6", "prelu", "hswish"}
    assert seen["bridges"] == {"both", "mobile_to_former", "former_to_mobile", "none"}
    assert seen["projections"] == {"light", "full"}
    assert seen["arrangement"] == {"parallel", "serial"}
    assert seen["final_bridge_projections"] == {"light", "full"}
    assert seen["final_differs"] == {("light", "light"), ("light", "full"), ("full", "light"), ("full", "full")}
    for key in ("gate", "former", "ffn", "zero_tokens", "width_mult", "down", "former_gate", "f2m_gate"):
        assert seen[key] == {True, False}, key
    assert seen["groups"] == {1, 2, 4} and seen["bridge_heads"] == {1, 2, 4}


def test_per_block_rows_sum_to_total():
    cx = complexity(mfsearch.get_config("mobile_former_508m"), per_block=True)
    assert sum(b.macs for b in cx.blocks) == cx.macs
    assert sum(b.params for b in cx.blocks) == cx.params
    assert [b.name for b in cx.blocks][:2] == ["stem+tokens", "block1"]


@pytest.mark.parametrize("knobs", [
    {"projections": "full"},
    {"projections": "full", "final_bridge_projections": "full"},
    {"final_bridge_projections": "full"},
    {"former_gate": True, "f2m_gate": True},
], ids=lambda k: "+".join(f"{a}={b}" for a, b in k.items()))
def test_new_knobs_on_294m_equal_fvcore(knobs):
    cfg = mfsearch.get_config("mobile_former_294m").replace(**knobs)
    model = MobileFormer(cfg)
    cx = complexity(cfg)
    assert cx.params == count_params(model)
    assert cx.macs == fvcore_macs(model, 224)
