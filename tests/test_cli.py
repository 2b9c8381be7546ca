"""The ``mfsearch`` command line, run as a real subprocess."""

import json
import os
import subprocess
import sys

import pytest

import mfsearch


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mfsearch.cli", *args], capture_output=True, text=True, timeout=120)


def test_help_lists_commands():
    r = run("--help")
    assert r.returncode == 0
    for cmd in ("info", "models"):
        assert cmd in r.stdout


def test_info_table_and_paper_figures():
    r = run("info", "mobile_former_294m")
    assert r.returncode == 0, r.stderr
    assert "295,430,400" in r.stdout and "11,422,648" in r.stdout
    assert "paper: MACs 294M  params 11.4M  ImageNet top-1 77.9" in r.stdout
    assert r.stdout.count("block") == 12


@pytest.mark.parametrize("name", mfsearch.list_models())
def test_info_json(name):
    r = run("info", name, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    cx = mfsearch.complexity(mfsearch.get_config(name))
    assert out["macs"] == cx.macs and out["params"] == cx.params
    assert isinstance(out["macs"], int) and isinstance(out["params"], int)


def test_info_options_change_the_count():
    r = run("info", "mobile_former_52m", "--json", "--input-size", "32", "--num-classes", "10")
    out = json.loads(r.stdout)
    cfg = mfsearch.get_config("mobile_former_52m").replace(num_classes=10)
    assert out["macs"] == mfsearch.complexity(cfg, 32).macs
    assert out["params"] == mfsearch.complexity(cfg, 32).params
    assert "paper" not in out


def test_info_config_file(tmp_path):
    p = tmp_path / "v.yaml"
    p.write_text("base: mobile_former_52m\nactivation: prelu\n")
    r = run("info", str(p), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["config"]["activation"] == "prelu"


@pytest.mark.parametrize(
    "text,needle",
    [
        ("base: mobile_former_52m\ntoken_dim: 126\n", "token_dim: 126 is not divisible by former_heads=4"),
        ("base: mobile_former_52m\nstem: -4\n", "stem: must be in"),
        ("base: mobile_former_52m\nactivation: swish\n", "activation: unknown value 'swish'"),
        ("base: mobile_former_52m\nnum_tokens: 0\n", "num_tokens: is 0 but bridges are on"),
        ("base: nosuch\n", "base: unknown preset"),
        ("a: [1,\n", "invalid YAML"),
    ],
)
def test_impossible_config_one_line_exit_2(tmp_path, text, needle):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    r = run("info", str(p))
    assert r.returncode == 2
    assert needle in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_unknown_preset():
    r = run("info", "mobile_former_1m")
    assert r.returncode == 2 and "known models: mobile_former_508m" in r.stderr


def test_closed_stdout_is_a_normal_end():
    """``mfsearch info ... | head``: the reader leaving early is not an error and prints no traceback."""
    r, w = os.pipe()
    os.close(r)  # nobody reads: the first write fails with EPIPE
    try:
        p = subprocess.run([sys.executable, "-m", "mfsearch.cli", "info", "mobile_former_294m"], stdout=w,
                           stderr=subprocess.PIPE, text=True, timeout=300)
    finally:
        os.close(w)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr


def test_every_command_and_action_prints_its_help():
    """--help formats every help string with %-expansion: a bare % in one is a traceback for the user."""
    import argparse

    from mfsearch.cli import build_parser

    def walk(p: argparse.ArgumentParser, path: str) -> list[str]:
        p.format_help()  # raises on a stray % in any help text of this level
        seen = [path]
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, sub in a.choices.items():
                    seen += walk(sub, f"{path} {name}")
        return seen

    seen = walk(build_parser(), "mfsearch")
    assert "mfsearch latency-table check" in seen and "mfsearch proxy-check" in seen


@pytest.mark.parametrize("args,field", [(("proxy-check", "x.yaml", "--sample", "abc"), "--sample"),
                                        (("proxy-check",), "space"), (("bogus",), "COMMAND"),
                                        (("latency-table", "check"), "table")])
def test_a_usage_error_is_one_line_naming_the_argument(tmp_path, run_cli, args, field):
    r = run_cli(*args, cwd=tmp_path, check=False)
    assert r.returncode == 2 and field in r.stderr and "--help" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
