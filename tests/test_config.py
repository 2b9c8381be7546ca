"""Config validation, round trips and the arch_id hash."""

import json

import pytest
import yaml

import mfsearch
from mfsearch.errors import InputError
from mfsearch.models import ConfigError, MobileFormerConfig, resolve_config
from mfsearch.models.io import dump_config, load_config_file
from mfsearch.models.random import random_config

BASE = mfsearch.get_config("mobile_former_294m")


@pytest.mark.parametrize("name", mfsearch.list_models())
def test_round_trip_dict_yaml_json(name, tmp_path):
    cfg = mfsearch.get_config(name)
    assert MobileFormerConfig.from_dict(cfg.to_dict()) == cfg
    p = tmp_path / "c.yaml"
    p.write_text(dump_config(cfg))
    assert load_config_file(p) == cfg
    j = tmp_path / "c.json"
    j.write_text(json.dumps(cfg.to_dict()))
    assert load_config_file(j).arch_id == cfg.arch_id


def test_arch_id_is_stable_and_discriminating():
    assert BASE.arch_id == mfsearch.get_config("mobile_former_294m").arch_id
    assert len(BASE.arch_id) == 16
    d = BASE.to_dict()
    shuffled = dict(reversed(list(d.items())))
    assert MobileFormerConfig.from_dict(shuffled).arch_id == BASE.arch_id
    assert BASE.replace(num_classes=10).arch_id == BASE.arch_id  # not an architecture property
    ids = {BASE.arch_id, BASE.replace(activation="relu").arch_id, BASE.replace(gate=False).arch_id,
           BASE.replace(num_tokens=3).arch_id, BASE.replace(arrangement="serial").arch_id}
    assert len(ids) == 5
    blocks = [b.to_dict() for b in BASE.blocks]
    blocks[2]["e1"] = 4.0  # 4 and 4.0 are the same architecture
    assert BASE.replace(blocks=blocks).arch_id == BASE.arch_id
    assert len({random_config(s).arch_id for s in range(200)}) == 200


# ids of the seven presets and of some variants, as computed before any knob was added: stored results
# are keyed by them, so they never change
PINNED_IDS = {
    "mobile_former_508m": "4adb48e612a661fe", "mobile_former_294m": "9954e67cf6cbea32",
    "mobile_former_214m": "6bd5c82b94182273", "mobile_former_151m": "73b12a663c05a751",
    "mobile_former_96m": "c604e4803e79c5f0", "mobile_former_52m": "366bf99837b67d3c",
    "mobile_former_26m": "be4a95e6543a4505",
}
# variants; earlier versions gave the final bridge the blocks' projections, hence
# final_bridge_projections: full beside projections: full (the same architecture, the same id)
PINNED_VARIANTS = [
    ("mobile_former_294m", {"activation": "relu6"}, "566d48f319bb730d"),
    ("mobile_former_294m", {"projections": "full", "final_bridge_projections": "full"}, "c0f478ced6551050"),
    ("mobile_former_294m", {"activation": "relu6", "projections": "full", "final_bridge_projections": "full"},
     "94f9a97ddb59e7b0"),
    ("mobile_former_294m", {"gate": False}, "f33c0e18b451a77c"),
    ("mobile_former_294m", {"arrangement": "serial"}, "ababdb8c0a9ebce9"),
    ("mobile_former_52m", {"projections": "full", "final_bridge_projections": "full", "bridge_heads": 4},
     "41a030c7db43bbc5"),
]


@pytest.mark.parametrize("name", list(PINNED_IDS))
def test_preset_ids_are_pinned(name):
    assert mfsearch.get_config(name).arch_id == PINNED_IDS[name]


@pytest.mark.parametrize("name,changes,arch_id", PINNED_VARIANTS)
def test_variant_ids_are_pinned(name, changes, arch_id):
    assert mfsearch.get_config(name).replace(**changes).arch_id == arch_id


NEW_KNOBS = [("final_bridge_projections", "full"), ("former_gate", True), ("f2m_gate", True)]


@pytest.mark.parametrize("knob,value", NEW_KNOBS)
def test_new_knob_away_from_its_default_changes_the_id(knob, value):
    changed = BASE.replace(**{knob: value})
    assert changed.arch_id != BASE.arch_id
    assert changed.replace(**{knob: getattr(BASE, knob)}).arch_id == BASE.arch_id
    assert MobileFormerConfig.from_dict(changed.to_dict()).arch_id == changed.arch_id


def test_projections_full_with_a_light_final_bridge_is_a_new_architecture():
    """What ``projections: full`` means changed (the final bridge is now light): so does its id."""
    assert BASE.replace(projections="full").arch_id not in {v for _, _, v in PINNED_VARIANTS}


def test_every_field_after_the_frozen_list_has_a_default():
    """A field added later is hashed only away from its default: it must have one."""
    import dataclasses

    from mfsearch.models.config import ID_FIELDS

    assert len(ID_FIELDS) == len(set(ID_FIELDS)) == 20
    added = [f for f in dataclasses.fields(MobileFormerConfig) if f.name not in (*ID_FIELDS, "num_classes", "name")]
    for f in added:
        assert f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING, f.name
    added = [f.name for f in added]
    assert sorted(added) == sorted(k for k, _ in NEW_KNOBS)  # a new field: add it to NEW_KNOBS too


@pytest.mark.parametrize(
    "changes,field,rule",
    [
        ({"token_dim": 190}, "token_dim", "not divisible by former_heads"),
        ({"num_tokens": 0}, "num_tokens", "bridges are on"),
        ({"num_tokens": 13}, "num_tokens", "must be in [0, 12]"),
        ({"activation": "gelu"}, "activation", "unknown value 'gelu'"),
        ({"bridges": "sideways"}, "bridges", "unknown value"),
        ({"arrangement": "zigzag"}, "arrangement", "unknown value"),
        ({"projections": "heavy"}, "projections", "unknown value"),
        ({"stem": -8}, "stem", "must be in"),
        ({"stem": 16.5}, "stem", "must be an integer"),
        ({"bridge_heads": 5}, "bridge_heads", "does not divide"),
        ({"groups": 3}, "stem", "not divisible by groups=3"),
        ({"dropout": 1.5}, "dropout", "[0, 1)"),
        ({"gate": "yes"}, "gate", "true or false"),
        ({"former_gate": 1}, "former_gate", "true or false"),
        ({"f2m_gate": "no"}, "f2m_gate", "true or false"),
        ({"final_bridge_projections": "heavy"}, "final_bridge_projections", "unknown value"),
        ({"width_mult": 0.0}, "width_mult", "[0.05, 8]"),
        ({"former_heads": 0}, "former_heads", "must be in"),
    ],
)
def test_impossible_configs_name_field_and_rule(changes, field, rule):
    with pytest.raises(ConfigError) as e:
        BASE.replace(**changes)
    assert e.value.field == field
    assert rule in e.value.rule


@pytest.mark.parametrize(
    "blocks,field",
    [
        ([{"kind": "mf", "out": 16, "e1": 2, "stride": 1}], "blocks[0].kind"),
        ([{"kind": "lite", "out": 16, "e1": 2, "stride": 3}], "blocks[0].stride"),
        ([{"kind": "lite", "out": 16, "e1": 2.5, "stride": 1}], "blocks[0].e1"),
        ([{"kind": "lite", "out": 16, "e1": 2}, {"kind": "mf", "out": 24, "e1": 6, "stride": 2}], "blocks[1].e2"),
        ([{"kind": "lite", "out": 16, "e1": 2}, {"kind": "lite", "out": 24, "e1": 6}], "blocks[1].kind"),
        ([{"kind": "lite", "out": 16, "e1": 2, "colour": 1}], "blocks[0].colour"),
        ([{"kind": "lite", "e1": 2}], "blocks[0].out"),
        ([], "blocks"),
    ],
)
def test_bad_blocks(blocks, field):
    d = BASE.to_dict()
    d["blocks"] = blocks
    with pytest.raises(ConfigError) as e:
        MobileFormerConfig.from_dict(d)
    assert e.value.field == field


def test_unknown_key_is_not_skipped():
    d = BASE.to_dict()
    d["num_token"] = 3
    with pytest.raises(ConfigError, match="num_token: unknown key"):
        MobileFormerConfig.from_dict(d)


def test_config_file_errors_are_located(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("base: mobile_former_52m\nnum_tokens: 3\ntoken_dim: 130\n")
    with pytest.raises(InputError, match=r"bad\.yaml:3: token_dim: 130 is not divisible"):
        load_config_file(p)
    p.write_text("base: mobile_former_52m\nblocks:\n  - {kind: lite, out: 12, e1: 3, stride: 2}\n"
                 "  - {kind: mf, out: 12, e1: 3, stride: 5}\n")
    with pytest.raises(InputError, match=r"bad\.yaml:4: blocks\[1\]\.stride: must be 1 or 2"):
        load_config_file(p)
    p.write_text("stem: [unclosed\n")
    with pytest.raises(InputError, match=r"bad\.yaml:\d+: invalid YAML"):
        load_config_file(p)
    p.write_text("!!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(InputError, match="invalid YAML"):
        load_config_file(p)
    assert not (tmp_path / "pwned").exists()


def test_base_preset_plus_overrides(tmp_path):
    p = tmp_path / "v.yaml"
    p.write_text(yaml.safe_dump({"base": "mobile_former_294m", "activation": "relu6", "num_tokens": 3}))
    cfg = resolve_config(str(p))
    assert cfg == BASE.replace(activation="relu6", num_tokens=3)


def test_width_mult_scales_widths_and_keeps_identity():
    assert BASE.replace(width_mult=1.0).channels() == BASE.channels()
    half = BASE.replace(width_mult=0.5)
    assert all(co % 4 == 0 for _, co in half.channels())
    assert mfsearch.complexity(half).macs < mfsearch.complexity(BASE).macs / 2.5
