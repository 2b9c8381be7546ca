"""Faults with real processes: kill -9, diverging trials, several workers, PostgreSQL going away,
hostile space files, credentials."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from mfsearch.errors import InputError
from mfsearch.space import load_space
from mfsearch.store import default_storage_url, open_storage

from .pg import PASSWORD, PostgresServer


def _trials(url: str, name: str = "tiny") -> list:
    return optuna.load_study(study_name=name, storage=open_storage(url)).get_trials(deepcopy=True)


def _status(trials: list, status: str) -> list:
    return [t for t in trials if t.user_attrs.get("status") == status]


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    env = dict(os.environ, MFSEARCH_RUNS=str(cwd / "runs"))
    return subprocess.Popen([sys.executable, "-m", "mfsearch.cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(pred, timeout: float = 300.0) -> None:
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError("condition not reached")
        time.sleep(0.2)


def test_kill_9_mid_trial_then_resume(tmp_path, run_cli, tiny_space):
    p = tiny_space(tmp_path, search={"trials": 4, "sampler": "random", "reference_models": False})
    url = default_storage_url(tmp_path / "runs" / "tiny")
    proc = _start(["run", str(p), "--no-progress"], tmp_path)

    def second_trial_training() -> bool:
        if not (tmp_path / "runs" / "tiny" / "journal.log").exists():
            return False
        ts = _trials(url)
        return len(_status(ts, "trained")) >= 1 and len(_status(ts, "training")) == 1

    _wait_for(second_trial_training)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {t.number: (t.values, t.user_attrs["arch_id"]) for t in _status(_trials(url), "trained")}
    (victim,) = _status(_trials(url), "training")
    run_cli("run", str(p), "--no-progress", cwd=tmp_path)
    after = _trials(url)
    assert {t.number: (t.values, t.user_attrs["arch_id"]) for t in after if t.number in before} == before
    v = after[victim.number]
    assert v.state.name == "FAIL" and v.user_attrs["status"] == "interrupted"
    assert f"worker pid {proc.pid}" in v.user_attrs["failure_reason"]
    assert len({t.user_attrs["arch_id"] for t in _status(after, "trained")}) == len(_status(after, "trained")) == 4


def test_diverging_trials_are_failed_with_reason_and_bounded(tmp_path, load, run_cli, tiny_space):
    p = tiny_space(tmp_path, evaluation={"lr": 1e5, "warmup_epochs": 0.0, "weight_decay": 0.0},
                   search={"trials": 2, "sampler": "random", "reference_models": False, "max_failures": 3})
    r = run_cli("run", str(p), "--no-progress", cwd=tmp_path, check=False)
    assert r.returncode == 1 and "search.max_failures: 3 trials in a row failed" in r.stderr  # a run failure
    assert "Traceback" not in r.stderr
    failed = _status(load(tmp_path).trials, "failed")
    assert len(failed) == 3  # the search went on after each failure, and stopped at the bound
    for t in failed:
        assert t.state.name == "FAIL" and "loss became nan" in t.user_attrs["failure_reason"]


def test_two_workers_share_a_journal_store(tmp_path, load, run_cli, tiny_space):
    """Two workers from the space file (``search.workers``; the PostgreSQL test uses ``--workers``)."""
    p = tiny_space(tmp_path, search={"trials": 6, "sampler": "random", "reference_models": False, "workers": 2})
    r = run_cli("run", str(p), "--no-progress", cwd=tmp_path)
    assert "study tiny: 6 architectures evaluated" in r.stdout
    ts = load(tmp_path).trials
    trained = _status(ts, "trained")
    assert len(trained) == 6 == len({t.user_attrs["arch_id"] for t in trained})
    assert len({t.number for t in ts}) == len(ts)
    assert len({t.user_attrs["worker"]["pid"] for t in trained}) == 2


@pytest.fixture(scope="module")
def postgres():
    server = PostgresServer()
    yield server
    server.close()


@pytest.mark.slow
def test_postgres_two_workers_and_no_credentials_leak(tmp_path, postgres, run_cli, tiny_space):
    p = tiny_space(tmp_path, name="pgtiny", search={"trials": 6, "sampler": "tpe", "reference_models": False})
    r = run_cli("run", str(p), "--no-progress", "--workers", "2", "--storage", postgres.url, cwd=tmp_path)
    trained = _status(_trials(postgres.url, "pgtiny"), "trained")
    assert len(trained) == 6 == len({t.user_attrs["arch_id"] for t in trained})
    assert all(t.state.name == "COMPLETE" and t.user_attrs["history"] for t in trained)
    run_dir = tmp_path / "runs" / "pgtiny"
    texts = [r.stdout, r.stderr] + [f.read_text(errors="ignore") for f in run_dir.iterdir() if f.suffix in
                                    (".json", ".csv", ".md")]
    assert all(PASSWORD not in t for t in texts)
    assert "mf:***@127.0.0.1" in (run_dir / "study.json").read_text()
    # results / pareto need the password again: asked for, never stored
    r = run_cli("pareto", str(run_dir), cwd=tmp_path, check=False)
    assert r.returncode == 2 and "pass --storage URL" in r.stderr
    r = run_cli("pareto", str(run_dir), "--storage", postgres.url, cwd=tmp_path)
    assert PASSWORD not in r.stdout + r.stderr


@pytest.mark.slow
def test_postgres_going_away_mid_study(tmp_path, postgres, run_cli, tiny_space):
    p = tiny_space(tmp_path, name="pgdown", search={"trials": 5, "sampler": "random", "reference_models": False})
    proc = _start(["run", str(p), "--no-progress", "--storage", postgres.url], tmp_path)

    def trained_at_least(n: int) -> bool:
        try:
            return len(_status(_trials(postgres.url, "pgdown"), "trained")) >= n
        except Exception:  # noqa: BLE001 - the study may not exist yet
            return False

    _wait_for(lambda: trained_at_least(2))
    before = {t.number: (t.values, t.user_attrs["arch_id"]) for t in _status(_trials(postgres.url, "pgdown"),
                                                                             "trained")}
    postgres.stop()
    time.sleep(4)
    postgres.start()
    out, err = proc.communicate(timeout=600)
    print(f"search exit code after the outage: {proc.returncode}; stderr tail: {err.strip()[-300:]}")
    # either it rode out the outage (retries), or it stopped with one clear line: never a traceback
    assert proc.returncode in (0, 1), err[-2000:]
    assert "Traceback" not in err and PASSWORD not in out + err
    run_cli("run", str(p), "--no-progress", "--storage", postgres.url, cwd=tmp_path)
    after = _trials(postgres.url, "pgdown")
    assert {t.number: (t.values, t.user_attrs["arch_id"]) for t in after if t.number in before} == before
    trained = _status(after, "trained")
    assert len(trained) == 5 == len({t.user_attrs["arch_id"] for t in trained})
    assert all(t.user_attrs.get("history") and t.values for t in trained)


def test_unreachable_database_is_one_line(tmp_path, run_cli, tiny_space):
    p = tiny_space(tmp_path, storage=f"postgresql://mf:{PASSWORD}@127.0.0.1:9/none")
    r = run_cli("run", str(p), "--no-progress", cwd=tmp_path, check=False)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert PASSWORD not in r.stderr and "Traceback" not in r.stderr


HOSTILE = [
    "name: t\nspace: {num_tokens: !!python/object/apply:os.system [touch pwned]}\n",
    "name: t\nevaluation: !!python/object/new:subprocess.Popen [[touch, pwned]]\n",
    "name: t\nsearch: !!python/module:os\n",
    "!!binary aGVsbG8=\n",
    "name: t\nspace: !!set {a, b}\n",
    "name: 12\n",
    "name: t\nspace: []\n",
    "name: t\nspace:\n  stages: {a: 1}\n",
    "name: t\nspace:\n  stages: [[1, 2]]\n",
    "name: t\nspace:\n  stages:\n" + "".join("    - {out: 8, depth: 1}\n" for _ in range(13)),
    "name: t\nspace:\n  num_tokens: {choice: [[1, 2]]}\n",
    "name: t\nspace:\n  num_tokens: {choice: " + str(list(range(2000))) + "}\n",
    "name: t\nspace:\n  num_tokens: {int: [1, 99999999999999999999]}\n",
    "name: t\nspace:\n  stem: {int: [1, 8], log: true, step: 2}\n",
    "name: t\nspace:\n  stem: {int: [8, 16], when: {nonsense: 1}}\n",
    "name: t\nspace:\n  head: .inf\n",
    "name: t\nspace:\n  width_mult: .nan\n",
    "name: t\nevaluation:\n  train_size: 1e400\n",
    "name: t\nevaluation:\n  image_size: 100000\n",
    "name: t\nevaluation:\n  batch_size: -1\n",
    "name: t\nevaluation:\n  device: 'rm -rf /'\n",
    "name: t\nevaluation:\n  data_root: [1]\n",
    "name: t\nevaluation: {augment: 'yes'}\n",
    "name: t\nobjectives: accuracy\n",
    "name: t\nobjectives: [{accuracy: maximize, macs: minimize}]\n",
    "name: t\nobjectives: [{accuracy: maximize}, {accuracy: maximize}]\n",
    "name: t\nbudget: [1]\n",
    "name: t\nbudget: {macs: 99999999999999999999}\n",
    "name: t\nsearch: {population_size: 0}\n",
    "name: t\nsearch: {reference_models: yes please}\n",
    "name: ../../etc\n",
    "name: t\nstorage: ''\n",
    "name: t\nstorage: 'http://example.com'\n",
    "\x00\x01\x02",
    "name: t\n" + "x" * 2_000_000 + "\n",
    "[" * 5000 + "]" * 5000 + "\n",
]


@pytest.mark.parametrize("text", HOSTILE, ids=[f"hostile{i}" for i in range(len(HOSTILE))])
def test_hostile_space_files(tmp_path, text):
    p = tmp_path / "space.yaml"
    p.write_bytes(text.encode("utf-8", errors="surrogateescape"))
    with pytest.raises(InputError) as e:
        load_space(p)
    assert str(e.value).startswith(str(p))
    assert len(str(e.value).splitlines()) == 1
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


def test_at_least_fifty_bad_space_files_are_tested():
    from .test_space import BAD

    assert len(BAD) + len(HOSTILE) >= 50


def test_tiny_space_is_valid_yaml():
    assert yaml.safe_load((Path(__file__).parent.parent / "spaces" / "tiny.yaml").read_text())["name"] == "tiny"


@pytest.mark.slow
def test_workers_share_one_progress_bar(tmp_path, run_cli, tiny_space):
    """Several workers: their trial lines reach the parent, which prints them under one progress bar."""
    p = tiny_space(tmp_path, search={"trials": 3, "sampler": "random", "reference_models": False, "workers": 2})
    r = run_cli("run", str(p), cwd=tmp_path)
    assert "study tiny: 3 architectures evaluated" in r.stdout
    assert sum(line.startswith("#") and " MACs " in line for line in r.stdout.splitlines()) >= 3  # tqdm.write
    assert "3/3" in r.stderr and "trial" in r.stderr  # the bar reached its total


def _spawned_workers(parent: int) -> list[int]:
    """Pids of the multiprocessing workers (not the resource tracker) whose parent is ``parent``."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            cmd = (d / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and b"multiprocessing.spawn" in cmd:
            out.append(int(d.name))
    return out


def _alive(pids: list[int]) -> list[int]:
    live = []
    for p in pids:
        try:
            state = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            live.append(p)
    return live


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killing_a_proxy_check_stops_its_workers(tmp_path, tiny_yaml, sig):
    """kill PID (SIGTERM) stops the workers as Ctrl-C does, exit 143; kill -9 leaves the workers to notice."""
    env = dict(os.environ, MFSEARCH_RUNS=str(tmp_path / "runs"))
    p = subprocess.Popen([sys.executable, "-m", "mfsearch.cli", "proxy-check", str(tiny_yaml), "--models",
                          "26m,52m,96m", "--seeds", "2", "--workers", "2", "--set", "evaluation.epochs=40"],
                         cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while len(workers) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
            workers = _spawned_workers(p.pid)
        assert len(workers) == 2, "the two workers never started"
        time.sleep(3)  # into their first runs
        p.send_signal(sig)
        rc = p.wait(timeout=60)
        _, err = p.communicate(timeout=10)
        deadline = time.monotonic() + 20
        while _alive(workers) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not _alive(workers), f"workers {_alive(workers)} outlived their parent"
        if sig == signal.SIGTERM:
            assert rc == 143 and "terminated; stored results are kept" in err and "Traceback" not in err, err
    finally:
        if p.poll() is None:
            p.kill()
        for w in _alive(workers):  # a failing run leaves nothing behind
            os.kill(w, signal.SIGKILL)
