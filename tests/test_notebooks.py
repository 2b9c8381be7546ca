"""The notebooks run top to bottom on a tiny study and tiny ablation reports (so they cannot rot)."""

import json
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from mfsearch.ablation import load_experiment, run_experiment, write_report
from mfsearch.search import OptunaSearch
from mfsearch.space import load_space
from mfsearch.store import StudyRef, default_storage_url

NB = Path(__file__).parent.parent / "notebooks"


def execute(name: str, env: dict[str, str]) -> nbformat.NotebookNode:
    nb = nbformat.read(NB / name, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "saved with outputs"
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NB)}}).execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb


def test_pareto_notebook(tmp_path, tiny_space):
    # a (never binding) latency budget: every trial carries a measured latency for the latency plot
    p = tiny_space(tmp_path, name="nbtiny", budget={"macs": 30_000_000, "latency_ms": 10_000},
                   latency={"threads": 1, "input_size": 64, "runs": 3, "warmup": 1, "runtime": "eager"},
                   search={"trials": 4, "sampler": "random", "reference_models": ["mobile_former_26m"]})
    space = load_space(p)
    run_dir = tmp_path / "runs" / "nbtiny"
    OptunaSearch(space, StudyRef("nbtiny", default_storage_url(run_dir), run_dir), progress=False).run(10)
    nb = execute("pareto_analysis.ipynb", {"MFSEARCH_NOTEBOOK_STUDY": str(run_dir)})
    text = json.dumps([c.get("outputs") for c in nb.cells])
    assert "mobile_former_26m" in text and "| rank |" in text
    assert (run_dir / "nb_front_macs.png").is_file() and (run_dir / "nb_front_latency.png").is_file()
    for cell in nb.cells:  # every figure is shown, the hypervolume's included (no backend switched under it)
        if cell.cell_type == "code" and ("plot_front" in cell.source or "plot_hypervolume_history" in cell.source):
            assert any("image/png" in o.get("data", {}) for o in cell.outputs), cell.source


@pytest.fixture
def tiny_ablation(tmp_path):
    f = tmp_path / "exp.yaml"
    f.write_text("name: nbabl\nbase: mobile_former_26m\nbaseline: a\nseeds: [0, 1]\narms:\n  a: {}\n"
                 "  b: {activation: relu}\npaper:\n  direction: {b: down}\n"
                 "evaluation: {image_size: 16, train_size: 300, val_size: 100, batch_size: 50}\n")
    exp = load_experiment(f)
    run_dir = run_experiment(exp, tmp_path / "runs", log=lambda s: None)
    write_report(exp, run_dir)
    return run_dir.parent


def test_ablation_notebook(tiny_ablation):
    nb = execute("ablations.ipynb", {"MFSEARCH_NOTEBOOK_ABLATIONS": str(tiny_ablation)})
    text = json.dumps([c.get("outputs") for c in nb.cells])
    assert "nbabl" in text and "Where the paper gives a direction" in text and "MDE 80%" in text
    plot = next(c for c in nb.cells if c.cell_type == "code" and "errorbar" in c.source)
    assert any("image/png" in o.get("data", {}) for o in plot.outputs)  # differences with their MDE, shown


def test_ablation_notebook_shows_the_committed_campaign():
    nb = execute("ablations.ipynb", {"MFSEARCH_NOTEBOOK_ABLATIONS": str(NB.parent / "experiments" / "results")})
    text = json.dumps([c.get("outputs") for c in nb.cells])
    assert "components_294m" in text and "tokens_294m" in text and "Where the paper gives a direction" in text
