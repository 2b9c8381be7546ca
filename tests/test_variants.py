"""The authors' variants beyond the paper models: the final bridge, the three dynamic gates, and
loading their state dicts for ReLU6, full projections and gates.

What the authors' implementation builds (read from its module structure, written here as facts):
- ``remove_proj_local: false`` adds bias-free 1x1 convs on the feature side inside every block
  (``local_global.k`` / ``.v``, ``global_local.q`` / ``.fuse``); the Mobile->Former bridge after the
  last block is built without that switch and stays light.
- ``gbr_dynamic = [m2f, former, f2m]``: each gate is ``Linear -> hsigmoid`` (``alpha.0``) of the tokens,
  times 2, multiplying the Mobile->Former attention result (before ``proj``), the Former's merged
  attention output (before ``channel_mlp``), or the Former->Mobile values (``proj(tokens)``).
- ``se_flag`` zeros: a plain ReLU6 with no token MLP (``hyperN``) in place of each DY-ReLU.
"""

import math

import pytest
import torch

import mfsearch
from mfsearch.models import MobileFormer, complexity, count_params, load_released_checkpoint, released_key_map
from mfsearch.models.checkpoint import CheckpointError
from mfsearch.models.mobile_former import Former, FormerToMobile, MobileToFormer

from .reference import SIZES, reference, rule_weights

# ---------------------------------------------------------------------------- the final bridge

BASE_294 = mfsearch.get_config("mobile_former_294m")
# 294M with projections: full, as every earlier version built it (final bridge full too): pinned figures
FULL_FINAL_294 = (392_571_136, 12_093_368)


def test_full_projections_leave_the_final_bridge_light_by_default():
    cfg = BASE_294.replace(projections="full")
    assert cfg.final_bridge_projections == "light"
    model = MobileFormer(cfg)
    assert model.final_m2f.k is None and model.final_m2f.v is None
    assert model.blocks[2].m2f.k is not None and model.blocks[2].f2m.proj is not None
    cx = complexity(cfg)
    assert count_params(model) == cx.params
    # the two 1x1 convs of the final bridge on the 192-channel 7x7 map, and nothing else
    assert FULL_FINAL_294[1] - cx.params == 2 * 192 * 192 == 73_728
    assert FULL_FINAL_294[0] - cx.macs == 2 * 49 * 192 * 192 == 3_612_672


def test_full_final_bridge_knob_builds_what_full_projections_used_to():
    cfg = BASE_294.replace(projections="full", final_bridge_projections="full")
    model = MobileFormer(cfg)
    assert model.final_m2f.k is not None and model.final_m2f.v is not None
    cx = complexity(cfg)
    assert (cx.macs, cx.params) == FULL_FINAL_294
    assert count_params(model) == cx.params
    light_blocks = BASE_294.replace(final_bridge_projections="full")
    assert complexity(light_blocks).params - complexity(BASE_294).params == 73_728


# ---------------------------------------------------------------------------- gates: literal formulas


def hsig(t):
    return torch.clamp(t + 3.0, 0.0, 6.0) / 6.0


def softmax(t, dim):
    e = torch.exp(t - t.max(dim=dim, keepdim=True).values)
    return e / e.sum(dim=dim, keepdim=True)


def layer_norm(t, ln):
    mu = t.mean(-1, keepdim=True)
    var = ((t - mu) ** 2).mean(-1, keepdim=True)
    return (t - mu) / torch.sqrt(var + ln.eps) * ln.weight + ln.bias


def lin(t, layer):
    return t @ layer.weight.T + layer.bias


def conv1x1(w, t):
    """A bias-free 1x1 conv of weight ``w`` (C_out, C_in, 1, 1) on ``t`` (C_in, HW)."""
    return w[:, :, 0, 0] @ t


def m2f_literal(mod: MobileToFormer, x, z):
    """Tokens attend over the pixels, per sample and head; gate: 2 hsigmoid(Linear(z)) on the result."""
    b, c, h, w = x.shape
    nh, m = mod.heads, z.shape[1]
    out = torch.empty_like(z)
    for n in range(b):
        xm = x[n].reshape(c, h * w)
        keys = conv1x1(mod.k.weight, xm) if mod.k is not None else xm
        vals = conv1x1(mod.v.weight, xm) if mod.v is not None else xm
        q = lin(z[n], mod.q)  # m, c
        res = torch.empty(m, c, dtype=x.dtype)
        for hd in range(nh):
            sl = slice(hd * c // nh, (hd + 1) * c // nh)
            p = softmax(q[:, sl] @ keys[sl] / math.sqrt(c // nh), dim=1)  # m, hw
            res[:, sl] = p @ vals[sl].T
        if mod.gate is not None:
            res = res * 2.0 * hsig(lin(z[n], mod.gate))
        out[n] = layer_norm(z[n] + lin(res, mod.proj), mod.norm)
    return out


def former_literal(mod: Former, z):
    """Keys = values = tokens; gate: 2 hsigmoid(Linear(z)) of the layer input on the merged heads."""
    b, m, d = z.shape
    nh = mod.heads
    out = torch.empty_like(z)
    for n in range(b):
        q = lin(z[n], mod.q)
        res = torch.empty(m, d, dtype=z.dtype)
        for hd in range(nh):
            sl = slice(hd * d // nh, (hd + 1) * d // nh)
            p = softmax(q[:, sl] @ z[n][:, sl].T / math.sqrt(d // nh), dim=1)  # m, m
            res[:, sl] = p @ z[n][:, sl]
        if mod.gate is not None:
            res = res * 2.0 * hsig(lin(z[n], mod.gate))
        t = layer_norm(z[n] + lin(res, mod.proj), mod.norm1)
        if mod.ffn:
            u = lin(t, mod.fc1)
            u = 0.5 * u * (1.0 + torch.erf(u / math.sqrt(2.0)))
            t = layer_norm(t + lin(u, mod.fc2), mod.norm2)
        out[n] = t
    return out


def f2m_literal(mod: FormerToMobile, x, z):
    """Pixels attend over the tokens; gate: the values Linear(z) times 2 hsigmoid(Linear(z))."""
    b, c, h, w = x.shape
    nh = mod.heads
    out = torch.empty_like(x)
    for n in range(b):
        xm = x[n].reshape(c, h * w)
        queries = conv1x1(mod.q.weight, xm) if mod.q is not None else xm
        keys = lin(z[n], mod.k)  # m, c
        vals = lin(z[n], mod.v)
        if mod.gate is not None:
            vals = vals * 2.0 * hsig(lin(z[n], mod.gate))
        res = torch.empty(c, h * w, dtype=x.dtype)
        for hd in range(nh):
            sl = slice(hd * c // nh, (hd + 1) * c // nh)
            p = softmax(queries[sl].T @ keys[:, sl].T / math.sqrt(c // nh), dim=1)  # hw, m (over tokens)
            res[sl] = (p @ vals[:, sl]).T
        if mod.proj is not None:
            res = conv1x1(mod.proj.weight, res)
        out[n] = res.reshape(c, h, w)
    return out


SMALL = mfsearch.get_config("mobile_former_52m").replace(num_classes=10, dropout=0.0)


def _gated_model(full: bool, seed: int = 0) -> MobileFormer:
    torch.manual_seed(seed)
    cfg = SMALL.replace(former_gate=True, f2m_gate=True, projections="full" if full else "light")
    model = MobileFormer(cfg).double().eval()
    with torch.no_grad():  # weights large enough that every gate departs from 1
        for name, p in model.named_parameters():
            if ".gate." in name or name.endswith("tokens"):
                p.normal_(0.0, 1.0)
            elif "norm" not in name and ".bn." not in name:
                p.mul_(5.0)
    return model


@pytest.mark.parametrize("full", [False, True], ids=["light", "full"])
@pytest.mark.parametrize("index", [1, 2], ids=["stride1", "down"])
def test_gated_block_equals_literal_formulas(full, index):
    """One block with all three gates, float64: the module equals the written-out formulas, step by step."""
    model = _gated_model(full)
    blk = model.blocks[index]
    assert blk.m2f.gate is not None and blk.former.gate is not None and blk.f2m.gate is not None
    ci = model.cfg.channels()[index][0]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, ci, 6, 6, generator=g, dtype=torch.float64)
    z = torch.randn(2, model.cfg.num_tokens, model.cfg.token_dim, generator=g, dtype=torch.float64)
    with torch.no_grad():
        y, z_out = blk(x, z)
        z1 = m2f_literal(blk.m2f, x, z)
        z2 = former_literal(blk.former, z1)
        torch.testing.assert_close(blk.m2f(x, z), z1, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(blk.former(z1), z2, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(z_out, z2, rtol=1e-12, atol=1e-12)
        ym = blk.mobile(x, z2[:, 0]) + (x if blk.residual else 0.0)
        f2m = f2m_literal(blk.f2m, ym, z2)
        torch.testing.assert_close(blk.f2m(ym, z2), f2m, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(y, ym + f2m, rtol=1e-12, atol=1e-12)
        # the gates matter: the same block without them computes something else
        assert (blk.former(z1) - former_literal(_without(blk.former), z1)).abs().max() > 1e-3
        assert (blk.f2m(ym, z2) - f2m_literal(_without(blk.f2m), ym, z2)).abs().max() > 1e-3


def _without(mod):
    import copy

    out = copy.deepcopy(mod)
    out.gate = None
    return out


def test_final_bridge_gate_equals_literal_formula():
    model = _gated_model(False)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, model.num_features, 3, 3, generator=g, dtype=torch.float64)
    z = torch.randn(2, model.cfg.num_tokens, model.cfg.token_dim, generator=g, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model.final_m2f(x, z), m2f_literal(model.final_m2f, x, z), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("knob", ["former_gate", "f2m_gate"])
def test_zero_gate_is_the_identity(knob):
    """At zero gate weights 2 * hsigmoid(0) = 1: the gated model computes the ungated one; else it differs."""
    torch.manual_seed(0)
    plain = MobileFormer(SMALL).double().eval()
    gated = MobileFormer(SMALL.replace(**{knob: True})).double().eval()
    missing, unexpected = gated.load_state_dict(plain.state_dict(), strict=False)
    assert unexpected == [] and missing and all(".gate." in k for k in missing)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        for k in missing:
            gated.state_dict()[k].normal_()
        assert (gated(x) - plain(x)).abs().max() > 1e-6
        for k in missing:
            gated.state_dict()[k].zero_()
        torch.testing.assert_close(gated(x), plain(x), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------- the authors' state-dict names

_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def authors_state_dict(cfg, se_zero: bool = False, remove_proj_local: bool = True,
                       gbr_dynamic: tuple[bool, bool, bool] = (True, False, False)) -> list:
    """``[name, shape]`` of the authors' model state dict, in order, for a parallel-arrangement config.

    Their module structure: ``tokens`` (an Embedding), ``stem`` (conv, BN, ReLU6), ``features.i``
    (the first block's ``conv`` Sequential: dw conv, BN, ReLU6, shuffle, pw conv, BN; a stride-1
    ``DnaBlock``: conv1, act1, hyper1, conv2, act2, hyper2, conv3, act3, hyper3, then the bridges; a
    down ``DnaBlock3``: conv1, act1, hyper1, conv2, act2, conv3, act3, hyper3, conv4, act4, hyper4, then
    the bridges), ``local_global`` (the final bridge, built without ``remove_proj_local``), and
    ``classifier`` (conv: shuffle, pw conv, BN; fc: Linear, BN1d, hswish; classifier: Dropout, Linear).
    """
    d, m, g = cfg.token_dim, cfg.num_tokens, cfg.groups
    out: list = []

    def bn(p, c):
        out.extend([f"{p}.{k}", [] if k == "num_batches_tracked" else [c]] for k in _BN)

    def linear(p, fin, fout):
        out.extend([[f"{p}.weight", [fout, fin]], [f"{p}.bias", [fout]]])

    def norm(p, c):
        out.extend([[f"{p}.weight", [c]], [f"{p}.bias", [c]]])

    def conv(p, cin, cout, k, groups):
        out.append([f"{p}.weight", [cout, cin // groups, k, k]])

    def hyper(p, c):  # HyperFunc: Linear, ReLU, Linear, hsigmoid; absent where se_flag is 0
        if not se_zero:
            linear(f"{p}.hyper.0", d, d // cfg.dyrelu_reduction)
            linear(f"{p}.hyper.2", d // cfg.dyrelu_reduction, 2 * c)

    def local_global(p, c, full):  # alpha, q, proj, layer_norm, then k, v
        if gbr_dynamic[0]:
            linear(f"{p}.alpha.0", d, c)
        linear(f"{p}.q", d, c)
        linear(f"{p}.proj", c, d)
        norm(f"{p}.layer_norm", d)
        if full:
            conv(f"{p}.k", c, c, 1, 1)
            conv(f"{p}.v", c, c, 1, 1)

    out.append(["tokens.weight", [m, d]])
    c0 = cfg.width(cfg.stem)
    conv("stem.0", 3, c0, 3, 1)
    bn("stem.1", c0)
    for i, (b, (ci, co)) in enumerate(zip(cfg.blocks, cfg.channels())):
        p = f"features.{i}"
        if b.kind == "lite":
            conv(f"{p}.conv.0", ci, ci * b.e1, 3, ci)
            bn(f"{p}.conv.1", ci * b.e1)
            conv(f"{p}.conv.4", ci * b.e1, co, 1, g)
            bn(f"{p}.conv.5", co)
            continue
        if b.stride == 1:
            hid = round(ci * b.e1)
            conv(f"{p}.conv1.0", ci, hid, 1, g)
            bn(f"{p}.conv1.1", hid)
            hyper(f"{p}.hyper1", hid)
            conv(f"{p}.conv2.0", hid, hid, 3, hid)
            bn(f"{p}.conv2.1", hid)
            hyper(f"{p}.hyper2", hid)
            conv(f"{p}.conv3.0", hid, co, 1, g)
            bn(f"{p}.conv3.1", co)
        else:
            h1, h2 = ci * b.e1, co * b.e2
            conv(f"{p}.conv1.0", ci, h1, 3, ci)
            bn(f"{p}.conv1.1", h1)
            hyper(f"{p}.hyper1", h1)
            conv(f"{p}.conv2.0", h1, co, 1, g)
            bn(f"{p}.conv2.1", co)
            conv(f"{p}.conv3.0", co, h2, 3, co)
            bn(f"{p}.conv3.1", h2)
            hyper(f"{p}.hyper3", h2)
            conv(f"{p}.conv4.0", h2, co, 1, g)
            bn(f"{p}.conv4.1", co)
        local_global(f"{p}.local_global", ci, not remove_proj_local)
        gb = f"{p}.global_block"  # ffn, ffn_norm, alpha, q, channel_mlp, layer_norm
        linear(f"{gb}.ffn.0", d, 2 * d)
        linear(f"{gb}.ffn.2", 2 * d, d)
        norm(f"{gb}.ffn_norm", d)
        if gbr_dynamic[1]:
            linear(f"{gb}.alpha.0", d, d)
        linear(f"{gb}.q", d, d)
        linear(f"{gb}.channel_mlp", d, d)
        norm(f"{gb}.layer_norm", d)
        gl = f"{p}.global_local"  # alpha, k, proj, then q, fuse
        if gbr_dynamic[2]:
            linear(f"{gl}.alpha.0", d, co)
        linear(f"{gl}.k", d, co)
        linear(f"{gl}.proj", d, co)
        if not remove_proj_local:
            conv(f"{gl}.q", co, co, 1, 1)
            conv(f"{gl}.fuse", co, co, 1, 1)
    c = cfg.channels()[-1][1]
    local_global("local_global", c, False)
    conv("classifier.conv.1", c, c * cfg.head_expansion, 1, g)
    bn("classifier.conv.2", c * cfg.head_expansion)
    linear("classifier.fc.0", c * cfg.head_expansion + d, cfg.head)
    bn("classifier.fc.1", cfg.head)
    linear("classifier.classifier.1", cfg.head, cfg.num_classes)
    return out


@pytest.mark.parametrize("size", SIZES)
def test_authors_names_rule_reproduces_the_reference_state_dicts(size):
    """The name rule above is the authors' structure: it gives the reference state dicts exactly, in order."""
    assert authors_state_dict(mfsearch.get_config(f"mobile_former_{size}")) == reference(size)["state_dict"]


# (authors' switches, mfsearch knobs)
VARIANTS = {
    "relu6": ({"se_zero": True}, {"activation": "relu6"}),
    "full": ({"remove_proj_local": False}, {"projections": "full"}),
    "gates": ({"gbr_dynamic": (True, True, True)}, {"former_gate": True, "f2m_gate": True}),
    "f2m_gate_only": ({"gbr_dynamic": (False, False, True)}, {"gate": False, "f2m_gate": True}),
    "relu6_full_gates": (
        {"se_zero": True, "remove_proj_local": False, "gbr_dynamic": (True, True, False)},
        {"activation": "relu6", "projections": "full", "former_gate": True},
    ),
}


@pytest.mark.parametrize("size", ["52m", "26m", "294m"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_official_variant_names_map_onto_the_model_and_load(size, variant):
    switches, knobs = VARIANTS[variant]
    cfg = mfsearch.get_config(f"mobile_former_{size}").replace(**knobs)
    official = authors_state_dict(cfg, **switches)
    model = MobileFormer(cfg)
    own = model.state_dict()
    key_map = released_key_map(cfg)
    assert sorted(key_map) == sorted(name for name, _ in official)
    assert sorted(key_map.values()) == sorted(own)  # a bijection onto the model's state dict
    for name, shape in official:
        assert list(own[key_map[name]].shape) == shape, name
    sd = rule_weights(official)
    missing, unexpected = load_released_checkpoint(model, sd)
    assert missing == [] and unexpected == []
    own = model.state_dict()
    for name, _ in official:
        assert torch.equal(own[key_map[name]], sd[name]), name


@pytest.mark.parametrize(
    "knobs,match",
    [
        ({"activation": "hswish"}, "dyrelu or relu6"),
        ({"arrangement": "serial"}, "parallel"),
        ({"final_bridge_projections": "full"}, "light final"),
    ],
)
def test_key_map_refuses_what_the_authors_never_built(knobs, match):
    with pytest.raises(CheckpointError, match=match):
        released_key_map(SMALL.replace(**knobs))
