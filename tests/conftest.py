"""Shared fixtures: the tiny space and how tests run the command line and read a study.

Markers: ``slow`` (more than about 20 s: ``pytest -m "not slow"`` is the quick run), ``faults``
(real kills, full disks, namespaces), ``postgres`` and ``ray`` (start real servers). CI runs all.
"""

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
import yaml

torch.set_num_threads(int(os.environ.get("MFSEARCH_TEST_THREADS", "1")))

TINY_YAML = Path(__file__).parent.parent / "spaces" / "tiny.yaml"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _tiny_space(tmp_path: Path, **changes) -> Path:
    """A copy of the tiny space in ``tmp_path`` with some sections changed (deep-merged one level)."""
    data = yaml.safe_load(TINY_YAML.read_text())
    for k, v in changes.items():
        if isinstance(v, dict) and isinstance(data.get(k), dict):
            data[k] = {**data[k], **v}
        else:
            data[k] = v
    p = tmp_path / f"{data['name']}.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def _run_cli(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """``mfsearch ARGS`` in a real subprocess, run in ``cwd`` with its runs under ``cwd/runs``."""
    env = dict(os.environ, MFSEARCH_RUNS=str(cwd / "runs"))
    r = subprocess.run([sys.executable, "-m", "mfsearch.cli", *args], capture_output=True, text=True, cwd=cwd,
                       env=env, timeout=600)
    if check:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


def _load(cwd: Path, name: str = "tiny") -> optuna.Study:
    """The study ``name`` of the runs under ``cwd/runs``."""
    from mfsearch.store import default_storage_url, open_storage

    run_dir = cwd / "runs" / name
    return optuna.load_study(study_name=name, storage=open_storage(default_storage_url(run_dir)))


# a sitecustomize for a real subprocess in which ``import onnxruntime`` fails, as when it is not installed
_BLOCK_ONNXRUNTIME = """
import sys


class _Block:
    def find_spec(self, name, path=None, target=None):
        if name == "onnxruntime" or name.startswith("onnxruntime."):
            raise ImportError(f"No module named {name!r} (blocked for a test)")
        return None


sys.meta_path.insert(0, _Block())
"""


@pytest.fixture
def without_onnxruntime(tmp_path: Path) -> dict[str, str]:
    """The environment of a real subprocess without ONNX Runtime (its runs under ``tmp_path/runs``)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_BLOCK_ONNXRUNTIME)
    return dict(os.environ, PYTHONPATH=str(site), MFSEARCH_RUNS=str(tmp_path / "runs"))


@pytest.fixture(scope="session")
def tiny_yaml() -> Path:
    """spaces/tiny.yaml: a few hundred architectures that train in about a second each."""
    return TINY_YAML


@pytest.fixture(scope="session")
def tiny_space():
    """``tiny_space(folder, **section_changes) -> path`` of a changed copy of the tiny space."""
    return _tiny_space


@pytest.fixture(scope="session")
def run_cli():
    """``run_cli(*args, cwd=folder, check=True)``: the command line in a real subprocess."""
    return _run_cli


@pytest.fixture(scope="session")
def load():
    """``load(folder, name="tiny")``: the optuna study a run under ``folder`` wrote."""
    return _load
