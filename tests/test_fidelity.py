"""The seven presets compute the released models' function (reference vectors, float64)."""

import pytest
import torch

import mfsearch
from mfsearch.models import CheckpointError, count_params, load_released_checkpoint, released_key_map

from .reference import SIZES, reference, reference_input, rule_weights


@pytest.fixture(scope="module")
def ref_input():
    return reference_input()


def _trace(model, x):
    """[mean, std, mean|.|] of x after the stem and each block, and of the tokens."""
    stats = lambda t: [t.mean().item(), t.std().item(), t.abs().mean().item()]  # noqa: E731
    out = []
    z = model.init_tokens(x.shape[0])
    x = torch.nn.functional.relu6(model.stem(x))
    out.append({"where": "stem", "x": stats(x)})
    for i, blk in enumerate(model.blocks):
        x, z = blk(x, z)
        out.append({"where": f"block{i + 1}", "x": stats(x), "tokens": stats(z)})
    return out


@pytest.mark.parametrize("size", SIZES)
def test_logits_params_trace_match_reference(size, ref_input):
    ref = reference(size)
    model = mfsearch.create_model(f"mobile_former_{size}")
    assert count_params(model) == ref["params"]
    missing, unexpected = load_released_checkpoint(model, rule_weights(ref["state_dict"]))
    assert missing == [] and unexpected == []
    model = model.double().eval()
    with torch.no_grad():
        logits = model(ref_input)
        trace = _trace(model, ref_input)
    expected = torch.tensor(ref["logits"], dtype=torch.float64)
    assert logits.shape == expected.shape
    assert (logits - expected).abs().max().item() < 1e-9
    for got, want in zip(trace, ref["trace"]):
        assert got["where"] == want["where"]
        for key in ("x", "tokens"):
            if key in got and key in want:
                assert got[key] == pytest.approx(want[key], rel=1e-9, abs=1e-12), (got["where"], key)


@pytest.mark.parametrize("size", ["294m", "26m"])
def test_key_map_is_a_bijection_onto_model_state(size):
    ref = reference(size)
    model = mfsearch.create_model(f"mobile_former_{size}")
    key_map = released_key_map(model.cfg)
    assert sorted(key_map) == sorted(n for n, _ in ref["state_dict"])
    assert sorted(key_map.values()) == sorted(model.state_dict())


@pytest.mark.parametrize("wrapper", [None, "state_dict", "model"])
def test_load_checkpoint_file_with_or_without_wrapper(tmp_path, wrapper):
    ref = reference("52m")
    sd = rule_weights(ref["state_dict"])
    path = tmp_path / "released.pth.tar"
    torch.save({wrapper: sd, "epoch": 450} if wrapper else sd, path)
    model = mfsearch.create_model("mobile_former_52m")
    load_released_checkpoint(model, path)
    assert torch.equal(model.tokens.detach(), sd["tokens.weight"])
    assert torch.equal(model.head.classifier.bias.detach(), sd["classifier.classifier.1.bias"])


def test_checkpoint_errors_name_the_keys(tmp_path):
    sd = rule_weights(reference("52m")["state_dict"])
    model = mfsearch.create_model("mobile_former_52m")
    extra = dict(sd, **{"features.99.conv1.0.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match=r"unexpected: features\.99\.conv1\.0\.weight"):
        load_released_checkpoint(model, extra)
    partial = {k: v for k, v in sd.items() if k != "classifier.fc.0.bias"}
    with pytest.raises(CheckpointError, match=r"missing: head\.fc\.bias"):
        load_released_checkpoint(model, partial)
    wrong = dict(sd, **{"classifier.fc.0.bias": torch.zeros(3)})
    with pytest.raises(CheckpointError, match="shape mismatch: head.fc.bias"):
        load_released_checkpoint(model, wrong)
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_released_checkpoint(model, tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_released_checkpoint(model, tmp_path / "junk.pth")


def test_features_only_backbone_loads_released_weights_and_returns_pyramid():
    sd = rule_weights(reference("294m")["state_dict"])
    model = mfsearch.create_model("mobile_former_294m", features_only=True)
    missing, unexpected = load_released_checkpoint(model, sd)
    assert missing == []
    assert [f["reduction"] for f in model.feature_info] == [4, 8, 16, 32]
    feats, tokens = model.eval()(torch.randn(1, 3, 224, 224))
    assert [tuple(f.shape[1:]) for f in feats] == [(24, 56, 56), (48, 28, 28), (128, 14, 14), (192, 7, 7)]
    assert tuple(tokens.shape) == (1, 6, 192)
