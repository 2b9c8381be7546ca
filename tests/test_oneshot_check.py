"""proxy-check --oneshot: one-shot scores against multi-seed stand-alone training, on the tiny one-shot space."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from mfsearch._utils import finite_json
from mfsearch.models import get_config
from mfsearch.proxycheck import rank_correlations
from mfsearch.proxycheck.oneshot import architectures, oneshot_markdown, summarise_oneshot
from mfsearch.space import load_space

ROOT = Path(__file__).resolve().parents[1]
TINY_ONESHOT = ROOT / "spaces" / "tiny_oneshot.yaml"


def _lines(p: Path) -> list[dict]:
    return [json.loads(s) for s in p.read_text().splitlines() if s.strip()]


def test_the_paper_models_inside_a_one_shot_space_are_checked_beside_the_sample():
    space = load_space(ROOT / "spaces" / "macs300_oneshot.yaml")
    sample, paper = architectures(space, 24)
    assert len({c.arch_id for c in sample}) == 24 and all(space.within_budget(c)[0] for c in sample)
    # the paper models under 300M that are sub-networks of its supernet (their dropout, 0.2 against the base's 0.3,
    # holds no weights and is off when scored); 52M and 26M are not (lite block at stride 2, 26M grouped)
    assert paper == ["mobile_former_294m", "mobile_former_214m", "mobile_former_151m", "mobile_former_96m"]
    assert [c.arch_id for c in architectures(space, 24)[0]] == [c.arch_id for c in sample]  # seeded


def test_summary_correlates_complete_architectures_and_leaves_failed_ones_out():
    space = load_space(TINY_ONESHOT)
    sample, _ = architectures(space, 6)
    truth = [50.0, 48.0, 47.0, 45.0, 44.0, 40.0]
    scores = [{"arch_id": c.arch_id, "oneshot": t - 10.0, "score_cpu_s": 0.1} for c, t in zip(sample, truth)]
    runs = [{"arch_id": c.arch_id, "seed": s, "accuracy": t + (0.5 if s else -0.5), "cpu_s": 30.0}
            for c, t in zip(sample, truth) for s in (0, 1)]
    runs[-1] = {**runs[-1], "accuracy": None, "failed": "loss diverged"}  # the last architecture's seed 1
    s = summarise_oneshot(space, sample, [], [0, 1], scores, runs, [])
    assert s["complete"] == 5 and s["failed"] == [{"arch_id": sample[-1].arch_id, "seed": 1, "reason": "loss diverged"}]
    assert s["oneshot"]["spearman"] == 1.0 and s["oneshot"]["kendall"] == 1.0 and s["meets_goal"]
    assert s["one_seed"]["spearman"] == 1.0
    # seeds that agree on a 10-point spread: reliable means, so the goal can be checked against them
    assert s["standalone_noise"]["reliability_mean"] > 0.95 and s["goal_checkable"]
    assert s["standalone_noise"]["seeds_for_goal"] == 1 and "the goal can be checked here" in oneshot_markdown(space, s)
    # seed noise as large as the spread: no ranker reaches the goal against 2-seed means; said, with the seeds needed
    acc = [[45.0, 45.6], [45.3, 44.9], [45.6, 46.0], [45.9, 45.5], [46.2, 45.8]]  # noise std 0.35, spread 0.27
    noisy = [{**r, "accuracy": acc[i // 2][r["seed"]]} for i, r in enumerate(runs[:-2])]
    n = summarise_oneshot(space, sample, [], [0, 1], scores, noisy, [])
    assert n["complete"] == 5 and not n["goal_checkable"] and 0.5 < n["standalone_noise"]["ceiling_kendall"] < 0.6
    assert n["standalone_noise"]["seeds_for_goal"] == 4
    md = oneshot_markdown(space, n)
    assert "cannot be checked against them: 4 seeds would make it checkable" in md and "nan" not in md
    assert abs(n["oneshot_corrected"]["kendall"]) > abs(n["oneshot"]["kendall"])  # the noise hid part of it
    json.loads(finite_json(n))
    assert s["standalone_cpu_minutes"] == pytest.approx(12 * 30 / 60)  # a failed run spent CPU too
    # a run found twice (stored here and published with --results) counts once
    assert summarise_oneshot(space, sample, [], [0, 1], scores, runs + runs, [])["standalone_cpu_minutes"] == \
        pytest.approx(12 * 30 / 60)
    # all means equal: the correlations are undefined, said in words and written as null (valid JSON)
    flat = [{**r, "accuracy": 44.0} if r["accuracy"] is not None else r for r in runs]
    u = summarise_oneshot(space, sample, [], [0, 1], scores, flat, [])
    assert np.isnan(u["oneshot"]["kendall"]) and not u["meets_goal"]
    assert json.loads(finite_json(u))["oneshot"]["kendall"] is None
    assert "undefined" in oneshot_markdown(space, u) and "nan" not in oneshot_markdown(space, u)
    reversed_scores = [{**r, "oneshot": -r["oneshot"]} for r in scores]
    r = summarise_oneshot(space, sample, [], [0, 1], reversed_scores, runs, [])
    assert r["oneshot"]["kendall"] == -1.0 and not r["meets_goal"]
    # a paper model's runs come from the paper check's records (by name), its truth from the paper
    paper_runs = [{"name": "mobile_former_26m", "seed": s, "accuracy": 46.0 + s} for s in (0, 1)]
    p = summarise_oneshot(space, sample, ["mobile_former_26m"], [0, 1],
                          scores + [{"arch_id": get_config("mobile_former_26m").arch_id, "oneshot": 36.0,
                                     "score_cpu_s": 0.1}], runs, paper_runs)
    row = next(x for x in p["rows"] if x["kind"] == "paper")
    assert row["mean"] == 46.5 and row["imagenet_top1"] == 64.0 and p["complete"] == 6


@pytest.mark.slow
def test_oneshot_check_trains_scores_reports_and_resumes(tmp_path, run_cli):
    args = ("proxy-check", str(TINY_ONESHOT), "--oneshot", "--sample", "6", "--seeds", "2")
    r = run_cli(*args, cwd=tmp_path)
    assert "One-shot check: tiny_oneshot" in r.stdout and "Traceback" not in r.stderr
    [out] = (tmp_path / "runs" / "proxy-check").glob("tiny_oneshot-*/oneshot-*")
    rep = json.loads((out / "report.json").read_text())
    assert rep["complete"] == 6 and rep["seeds"] == [0, 1] and (out / "oneshot_vs_standalone.png").stat().st_size
    # the reported correlation is the one of the stored records
    scores = {r["arch_id"]: r["oneshot"] for r in _lines(out / "scores.jsonl")}
    runs = _lines(out.parent / "architectures.jsonl")
    assert len(runs) == 12 and set(scores) == {r["arch_id"] for r in runs}
    mean = {a: np.mean([r["accuracy"] for r in runs if r["arch_id"] == a]) for a in scores}
    ids = sorted(scores)
    want = rank_correlations([scores[a] for a in ids], [mean[a] for a in ids])
    assert (rep["oneshot"]["spearman"], rep["oneshot"]["kendall"]) == pytest.approx(want, abs=1e-4)
    assert rep["params"]["interval"] and "one_seed" in rep
    ckpt = next((tmp_path / "runs" / "supernets").glob("*/supernet.pt"))
    before = ckpt.read_bytes()

    # a run cut short (the last record torn): the missing stand-alone runs, and only those, are trained again
    (out.parent / "architectures.jsonl").write_text("".join(json.dumps(r) + "\n" for r in runs[:7])
                                                    + '{"arch_id": "cut')
    r = run_cli(*args, cwd=tmp_path)
    assert "training 5 stand-alone" in r.stderr and "scoring" not in r.stderr and "supernet" not in r.stderr
    again = _lines_tolerant(out.parent / "architectures.jsonl")
    assert len(again) == 12 and {(x["arch_id"], x["seed"]) for x in again} == {(x["arch_id"], x["seed"]) for x in runs}
    assert ckpt.read_bytes() == before
    assert json.loads((out / "report.json").read_text())["complete"] == 6

    # nothing missing: nothing trained, nothing scored
    r = run_cli(*args, cwd=tmp_path)
    assert "training" not in r.stderr and "scoring" not in r.stderr

    # damaged lines (not objects, wrong types, not UTF-8) are skipped, here and in a sibling folder: no traceback
    junk = b'[1, 2, 3]\nnull\n7\n{"arch_id": "x", "seed": "0", "accuracy": 1}\n\xff\xfe\n'
    for p in (out / "scores.jsonl", out.parent / "architectures.jsonl"):
        p.write_bytes(p.read_bytes() + junk + b'{"arch_id": "y", "oneshot": "abc"}\n')
    sibling = out.parent.parent / f"other-{out.parent.name.rsplit('-', 1)[1]}"
    sibling.mkdir()
    (sibling / "paper.jsonl").write_bytes(junk)
    r = run_cli(*args, "--report-only", cwd=tmp_path)
    assert "Traceback" not in r.stderr and json.loads((out / "report.json").read_text())["complete"] == 6

    # another space with the same evaluation settings reuses the stored stand-alone runs (same eval_id)
    text = TINY_ONESHOT.read_text()  # the knobs in the same order: the same seeded sample
    (tmp_path / "copy.yaml").write_text(text.replace("name: tiny_oneshot\n", "name: tiny_oneshot_copy\n"))
    r = run_cli("proxy-check", str(tmp_path / "copy.yaml"), "--oneshot", "--sample", "6", "--seeds", "2", cwd=tmp_path)
    assert "stand-alone" not in r.stderr and "scoring 6" in r.stderr, r.stderr
    [other] = (tmp_path / "runs" / "proxy-check").glob("tiny_oneshot_copy-*/oneshot-*")
    assert json.loads((other / "report.json").read_text())["oneshot"] == rep["oneshot"]
    assert not (other.parent / "architectures.jsonl").exists()


def _lines_tolerant(p: Path) -> list[dict]:
    out = []
    for s in p.read_text().splitlines():
        try:
            out.append(json.loads(s))
        except json.JSONDecodeError:
            continue
    return out


def test_oneshot_check_refuses_a_stand_alone_space_and_other_modes(tmp_path, tiny_yaml, run_cli):
    r = run_cli("proxy-check", str(tiny_yaml), "--oneshot", cwd=tmp_path, check=False)
    assert r.returncode == 2 and "evaluation.strategy" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    for extra in (("--zero-cost",), ("--models", "26m"), ("--batch-size", "32")):  # named before anything else
        r = run_cli("proxy-check", str(TINY_ONESHOT), "--oneshot", *extra, cwd=tmp_path, check=False)
        assert r.returncode == 2 and f"{extra[0]}: does not go with --oneshot" in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    r = run_cli("proxy-check", str(TINY_ONESHOT), "--oneshot", "--seeds", "101", cwd=tmp_path, check=False)
    assert r.returncode == 2 and "--seeds: must be in [1, 100]" in r.stderr
    r = run_cli("proxy-check", str(TINY_ONESHOT), "--oneshot", "--sample", "1001", cwd=tmp_path, check=False)
    assert r.returncode == 2 and "--sample: must be in [4, 1000]" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    small = yaml.safe_load(TINY_ONESHOT.read_text())  # two architectures: stage 1's width is the only choice left
    small["name"] = "two_archs"
    small["space"] = {**small["space"], "num_tokens": 2, "token_dim": 16, "stem": 8, "head": 64, "bridge_heads": 1,
                      "lite": {"out": 8, "e1": 1, "stride": 2},
                      "stages": [{"out": {"choice": [8, 16]}, "depth": 1, "e1": 2, "stride": 2, "down_e1": 1,
                                  "down_e2": 1}, {"out": 16, "depth": 1, "e1": 2, "stride": 1},
                                 {"out": 24, "depth": 1, "e1": 3, "stride": 2, "down_e1": 2, "down_e2": 2}]}
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(small))
    r = run_cli("proxy-check", str(tmp_path / "two.yaml"), "--oneshot", "--sample", "4", cwd=tmp_path, check=False)
    assert r.returncode == 2 and "--sample" in r.stderr and "only 2" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs" / "supernets").exists()  # refused before anything was trained


@pytest.mark.parametrize("oneshot", [True, False])
def test_a_second_check_into_the_same_folder_is_refused_naming_the_holder(tmp_path, tiny_yaml, run_cli, oneshot):
    import fcntl

    from mfsearch.proxycheck import check_dir
    from mfsearch.proxycheck.oneshot import standalone_space

    space = load_space(TINY_ONESHOT if oneshot else tiny_yaml)
    folder = check_dir(standalone_space(space) if oneshot else space, tmp_path / "runs")
    folder.mkdir(parents=True)
    with open(folder / ".lock", "a+") as fh:  # as a running check holds it
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fh.write("pid 4242 on elsewhere (since 10:00:00)")
        fh.flush()
        args = ("--oneshot", "--sample", "4") if oneshot else ("--models", "26m,52m,96m")
        r = run_cli("proxy-check", str(TINY_ONESHOT if oneshot else tiny_yaml), *args, cwd=tmp_path, check=False)
    assert r.returncode == 1 and "pid 4242 on elsewhere" in r.stderr and "running `mfsearch proxy-check" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not (folder / "paper.jsonl").exists() and not (folder / "architectures.jsonl").exists()
    assert not (tmp_path / "runs" / "supernets").exists()


@pytest.mark.slow
def test_oneshot_check_published_with_results_continues_on_another_machine(tmp_path, run_cli):
    args = ("proxy-check", str(TINY_ONESHOT), "--oneshot", "--sample", "6", "--seeds", "2")
    res = tmp_path / "res"
    (tmp_path / "m1").mkdir()
    run_cli(*args, "--results", str(res), cwd=tmp_path / "m1")
    [local] = (tmp_path / "m1" / "runs" / "proxy-check").glob("tiny_oneshot-*/oneshot-*")
    pub = res / local.parent.name
    assert len(_lines(pub / "architectures.jsonl")) == 12 and len(_lines(pub / local.name / "scores.jsonl")) >= 6
    assert (pub / local.name / "report.json").read_bytes() == (local / "report.json").read_bytes()
    published = (pub / "architectures.jsonl").read_bytes()
    rep = json.loads((local / "report.json").read_text())
    # machine 2 has only the published check: it trains, scores and loads nothing, and reports the same
    (tmp_path / "m2").mkdir()
    r = run_cli(*args, "--results", str(res), cwd=tmp_path / "m2")
    assert "training" not in r.stderr and "scoring" not in r.stderr and "supernet" not in r.stderr, r.stderr
    assert not (tmp_path / "m2" / "runs" / "supernets").exists()
    [again] = (tmp_path / "m2" / "runs" / "proxy-check").glob("tiny_oneshot-*/oneshot-*")
    assert json.loads((again / "report.json").read_text())["oneshot"] == rep["oneshot"]
    assert (pub / "architectures.jsonl").read_bytes() == published  # nothing new: not rewritten
    # machine 3 finds the published stand-alone runs cut short: it trains the missing ones only, and appends them
    lines = published.decode().splitlines(keepends=True)
    (pub / "architectures.jsonl").write_text("".join(lines[:7]))
    (tmp_path / "m3").mkdir()
    r = run_cli(*args, "--results", str(res), cwd=tmp_path / "m3")
    assert "training 5 stand-alone" in r.stderr and "scoring" not in r.stderr, r.stderr
    after = (pub / "architectures.jsonl").read_bytes()
    assert after.startswith("".join(lines[:7]).encode()) and len(_lines(pub / "architectures.jsonl")) == 12


def test_results_goes_only_with_oneshot_and_must_be_writable(tmp_path, tiny_yaml, run_cli):
    r = run_cli("proxy-check", str(tiny_yaml), "--results", str(tmp_path / "res"), cwd=tmp_path, check=False)
    assert r.returncode == 2 and "--results: goes only with --oneshot" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "file").write_text("")
    r = run_cli("proxy-check", str(TINY_ONESHOT), "--oneshot", "--results", str(tmp_path / "file"), cwd=tmp_path,
                check=False)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "name a writable folder" in r.stderr


@pytest.mark.slow
def test_with_two_workers_the_supernet_trains_in_its_own_process_beside_the_stand_alone_runs(tmp_path, run_cli):
    args = ("proxy-check", str(TINY_ONESHOT), "--oneshot", "--sample", "6", "--seeds", "2")
    (tmp_path / "two").mkdir()
    r = run_cli(*args, "--workers", "2", cwd=tmp_path / "two")
    assert "training the supernet in a process of its own" in r.stderr, r.stderr
    # this process trained no epoch: it waited for the supernet's process (or found it done), then loaded it
    assert "training nothing" in r.stderr or "waiting for" in r.stderr, r.stderr
    [out] = (tmp_path / "two" / "runs" / "proxy-check").glob("tiny_oneshot-*/oneshot-*")
    rep = json.loads((out / "report.json").read_text())
    assert rep["complete"] == 6 and len(_lines(out.parent / "architectures.jsonl")) == 12
    assert len(_lines(out / "scores.jsonl")) == 6
    # a complete supernet is not trained again, nor put in a process of its own: the check only reports
    r = run_cli(*args, "--workers", "2", cwd=tmp_path / "two")
    assert "process of its own" not in r.stderr and "training" not in r.stderr, r.stderr


@pytest.mark.slow
def test_a_check_killed_while_its_supernet_trains_beside_it_leaves_no_process_behind(tmp_path, run_cli):
    """SIGKILL the check while the supernet's own process trains: that process ends by itself (its lock frees),
    and the same command then completes the check."""
    import os
    import signal
    import subprocess
    import sys
    import time

    args = ("proxy-check", str(TINY_ONESHOT), "--oneshot", "--sample", "6", "--seeds", "2", "--workers", "2")
    with open(tmp_path / "err.txt", "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "mfsearch", *args], cwd=tmp_path, stdout=subprocess.DEVNULL,
                                stderr=err, env=dict(os.environ, MFSEARCH_RUNS=str(tmp_path / "runs")))
    try:
        deadline = time.monotonic() + 120
        while not list((tmp_path / "runs" / "supernets").glob("*/trainer.json")):  # its process is training it
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "err.txt").read_text()
            time.sleep(0.2)
        [trainer] = (tmp_path / "runs" / "supernets").glob("*/trainer.json")
        pid = json.loads(trainer.read_text())["pid"]
        assert pid != proc.pid  # not the check's own process
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()

    def alive(pid: int) -> bool:  # a process that ended but was not reaped yet (a zombie) counts as ended
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return False

    deadline = time.monotonic() + 5  # it looks for its parent every second; the supernet trains for longer
    while alive(pid):
        assert time.monotonic() < deadline, "the supernet's process outlived the check it trained for"
        time.sleep(0.1)
    assert list((tmp_path / "runs" / "supernets").glob("*/trainer.json")), "the supernet finished: too late a kill"
    r = run_cli(*args, cwd=tmp_path)
    [out] = (tmp_path / "runs" / "proxy-check").glob("tiny_oneshot-*/oneshot-*")
    assert json.loads((out / "report.json").read_text())["complete"] == 6, r.stderr


@pytest.mark.slow
def test_the_same_supernet_scored_with_other_val_images_scores_again_apart(tmp_path, run_cli):
    """Scores of one supernet with other scoring settings are another set: never taken for the first one's."""
    args = ("--oneshot", "--sample", "6", "--seeds", "2")
    run_cli("proxy-check", str(TINY_ONESHOT), *args, cwd=tmp_path)
    [first] = (tmp_path / "runs" / "proxy-check").glob("tiny_oneshot-*/oneshot-*")
    n = _lines(first / "scores.jsonl")[0]["val_images"]
    bad = run_cli("proxy-check", str(TINY_ONESHOT), *args, "--set", "oneshot.val_images=0", cwd=tmp_path, check=False)
    assert bad.returncode == 2 and "oneshot.val_images" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
    r = run_cli("proxy-check", str(TINY_ONESHOT), *args, "--set", f"oneshot.val_images={n // 2}", cwd=tmp_path)
    # the same supernet (scoring is not part of its key) and the same stand-alone runs: only the scores are new
    assert "scoring 6" in r.stderr and "training nothing" in r.stderr and "stand-alone" not in r.stderr, r.stderr
    [second] = [p for p in (tmp_path / "runs" / "proxy-check").glob("tiny_oneshot-*/oneshot-*") if p != first]
    assert second.name.rsplit("-", 1)[0] == first.name.rsplit("-", 1)[0]  # oneshot-<same supernet key>-<scoring>
    assert {s["val_images"] for s in _lines(second / "scores.jsonl")} == {n // 2}
    assert {s["val_images"] for s in _lines(first / "scores.jsonl")} == {n}
