"""Every name a space file can use comes from one registry: an unknown name is one line listing the known ones."""

import pytest

from mfsearch.evaluation.data import DATASETS
from mfsearch.evaluation.strategies import STRATEGIES
from mfsearch.objectives import OBJECTIVES
from mfsearch.search.engines import ENGINES
from mfsearch.search.samplers import SAMPLERS

CASES = {
    "sampler": ({"search": {"sampler": "annealing"}}, "search.sampler", SAMPLERS),
    "engine": ({"search": {"engine": "dask"}}, "search.engine", ENGINES),
    "strategy": ({"evaluation": {"strategy": "hypernet"}}, "evaluation.strategy", STRATEGIES),
    "dataset": ({"evaluation": {"dataset": "imagenet21k"}}, "evaluation.dataset", DATASETS),
    "objective": ({"objectives": [{"accuracy": "maximize"}, {"energy": "minimize"}]}, "energy", OBJECTIVES),
}


@pytest.mark.parametrize("registry", list(CASES))
def test_an_unknown_name_is_one_line_listing_the_known_ones(tmp_path, registry, run_cli, tiny_space):
    changes, field, known = CASES[registry]
    r = run_cli("run", str(tiny_space(tmp_path, **changes)), "--no-progress", cwd=tmp_path, check=False)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert field in line, line
    missing = [name for name in known if name not in line]
    assert not missing, (missing, line)
    assert not (tmp_path / "runs" / "tiny").exists() or not any((tmp_path / "runs" / "tiny").glob("journal*"))


def test_every_zero_cost_score_is_an_objective():
    from mfsearch.evaluation.zero_cost import SCORES

    assert set(SCORES) <= set(OBJECTIVES)
