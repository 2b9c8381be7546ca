"""proxy-check: rank statistics, the paper-model check and the zero-cost check on the tiny setting."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mfsearch.proxycheck import (
    attainable_kendall,
    corrected_kendall_bootstrap,
    disattenuated_kendall,
    pair_bootstrap,
    rank_correlations,
    rank_correlations_pairs,
    rank_correlations_rows,
    sample_architectures,
    seed_bootstrap,
    seed_reliability,
    seeds_for_kendall,
)
from mfsearch.space import load_space, within_budget


def test_rank_correlations_and_intervals():
    assert rank_correlations([1, 2, 3, 4], [10, 20, 30, 40]) == (1.0, 1.0)
    assert rank_correlations([1, 2, 3, 4], [4, 3, 2, 1]) == (-1.0, -1.0)
    assert all(np.isnan(v) for v in rank_correlations([1, 1, 1], [1, 2, 3]))
    truth = {"a": 3.0, "b": 2.0, "c": 1.0}
    # seeds that never disagree: the interval collapses onto the point
    assert seed_bootstrap({"a": [9.0, 9.0], "b": [5.0, 5.0], "c": [1.0, 1.0]}, truth, reps=200) == \
        {"spearman": [1.0, 1.0], "kendall": [1.0, 1.0]}
    # seeds that overlap widely: the interval covers disagreement
    wide = seed_bootstrap({"a": [9.0, 1.0], "b": [5.0, 5.0], "c": [1.0, 9.0]}, truth, reps=500)
    assert wide["spearman"][0] < 0 < wide["spearman"][1]
    x, y = list(range(10)), [0, 2, 1, 3, 5, 4, 6, 8, 7, 9]
    assert pair_bootstrap(x, y, reps=300, seed=1) == pair_bootstrap(x, y, reps=300, seed=1)  # seeded


def test_vectorised_rank_correlations_equal_scipys_row_by_row():
    rng = np.random.default_rng(0)
    y = [79.3, 77.9, 76.7, 75.2, 72.8, 68.7, 64.0]
    x = np.round(rng.normal(85, 1.0, size=(300, 7)) * 2) / 2  # on a half-point grid: many ties
    x[0] = 3.0  # a constant row
    sp, kt = rank_correlations_rows(x, y)
    for row, s, k in zip(x, sp, kt):
        want = rank_correlations(row, y)
        np.testing.assert_allclose([s, k], want, rtol=0, atol=1e-12)
    assert np.isnan(sp[0]) and np.isnan(kt[0])
    ties = [1.0, 1.0, 2.0, 3.0, 3.0, 4.0, 5.0]  # ties in the truth too
    sp, kt = rank_correlations_rows(x[1:50], ties)
    np.testing.assert_allclose(np.c_[sp, kt], [rank_correlations(r, ties) for r in x[1:50]], rtol=0, atol=1e-12)
    # both sides differing row by row (the pairs a bootstrap resamples), ties and constant rows on either side
    y2 = np.round(rng.normal(80, 1.0, size=(300, 7)) * 2) / 2
    y2[1] = 7.0
    sp, kt = rank_correlations_pairs(x, y2)
    np.testing.assert_allclose(np.c_[sp, kt], [rank_correlations(a, b) for a, b in zip(x, y2)], rtol=0, atol=1e-12)
    assert np.isnan(kt[0]) and np.isnan(kt[1])


def _simulated(n: int, seeds: int, spread: float, noise: float, seed: int = 0):
    """True accuracies and their noisy runs: run = truth + seed noise (the model the reliability assumes)."""
    rng = np.random.default_rng(seed)
    truth = rng.normal(85.0, spread, n)
    return truth, truth[:, None] + rng.normal(0.0, noise, (n, seeds))


def test_seed_reliability_recovers_the_share_of_variance_the_architectures_hold():
    _, runs = _simulated(4000, 2, spread=0.3, noise=0.5)
    rel = seed_reliability(runs)
    single = 0.3**2 / (0.3**2 + 0.5**2)  # 0.265
    assert rel["noise_sd"] == pytest.approx(0.5, abs=0.02) and rel["spread_sd"] == pytest.approx(0.3, abs=0.02)
    assert rel["single"] == pytest.approx(single, abs=0.03)
    assert rel["mean"] == pytest.approx(2 * single / (1 + single), abs=0.03)  # Spearman-Brown for 2 seeds
    # a seed that lifts every architecture alike (an easier data subset) changes no ranking: left out
    shifted = runs + np.array([0.0, 1.0])
    again = seed_reliability(shifted)
    assert again["mean"] == pytest.approx(rel["mean"], abs=1e-9) and again["noise_sd"] == pytest.approx(rel["noise_sd"])
    assert again["seed_shift_sd"] == pytest.approx(1.0 / 2**0.5, abs=0.02) and rel["seed_shift_sd"] < 0.05
    # no seed noise: fully reliable; no spread between architectures: nothing to rank by
    assert seed_reliability(np.c_[np.arange(5.0), np.arange(5.0) + 2.0])["mean"] == 1.0
    assert seed_reliability(np.full((6, 3), 80.0))["single"] != seed_reliability(np.full((6, 3), 80.0))["single"]
    assert np.isnan(seed_reliability([[1.0, 2.0], [3.0, 4.0]])["mean"])  # fewer than 3 architectures
    assert np.isnan(seed_reliability([[1.0], [2.0], [3.0]])["mean"])  # one seed


def test_the_tau_a_perfect_ranker_reaches_against_noisy_means_is_the_ceiling():
    truth, runs = _simulated(3000, 2, spread=0.3, noise=0.5, seed=1)
    from scipy.stats import kendalltau

    seen = kendalltau(truth, runs.mean(axis=1)).statistic  # ranking by the truth itself, checked against means
    ceiling = attainable_kendall(seed_reliability(runs)["mean"])
    assert ceiling == pytest.approx(seen, abs=0.03) and ceiling < 0.6
    # more seeds: a higher ceiling, and the number of seeds the 0.6 goal needs is where the ceiling crosses it
    single = 0.3**2 / (0.3**2 + 0.5**2)
    k = seeds_for_kendall(single, 0.6)
    assert k == 6
    assert attainable_kendall(k * single / (1 + (k - 1) * single)) >= 0.6
    assert attainable_kendall((k - 1) * single / (1 + (k - 2) * single)) < 0.6
    t6, r6 = _simulated(3000, 6, spread=0.3, noise=0.5, seed=2)
    assert kendalltau(t6, r6.mean(axis=1)).statistic == pytest.approx(0.6, abs=0.03)
    assert seeds_for_kendall(0.9, 0.6) == 1 and seeds_for_kendall(0.0, 0.6) is None
    assert seeds_for_kendall(float("nan"), 0.6) is None


def test_a_proxy_tau_corrected_for_the_means_noise_estimates_its_tau_against_the_truth():
    from scipy.stats import kendalltau

    truth, runs = _simulated(3000, 2, spread=0.3, noise=0.5, seed=3)
    proxy = truth + np.random.default_rng(4).normal(0.0, 0.25, len(truth))  # a decent ranker of its own
    observed = kendalltau(proxy, runs.mean(axis=1)).statistic
    corrected = disattenuated_kendall(observed, seed_reliability(runs)["mean"])
    assert corrected == pytest.approx(kendalltau(proxy, truth).statistic, abs=0.04)
    assert corrected > observed + 0.1  # the noise hid much of it
    assert np.isnan(disattenuated_kendall(0.3, 0.0)) and disattenuated_kendall(0.9, 0.1) == 1.0  # clipped
    small_t, small = _simulated(28, 2, spread=0.3, noise=0.5, seed=5)
    small_proxy = small_t + np.random.default_rng(6).normal(0.0, 0.25, 28)
    b = corrected_kendall_bootstrap(small_proxy, small, reps=300, seed=0)
    assert b == corrected_kendall_bootstrap(small_proxy, small, reps=300, seed=0)  # seeded
    lo, hi = b["kendall"]
    assert lo < kendalltau(small_proxy, small_t).statistic < hi and 0 <= b["undefined"] < 0.5


def test_sampled_architectures_are_distinct_within_budget_and_seeded(tiny_yaml):
    space = load_space(tiny_yaml)
    a = sample_architectures(space, 5, seed=3)
    assert len({c.arch_id for c in a}) == 5
    assert all(within_budget(c, space.budget)[0] for c in a)
    assert [c.arch_id for c in a] == [c.arch_id for c in sample_architectures(space, 5, seed=3)]


@pytest.mark.slow
def test_proxy_check_command_reports_resumes_and_refuses_bad_input(tmp_path, tiny_yaml, run_cli):
    args = ("proxy-check", str(tiny_yaml), "--seeds", "2", "--models", "26m,52m,96m", "--zero-cost", "--sample", "4",
            "--quiet")
    r = run_cli(*args, cwd=tmp_path)
    assert "| mobile_former_96m | 72.8 |" in r.stdout and "Spearman" in r.stdout
    (out,) = (tmp_path / "runs" / "proxy-check").iterdir()
    rep = json.loads((out / "report.json").read_text())
    rows = rep["paper"]["rows"]
    assert [x["model"] for x in rows] == ["mobile_former_96m", "mobile_former_52m", "mobile_former_26m"]
    assert all(x["seeds"] == 2 for x in rows) and len(rep["paper"]["per_seed"]) == 2
    lo, hi = rep["paper"]["interval"]["spearman"]
    assert -1.0 <= lo <= hi <= 1.0
    paper = [json.loads(x) for x in (out / "paper.jsonl").read_text().splitlines()]
    assert sorted((p["name"][14:], p["seed"]) for p in paper) == sorted(
        (m, s) for m in ("26m", "52m", "96m") for s in (0, 1))
    zc = rep["zero_cost"]
    assert zc["architectures"] == 4 and zc["paper_models"] == 3
    assert {x["proxy"] for x in zc["rows"]} == {"synflow", "grad_norm", "snip", "jacob_cov", "naswot", "params", "macs"}
    assert next(x for x in zc["rows"] if x["proxy"] == "params")["beats_params"] is False
    assert (out / "proxy_vs_imagenet.png").stat().st_size > 5000
    # resumed: nothing is trained again, the same report comes back
    lines = {f: (out / f).read_text() for f in ("paper.jsonl", "zero_cost.jsonl")}
    r2 = run_cli(*args, cwd=tmp_path)
    assert {f: (out / f).read_text() for f in lines} == lines
    assert json.loads((out / "report.json").read_text())["paper"] == rep["paper"]
    for bad, msg in [(("--models", "26m,52m"), "at least 3 models"), (("--models", "26m,52m,7b"), "unknown paper"),
                     (("--set", "epochs=2"), "evaluation.KEY=VALUE"), (("--set", "evaluation.epochs=0"),
                                                                         "evaluation.epochs")]:
        r = run_cli("proxy-check", str(tiny_yaml), *bad, cwd=tmp_path, check=False)
        assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert r2.returncode == 0


@pytest.mark.parametrize("missing", ["nope.yaml"])
def test_proxy_check_missing_space_file(tmp_path, missing, run_cli):
    r = run_cli("proxy-check", missing, cwd=tmp_path, check=False)
    assert r.returncode == 2 and missing in r.stderr and "Traceback" not in r.stderr


def test_runs_keep_the_thread_count_a_space_pins_whatever_the_workers(tiny_yaml, monkeypatch):
    """The thread count changes a CPU result (the proxy sweep measured up to 0.9 points per model), so a space
    that pins ``evaluation.threads`` runs every check with it; unpinned, the cores are shared out."""
    import dataclasses

    from mfsearch.proxycheck import _threads

    monkeypatch.setattr("os.cpu_count", lambda: 16)
    space = load_space(tiny_yaml)
    unpinned = dataclasses.replace(space, evaluation=dataclasses.replace(space.evaluation, threads=None))
    assert _threads(unpinned, 2) == 8 and _threads(unpinned, 1) is None
    for threads in (1, 2):
        pinned = dataclasses.replace(space, evaluation=dataclasses.replace(space.evaluation, threads=threads))
        assert _threads(pinned, 1) == _threads(pinned, 2) == _threads(pinned, 8) == threads
