"""One-shot search end to end (``evaluation.strategy: oneshot``): real supernet training on Fashion-MNIST, real
subprocesses, a real journal; the shared supernet cache and its lock; the inputs one-shot search refuses."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parent.parent
TINY_ONESHOT = ROOT / "spaces" / "tiny_oneshot.yaml"


def oneshot_space(folder: Path, name: str = "tiny_oneshot", **changes) -> Path:
    """A copy of spaces/tiny_oneshot.yaml in ``folder`` with some sections changed (merged one level)."""
    data = yaml.safe_load(TINY_ONESHOT.read_text())
    data["name"] = name
    data["search"].pop("confirm", None)  # confirmation only where a test asks for it
    for k, v in changes.items():
        data[k] = {**data[k], **v} if isinstance(v, dict) and isinstance(data.get(k), dict) else v
    p = folder / f"{name}.yaml"
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return p


def supernet_files(runs: Path) -> list[Path]:
    return sorted((runs / "supernets").glob("*/supernet.pt"))


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, run_cli):
    """One tiny one-shot search (the supernet trained on the way), run once for the tests below."""
    cwd = tmp_path_factory.mktemp("oneshot")
    space = oneshot_space(cwd, search={"trials": 12})
    r = run_cli("run", str(space), "--no-progress", cwd=cwd)
    return cwd, space, r


@pytest.mark.slow
def test_a_oneshot_search_trains_the_supernet_once_and_scores_every_trial_with_it(first_run, load):
    cwd, _, r = first_run
    assert "supernet " in r.stderr and "epoch 2/2" in r.stderr, r.stderr[-2000:]
    (ck,) = supernet_files(cwd / "runs")  # one supernet, in the shared cache beside the study
    key = ck.parent.name
    study = load(cwd, "tiny_oneshot")
    done = [t for t in study.get_trials() if t.user_attrs.get("status") == "trained"]
    assert len(done) == 12
    for t in done:
        ua = t.user_attrs
        assert ua["fidelity"] == "oneshot" and ua["supernet"] == key
        assert 0.0 <= ua["accuracy"] <= 100.0 and ua["score_s"] >= 0.0
    assert len({t.user_attrs["arch_id"] for t in done}) == 12  # de-duplicated as any search
    assert study.user_attrs["oneshot"]["key"] == key  # the study records which supernet scored it
    cost = study.user_attrs["oneshot"]["train_cpu_s"] / 60
    assert f"CPU-min, plus {cost:.1f} CPU-min training supernet {key}." in r.stdout, r.stdout[-2000:]
    import json

    summary = json.loads((cwd / "runs" / "tiny_oneshot" / "summary.json").read_text())
    assert summary["cost"]["supernet"] == key
    assert summary["cost"]["supernet_cpu_s"] == pytest.approx(study.user_attrs["oneshot"]["train_cpu_s"], abs=1e-2)
    import pandas as pd

    table = pd.read_csv(cwd / "runs" / "tiny_oneshot" / "results.csv")
    scored = table[table["status"] == "trained"]
    assert set(scored["fidelity"]) == {"oneshot"} and set(scored["supernet"]) == {key}
    assert (cwd / "runs" / "tiny_oneshot" / "pareto.png").stat().st_size > 0


@pytest.mark.slow
def test_a_second_search_on_the_same_supernet_trains_nothing(first_run, run_cli, load):
    cwd, space, _ = first_run
    (ck,) = supernet_files(cwd / "runs")
    before = (ck.stat().st_mtime_ns, ck.read_bytes())
    # another study (other budget, other name) over the same supernet definition and evaluation settings
    other = oneshot_space(cwd, name="tiny_oneshot_b", budget={"macs": 10_000_000}, search={"trials": 4, "seed": 1})
    r = run_cli("run", str(other), "--no-progress", cwd=cwd)
    assert "training nothing" in r.stderr and "epoch 1/" not in r.stderr, r.stderr[-2000:]
    assert supernet_files(cwd / "runs") == [ck]
    assert (ck.stat().st_mtime_ns, ck.read_bytes()) == before
    done = [t for t in load(cwd, "tiny_oneshot_b").get_trials() if t.user_attrs.get("status") == "trained"]
    assert len(done) == 4 and all(t.user_attrs["supernet"] == ck.parent.name for t in done)
    assert all(t.user_attrs["macs"] <= 10_000_000 for t in done)
    # both fronts on one plot, each study's own outputs under --out/<name>/
    r = run_cli("pareto", "tiny_oneshot", "tiny_oneshot_b", "--out", str(cwd / "both"), cwd=cwd)
    assert "## tiny_oneshot\n" in r.stdout and "## tiny_oneshot_b\n" in r.stdout
    assert (cwd / "both" / "fronts-tiny_oneshot+tiny_oneshot_b.png").stat().st_size > 0
    for name in ("tiny_oneshot", "tiny_oneshot_b"):
        assert (cwd / "both" / name / "pareto.md").read_text().startswith(f"# Pareto front of {name}\n")
    r = run_cli("pareto", "tiny_oneshot", "tiny_oneshot", cwd=cwd, check=False)
    assert r.returncode == 2 and "named twice" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_two_commands_needing_the_same_supernet_train_it_once(tmp_path):
    """Two searches started together on one runs directory: one trains, the other waits on the lock and loads."""
    spaces = [oneshot_space(tmp_path, name=f"s{i}", search={"trials": 3, "seed": i}) for i in range(2)]
    env = dict(os.environ, MFSEARCH_RUNS=str(tmp_path / "runs"))
    procs = [subprocess.Popen([sys.executable, "-m", "mfsearch.cli", "run", str(s), "--no-progress"], cwd=tmp_path,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for s in spaces]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for _, e in outs]
    errs = [e for _, e in outs]
    trained = [e for e in errs if "epoch 2/2" in e]
    assert len(trained) == 1, errs  # trained by exactly one of them
    assert len(supernet_files(tmp_path / "runs")) == 1
    other = errs[1 - errs.index(trained[0])]
    assert "training nothing" in other, other[-2000:]


# ----------------------------------------------------------------------------- bad input


def test_a_knob_the_supernet_cannot_share_is_one_line_naming_the_field(tmp_path, run_cli):
    data = yaml.safe_load(TINY_ONESHOT.read_text())
    data["space"]["activation"] = {"choice": ["relu", "dyrelu"]}
    p = tmp_path / "act.yaml"
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    r = run_cli("run", str(p), cwd=tmp_path, check=False)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "space.activation" in lines[0] and "standalone" in lines[0], r.stderr
    assert not (tmp_path / "runs" / "supernets").exists()  # refused before anything was trained


@pytest.mark.parametrize("how", ["space", "flag"])
def test_the_ray_engine_refuses_oneshot_with_one_line(tmp_path, run_cli, how):
    if how == "space":
        p = oneshot_space(tmp_path, search={"engine": "ray"})
        args = ["run", str(p)]
    else:
        p = oneshot_space(tmp_path)
        args = ["run", str(p), "--engine", "ray"]
    r = run_cli(*args, cwd=tmp_path, check=False)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "evaluation.strategy" in lines[0] and "optuna" in lines[0], r.stderr
    assert "Traceback" not in r.stderr


# ----------------------------------------------------------------------------- confirm


@pytest.mark.slow
def test_confirm_trains_the_best_front_and_the_paper_models_stand_alone_and_resumes(first_run, run_cli, load):
    """search.confirm: the 2 best front architectures and the paper model inside the budget, 2 seeds each, stored
    as standalone records; a second run finds them all stored and trains nothing."""
    import pandas as pd

    cwd, _, _ = first_run
    space = oneshot_space(cwd, name="tiny_confirm", budget={"macs": 30_000_000},
                          search={"trials": 6, "seed": 2, "reference_models": ["mobile_former_26m"],
                                  "confirm": {"top": 2, "seeds": 2}})
    r = run_cli("run", str(space), "--no-progress", cwd=cwd)
    assert "reference mobile_former_26m left out" in r.stderr, r.stderr[-2000:]  # not a sub-network: not scored
    assert "confirm: 6 stand-alone runs trained now, 0 already stored, 0 failed" in r.stdout, r.stdout[-2000:]
    study, refs = load(cwd, "tiny_confirm"), load(cwd, "tiny_confirm").user_attrs
    del refs
    search = [t for t in study.get_trials() if t.user_attrs.get("kind") == "search"
              and t.user_attrs.get("status") == "trained"]
    conf = [t for t in study.get_trials() if t.user_attrs.get("kind") == "confirm"]
    assert len(search) == 6 and len(conf) == 4
    best = sorted(search, key=lambda t: -t.user_attrs["accuracy"])
    of = {t.user_attrs["confirm_of"] for t in conf}
    assert len(of) == 2 and best[0].number in of  # the best scored architecture is always on the front
    for t in conf:
        ua = t.user_attrs
        assert ua["status"] == "confirmed" and ua["fidelity"] == "standalone" and "supernet" not in ua
        assert ua["seed"] in (0, 1) and ua["history"] and 0 <= ua["accuracy"] <= 100
        src = next(s for s in search if s.number == ua["confirm_of"])
        assert ua["arch_id"] == src.user_attrs["arch_id"] and t.params == src.params
    assert sorted((t.user_attrs["arch_id"], t.user_attrs["seed"]) for t in conf) == sorted(
        {(t.user_attrs["arch_id"], s) for t in conf for s in (0, 1)})
    import optuna

    from mfsearch.store import REFERENCE_SUFFIX

    ref_study = optuna.load_study(study_name=f"tiny_confirm{REFERENCE_SUFFIX}", storage=study._storage)
    paper = [t for t in ref_study.get_trials() if t.user_attrs.get("kind") == "confirm"]
    assert sorted(t.user_attrs["seed"] for t in paper) == [0, 1]
    assert all(t.user_attrs["name"] == "mobile_former_26m" and t.user_attrs["fidelity"] == "standalone" for t in paper)
    # the table and the front show the confirmed means beside the search score, and both hypervolumes
    table = pd.read_csv(cwd / "runs" / "tiny_confirm" / "results.csv")
    assert (table["kind"] == "confirm").sum() == 6 and set(table[table["kind"] == "confirm"]["fidelity"]) == {
        "standalone"}
    md = (cwd / "runs" / "tiny_confirm" / "pareto.md").read_text()
    assert "Confirmed stand-alone" in md and "+/-" in md and "mobile_former_26m" in md
    assert "hypervolume of the confirmed means" in r.stdout
    # run again: everything is stored, nothing is trained
    again = run_cli("run", str(space), "--no-progress", cwd=cwd)
    assert "confirm: 0 stand-alone runs trained now, 6 already stored" in again.stdout, again.stdout[-2000:]
    assert len([t for t in load(cwd, "tiny_confirm").get_trials() if t.user_attrs.get("kind") == "confirm"]) == 4


@pytest.mark.slow
def test_confirming_a_standalone_search_reuses_its_runs_as_the_first_seed(tmp_path, run_cli, load):
    """In a stand-alone search the confirmed trial and the paper model's reference run already are stand-alone
    runs at evaluation.seed: they become seed 0's confirm trials (same_run_as) and only seed 1 is trained."""
    import optuna

    from mfsearch.store import REFERENCE_SUFFIX

    space = oneshot_space(tmp_path, name="sa_confirm", budget={"macs": 30_000_000},
                          evaluation={"strategy": "standalone"},
                          search={"trials": 3, "seed": 1, "reference_models": ["mobile_former_26m"],
                                  "confirm": {"top": 1, "seeds": 2}})
    r = run_cli("run", str(space), "--no-progress", cwd=tmp_path)
    assert "confirm: 2 stand-alone runs trained now, 2 already stored, 0 failed" in r.stdout, r.stdout[-2000:]
    study = load(tmp_path, "sa_confirm")
    ref_study = optuna.load_study(study_name=f"sa_confirm{REFERENCE_SUFFIX}", storage=study._storage)
    for st in (study, ref_study):
        by_number = {t.number: t for t in st.get_trials()}
        conf = sorted((t for t in st.get_trials() if t.user_attrs.get("kind") == "confirm"),
                      key=lambda t: t.user_attrs["seed"])
        assert [t.user_attrs["seed"] for t in conf] == [0, 1]
        first, second = (t.user_attrs for t in conf)
        src = by_number[first["same_run_as"]]  # seed 0 is the search (or reference) run itself, copied
        assert src.user_attrs["kind"] in ("search", "reference") and src.user_attrs["seed"] == 0
        assert first["accuracy"] == src.user_attrs["accuracy"] and first["history"] == src.user_attrs["history"]
        assert conf[0].values == src.values and first["status"] == "confirmed"
        assert first["arch_id"] == second["arch_id"] == src.user_attrs["arch_id"]
        assert "same_run_as" not in second and second["history"]  # seed 1 was trained
        assert first["cpu_s"] == 0.0 < src.user_attrs["cpu_s"] and second["cpu_s"] > 0  # a reused run costs nothing
    md = (tmp_path / "runs" / "sa_confirm" / "pareto.md").read_text()
    assert "Cost: 6 evaluations" in md and "supernet" not in md.split("Cost:")[1].split("\n")[0], md
    again = run_cli("run", str(space), "--no-progress", cwd=tmp_path)
    assert "confirm: 0 stand-alone runs trained now, 4 already stored" in again.stdout, again.stdout[-2000:]


def test_a_confirm_block_without_training_data_is_one_line(tmp_path, run_cli):
    p = oneshot_space(tmp_path, objectives=[{"synflow": "maximize"}, {"macs": "minimize"}],
                      evaluation={"strategy": "standalone"}, search={"confirm": {"top": 2, "seeds": 2}})
    r = run_cli("run", str(p), cwd=tmp_path, check=False)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "search.confirm" in lines[0] and "training data" in lines[0], r.stderr
    bad = oneshot_space(tmp_path, name="b", search={"confirm": {"top": 0, "seeds": 2}})
    r = run_cli("run", str(bad), cwd=tmp_path, check=False)
    assert r.returncode == 2 and "search.confirm.top" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_supernet_checkpoint_of_another_evaluation_is_one_line_naming_the_file(first_run, run_cli, tmp_path):
    """The checkpoint trained for the tiny space, put where the supernet of other evaluation settings belongs:
    refused with one line naming the file, exit 2, before any trial is stored."""
    from mfsearch.evaluation.strategies import oneshot_settings
    from mfsearch.oneshot.train import supernet_key
    from mfsearch.space import load_space

    cwd, _, _ = first_run
    (ck,) = supernet_files(cwd / "runs")
    other = oneshot_space(tmp_path, name="other_eval", evaluation={"lr": 0.02})
    sp = load_space(other)
    target = tmp_path / "runs" / "supernets" / supernet_key(sp, oneshot_settings(sp)) / "supernet.pt"
    target.parent.mkdir(parents=True)
    target.write_bytes(ck.read_bytes())
    r = run_cli("run", str(other), "--no-progress", cwd=tmp_path, check=False)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    want = f"mfsearch: error: {target}: the checkpoint of another supernet"
    assert len(lines) == 1 and lines[0].startswith(want), r.stderr
    assert target.read_bytes() == ck.read_bytes()  # left as it was: the user decides


HOLDER = """
import fcntl, json, os, sys, time
folder = sys.argv[1]
fh = open(os.path.join(folder, ".lock"), "a+")
fcntl.flock(fh, fcntl.LOCK_EX)
json.dump({"pid": os.getpid(), "host": "h", "key": "k", "epochs": 2, "epochs_done": 1, "heartbeat": time.time()},
          open(os.path.join(folder, "trainer.json"), "w"))
print("locked", flush=True)
time.sleep(120)
"""


def _hold(folder: Path) -> subprocess.Popen:
    folder.mkdir(parents=True, exist_ok=True)
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked"
    return p


def test_waiting_for_a_supernet_says_for_whom_and_is_bounded(tmp_path):
    """A real process holds the supernet's lock: the waiter names it; a holder that stops beating ends the wait
    with one line; a holder that dies (kill -9) hands the training over to the waiter."""
    from mfsearch.errors import RunError
    from mfsearch.evaluation.strategies import oneshot_settings
    from mfsearch.oneshot.strategy import obtain
    from mfsearch.oneshot.train import supernet_key
    from mfsearch.space import load_space

    space = load_space(oneshot_space(tmp_path))
    folder = tmp_path / "cache" / supernet_key(space, oneshot_settings(space))
    holder = _hold(folder)
    said: list[str] = []
    try:
        with pytest.raises(RunError) as e:
            obtain(space, tmp_path / "cache", log=said.append, stale_s=3.0)
    finally:
        holder.kill()
        holder.wait()
    assert said and f"waiting for pid {holder.pid} on h (epoch 1/2 done" in said[0], said
    msg = str(e.value)
    assert "\n" not in msg and f"pid {holder.pid}" in msg and "no sign of life for over 3 s" in msg
    holder = _hold(folder)
    import threading

    threading.Timer(3.0, holder.kill).start()  # dies while the waiter waits: the kernel frees the lock
    run, _ = obtain(space, tmp_path / "cache", log=said.append, stale_s=60.0)
    holder.wait()
    assert run.epochs == 2 and run.trained_epochs == 2 and (folder / "supernet.pt").is_file()
    assert not (folder / "trainer.json").exists()


@pytest.mark.slow
def test_kill_9_during_a_oneshot_search_loses_no_scored_trial(first_run, run_cli):
    """Several trials a second into one journal: kill -9 mid-search (and a torn last record on top), run again:
    every trial scored before the kill is intact and the search ends at its target with distinct architectures."""
    import signal
    import time

    import optuna

    from mfsearch.store import default_storage_url, open_storage

    cwd, _, _ = first_run
    space = oneshot_space(cwd, name="tiny_kill", search={"trials": 40, "seed": 3})
    journal = cwd / "runs" / "tiny_kill" / "journal.log"
    url = default_storage_url(cwd / "runs" / "tiny_kill")

    def trained() -> list:
        if not journal.exists():
            return []
        study = optuna.load_study(study_name="tiny_kill", storage=open_storage(url))
        return [t for t in study.get_trials() if t.user_attrs.get("status") == "trained"]

    env = dict(os.environ, MFSEARCH_RUNS=str(cwd / "runs"))
    proc = subprocess.Popen([sys.executable, "-m", "mfsearch.cli", "run", str(space), "--no-progress"], cwd=cwd,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    while len(trained()) < 10:
        assert proc.poll() is None and time.monotonic() - t0 < 300, "the search ended or stalled before 10 trials"
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    before = {t.number: (t.values, t.user_attrs["arch_id"], t.user_attrs["accuracy"]) for t in trained()}
    assert len(before) >= 10
    with open(journal, "ab") as f:  # a record cut short, as a kill mid-write leaves it
        f.write(b'{"op_code": 5, "worker_id": "x", "trial_id": 3, "user_attr": {"half')
    r = run_cli("run", str(space), "--no-progress", cwd=cwd)
    assert "its last record was torn" in r.stderr, r.stderr[-2000:]
    after = {t.number: t for t in trained()}
    assert {n: (t.values, t.user_attrs["arch_id"], t.user_attrs["accuracy"]) for n, t in after.items()
            if n in before} == before
    assert len(after) == 40 == len({t.user_attrs["arch_id"] for t in after.values()})
