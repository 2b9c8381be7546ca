"""Space files: shipped spaces load, paper models are points of them, bad files fail clearly."""

import subprocess
import sys
from pathlib import Path

import pytest

from mfsearch import get_config
from mfsearch.errors import InputError
from mfsearch.search import repair
from mfsearch.space import load_space, random_suggest, sample_config, within_budget
from mfsearch.space.parse import space_from_data

SPACES = Path(__file__).parent.parent / "spaces"

PAPER_POINTS = {
    "macs300": ("mobile_former_294m", {
        "num_tokens": 6, "token_dim": 192, "stem": 16, "head": 1920, "activation": "dyrelu",
        "stages.0.out": 24, "stages.0.depth": 2, "stages.0.e1": 4, "stages.1.out": 48, "stages.1.depth": 2,
        "stages.1.e1": 4, "stages.2.out": 96, "stages.2.depth": 2, "stages.2.e1": 4, "stages.3.out": 128,
        "stages.3.depth": 2, "stages.4.out": 192, "stages.4.depth": 3}),
    "macs150": ("mobile_former_151m", {
        "num_tokens": 6, "token_dim": 192, "stem": 12, "head": 1280, "activation": "dyrelu",
        "stages.0.out": 16, "stages.0.depth": 2, "stages.0.e1": 3, "stages.1.out": 32, "stages.1.depth": 2,
        "stages.1.e1": 3, "stages.2.out": 64, "stages.2.depth": 2, "stages.2.e1": 4, "stages.3.out": 88,
        "stages.3.depth": 2, "stages.4.out": 128, "stages.4.depth": 3}),
    "macs50": ("mobile_former_52m", {
        "num_tokens": 3, "token_dim": 128, "stem": 8, "head": 1024, "activation": "dyrelu", "stages.0.depth": 1,
        "stages.1.out": 24, "stages.1.depth": 2, "stages.1.e1": 3, "stages.2.out": 48, "stages.2.depth": 2,
        "stages.2.e1": 4, "stages.3.out": 64, "stages.3.depth": 1, "stages.4.out": 96, "stages.4.depth": 2}),
}


@pytest.mark.parametrize("name", ["macs300", "macs150", "macs50", "tiny"])
def test_shipped_spaces_load_and_sample(name):
    space = load_space(SPACES / f"{name}.yaml")
    fits = [within_budget(sample_config(space, random_suggest(s)), space.budget)[0] for s in range(200)]
    assert 0.1 < sum(fits) / len(fits) < 1.0  # the budget binds, and part of the space fits


@pytest.mark.parametrize("name", PAPER_POINTS)
def test_paper_model_is_a_point_and_a_reference(name):
    ref, params = PAPER_POINTS[name]
    space = load_space(SPACES / f"{name}.yaml")
    cfg = sample_config(space, lambda n, d: params[n])
    assert cfg.arch_id == get_config(ref).arch_id
    assert ref in space.reference_names()


BASE = {
    "name": "t", "base": "mobile_former_26m",
    "space": {"num_tokens": {"choice": [1, 2]}, "stages": [{"out": {"choice": [16, 24]}, "depth": 1}]},
    "budget": {"macs": 30000000},
    "evaluation": {"epochs": 1},
    "search": {"trials": 2},
}

BAD = [
    ("name: [x\n", r":2: invalid YAML: expected .,. or .\]."),
    ("- 1\n- 2\n", r"file: a space file must be a mapping"),
    ("name: t\nbogus: 1\n", r":2: bogus: unknown key"),
    ("name: 'a b'\n", r":1: name: must be 1-64"),
    ("name: t\nbase: mobile_former_1m\n", r":2: base: unknown preset"),
    ("name: t\nspace: 3\n", r":2: space: must be a mapping"),
    ("name: t\nspace:\n  num_token: {choice: [1]}\n", r":3: space.num_token: unknown key"),
    ("name: t\nspace:\n  num_tokens: {choice: []}\n", r":3: space.num_tokens.choice: must be a non-empty list"),
    ("name: t\nspace:\n  num_tokens: {choice: [1], int: [1, 2]}\n", r"exactly one of"),
    ("name: t\nspace:\n  num_tokens: {int: [5, 2]}\n", r"low 5 is above high 2"),
    ("name: t\nspace:\n  num_tokens: {int: [1, 99]}\n", r"space.num_tokens: value 99: must be in \[0, 12\]"),
    ("name: t\nspace:\n  activation: {choice: [relu, swish]}\n", r"value 'swish': unknown value"),
    ("name: t\nspace:\n  token_dim: {choice: [12.5]}\n", r"value 12.5: must be an integer"),
    ("name: t\nspace:\n  stages:\n    - {out: 8}\n", r":4: space.stages\[0\].depth: is required"),
    ("name: t\nspace:\n  stages:\n    - {out: 8, depth: 1, stride: 3}\n", r"stride: value 3: must be"),
    ("name: t\nspace:\n  stages:\n    - {out: -8, depth: 1}\n", r"out: value -8: must be in"),
    ("name: t\nbudget:\n  macs: -5\n", r":3: budget.macs: must be in"),
    ("name: t\nbudget:\n  macs: lots\n", r"budget.macs: must be an integer"),
    ("name: t\nobjectives:\n  - accuracy: minimize\n", r"accuracy can only be maximized"),
    ("name: t\nobjectives:\n  - macs: minimize\n", r"must include accuracy"),
    ("name: t\nevaluation:\n  dataset: mnist\n", r":3: evaluation.dataset: unknown value 'mnist'"),
    ("name: t\nevaluation:\n  epochs: 1000000\n", r"evaluation.epochs: must be in \[1, 1000\]"),
    ("name: t\nevaluation:\n  lr: -1\n", r"evaluation.lr: must be in"),
    ("name: t\nevaluation:\n  channels: 1\n", r"evaluation.channels: must be 3"),
    ("name: t\nsearch:\n  sampler: annealing\n", r":3: search.sampler: unknown value"),
    ("name: t\nsearch:\n  trials: 1000000000000\n", r"search.trials: must be in"),
    ("name: t\nsearch:\n  workers: 0\n", r":3: search.workers: must be in \[1, 256\]"),
    ("name: t\nsearch:\n  reference_models: [mobile_former_7m]\n", r"unknown model 'mobile_former_7m'"),
    ("name: t\nstorage: 12\n", r"storage: must be a storage URL"),
    ("name: t\nspace:\n  dropout: {float: [0, 0.2]}\nsearch:\n  sampler: grid\n", r"give this float range a step"),
    ("!!python/object/apply:os.system ['touch pwned']\n", r"invalid YAML"),
    ("name: !!python/name:os.system t\n", r"invalid YAML"),
    ("a: &a [*a]\n", r"invalid YAML: line 1: a YAML alias refers to itself"),
    ("a: &a [1, 2]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
     "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
     "f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\ng: [*f, *f, *f, *f, *f, *f, *f, *f, *f]\n", r"alias bomb"),
    ("name: t\nspace:\n  num_tokens: {choice: [0]}\n", r"num_tokens: value 0: is 0 but bridges are on"),
]


@pytest.mark.parametrize("text,pattern", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_space_files_fail_with_location(tmp_path, text, pattern):
    p = tmp_path / "space.yaml"
    p.write_text(text)
    with pytest.raises(InputError, match=pattern):
        load_space(p)
    assert not (tmp_path / "pwned").exists()


def test_cli_bad_space_one_line_exit_2(tmp_path):
    p = tmp_path / "space.yaml"
    p.write_text("name: t\nsearch:\n  sampler: annealing\n")
    r = subprocess.run([sys.executable, "-m", "mfsearch.cli", "run", str(p)], capture_output=True, text=True,
                       timeout=120, cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip() == f"mfsearch: error: {p}:3: search.sampler: unknown value 'annealing'; choose one of " \
                               "random, tpe, nsga2, grid, bruteforce"
    assert not (tmp_path / "runs").exists()


def test_repair_reaches_the_budget():
    data = dict(BASE, space={
        "num_tokens": {"choice": [1, 3]}, "stem": {"choice": [8, 16, 32]},
        "stages": [{"out": {"choice": [16, 64, 256]}, "depth": {"int": [1, 4]}, "e1": {"choice": [2, 6]}}],
    }, budget={"macs": 12_000_000})
    space = space_from_data(data, "t.yaml", {})
    params = {"num_tokens": 3, "stem": 32, "stages.0.out": 256, "stages.0.depth": 4, "stages.0.e1": 6}
    cfg = sample_config(space, lambda n, d: params[n])
    assert not within_budget(cfg, space.budget)[0]
    fixed = repair(space, params)
    assert fixed is not None
    assert within_budget(sample_config(space, lambda n, d: fixed[n]), space.budget)[0]


def test_span_spaces_extend_one_file_and_share_its_supernet():
    from mfsearch.evaluation.strategies import oneshot_settings
    from mfsearch.oneshot.strategy import unsupported
    from mfsearch.oneshot.train import supernet_key

    span = load_space(SPACES / "span_oneshot.yaml")
    keys = {supernet_key(span, oneshot_settings(span))}
    for b in (50, 150, 300):
        s = load_space(SPACES / f"span{b}_oneshot.yaml")
        assert s.name == f"span{b}_oneshot" and s.budget.macs == b * 10**6 and "extends" not in s.raw
        assert (s.knobs, s.lite, s.stages, s.evaluation) == (span.knobs, span.lite, span.stages, span.evaluation)
        keys.add(supernet_key(s, oneshot_settings(s)))
    assert len(keys) == 1  # one supernet serves every budget
    inside = [m for m in ("mobile_former_508m", "mobile_former_294m", "mobile_former_214m", "mobile_former_151m",
                          "mobile_former_96m") if unsupported(span, get_config(m)) is None]
    assert len(inside) == 5


def test_extends_errors_name_the_field_and_the_file(tmp_path):
    base = (SPACES / "tiny.yaml").read_text()
    (tmp_path / "base.yaml").write_text(base)
    (tmp_path / "child.yaml").write_text("extends: base.yaml\nname: child\nbudget: {macs: 9000000}\n")
    child = load_space(tmp_path / "child.yaml")
    assert child.name == "child" and child.budget.macs == 9_000_000
    assert child.knobs == load_space(tmp_path / "base.yaml").knobs
    for text, want in [("extends: nowhere.yaml\nname: a\n", "extends"),
                       ("extends: child.yaml\nname: b\n", "one level only"),
                       ("extends: [1]\nname: c\n", "extends: must be the path"),
                       ("extends: broken.yaml\nname: d\n", "broken.yaml:")]:
        (tmp_path / "broken.yaml").write_text(base.replace("name: tiny", "name: tiny\nbogus: 1"))
        p = tmp_path / "x.yaml"
        p.write_text(text)
        with pytest.raises(InputError, match=want) as e:
            load_space(p)
        assert "\n" not in str(e.value)
    # an error about a field the file inherits names the file and line it comes from
    (tmp_path / "m.yaml").write_text("extends: base.yaml\nname: m\nevaluation: {strategy: oneshot, dataset: "
                                     "fashion_mnist, image_size: 16}\n")
    with pytest.raises(InputError) as e:
        load_space(tmp_path / "m.yaml")
    line = next(i for i, x in enumerate(base.splitlines(), 1) if x.strip().startswith("activation:"))
    assert str(e.value).startswith(f"{tmp_path / 'base.yaml'}:{line}: space.activation: ")
    assert str(e.value).endswith(f"(inherited by {tmp_path / 'm.yaml'} through extends:)")
    # an inherited evaluation: {from: ...} is still found from a file in another folder
    (tmp_path / "proxy.yaml").write_text(base)
    (tmp_path / "sub").mkdir()
    (tmp_path / "withfrom.yaml").write_text(_with_from(base))
    (tmp_path / "sub" / "far.yaml").write_text("extends: ../withfrom.yaml\nname: far\n")
    assert load_space(tmp_path / "sub" / "far.yaml").evaluation == load_space(tmp_path / "withfrom.yaml").evaluation


def _with_from(text: str) -> str:
    import yaml

    d = yaml.safe_load(text)
    d["name"] = "withfrom"
    d["evaluation"] = {"from": "proxy.yaml", "epochs": 2}
    return yaml.safe_dump(d)
