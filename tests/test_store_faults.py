"""The results store under real faults: torn records, a full disk, a stale lock, dead workers on other
hosts and in other pid namespaces, a changed space under one study name, Ctrl-C, unwritable folders.

Every case runs the real CLI in real processes on real files (a real tmpfs for the full disk,
real UTS / pid namespaces for "another host").
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from mfsearch.store import default_storage_url, open_storage

pytestmark = pytest.mark.faults


def _journal(cwd: Path, name: str = "tiny") -> Path:
    return cwd / "runs" / name / "journal.log"


def _study(cwd: Path, name: str = "tiny") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(default_storage_url(cwd / "runs" / name)))


def _trained(study: optuna.Study) -> dict[int, tuple]:
    return {t.number: (tuple(t.values), t.user_attrs["arch_id"]) for t in study.get_trials()
            if t.user_attrs.get("status") == "trained" and t.state.name == "COMPLETE"}


def _env(cwd: Path, **extra: str) -> dict[str, str]:
    return dict(os.environ, MFSEARCH_RUNS=str(cwd / "runs"), **extra)


def _no_traceback(r: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert "Traceback" not in r.stdout, r.stdout[-3000:]


# ----------------------------------------------------------------------------- torn records


@pytest.mark.slow
def test_torn_last_record_is_set_aside_and_the_run_continues(tmp_path, run_cli, tiny_space):
    p = tiny_space(tmp_path, search={"trials": 2, "sampler": "random", "reference_models": False})
    run_cli("run", str(p), "--no-progress", cwd=tmp_path)
    journal = _journal(tmp_path)
    data = journal.read_bytes()
    journal.write_bytes(data[:-40])  # what a crash or a full disk leaves mid-append
    before = _trained(_study(tmp_path))  # everything finished before the torn record (read without repairing)
    assert len(before) >= 1 and journal.read_bytes() == data[:-40]
    r = run_cli("run", str(p), "--no-progress", "--trials", "3", cwd=tmp_path)
    _no_traceback(r)
    assert "torn" in r.stderr and "set aside" in r.stderr
    sides = list(journal.parent.glob("journal.log.torn-*"))
    torn = sides[0].read_bytes() if len(sides) == 1 else b""
    assert torn and b"\n" not in torn and data[:-40].endswith(b"\n" + torn)
    after = _trained(_study(tmp_path))
    assert {k: v for k, v in after.items() if k in before} == before  # nothing finished was lost
    assert len({a for _, a in after.values()}) == 3
    for cmd in ("results", "pareto"):
        _no_traceback(run_cli(cmd, "tiny", cwd=tmp_path))


def test_a_record_welded_to_a_torn_one_is_still_read(tmp_path, run_cli, tiny_space):
    """Stores damaged by older versions (a record appended right after a torn one) stay readable."""
    p = tiny_space(tmp_path, search={"trials": 2, "sampler": "random", "reference_models": False})
    run_cli("run", str(p), "--no-progress", cwd=tmp_path)
    journal = _journal(tmp_path)
    lines = journal.read_bytes().splitlines(keepends=True)
    before = _trained(_study(tmp_path))
    # the last record torn, then the next one appended without a line break in between
    journal.write_bytes(b"".join(lines[:-2]) + lines[-2][:-25] + lines[-1])
    r = run_cli("results", "tiny", cwd=tmp_path)
    _no_traceback(r)
    after = _trained(_study(tmp_path))
    assert set(after) == set(before)


def _can_mount() -> bool:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    probe = Path("/tmp") / f"mfsearch-mount-probe-{os.getpid()}"
    probe.mkdir(exist_ok=True)
    mount = ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)]
    ok = subprocess.run(mount, capture_output=True).returncode == 0
    if ok:
        subprocess.run(["umount", str(probe)], check=False)
    probe.rmdir()
    return ok


@pytest.mark.slow
@pytest.mark.skipif(not _can_mount(), reason="needs root and tmpfs mounts (a real full disk)")
def test_full_disk_mid_run_then_space_freed(tmp_path, tiny_space):
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], check=True)
    try:
        p = tiny_space(tmp_path, search={"trials": 12, "sampler": "random", "reference_models": False})
        env = dict(os.environ, MFSEARCH_RUNS=str(disk / "runs"))
        cmd = [sys.executable, "-m", "mfsearch", "run", str(p), "--no-progress"]
        r = subprocess.run([*cmd, "--trials", "2"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        journal = disk / "runs" / "tiny" / "journal.log"
        free = shutil.disk_usage(disk).free
        filler = disk / "filler"
        filler.write_bytes(b"\0" * max(0, free - 12_000))  # about two more trials' records fit
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
        _no_traceback(r)
        assert r.returncode == 1, (r.returncode, r.stderr[-2000:])
        err = [ln for ln in r.stderr.splitlines() if ln.startswith("mfsearch: error:")]
        assert len(err) == 1 and "No space left on device" in err[0] and str(disk) in err[0], r.stderr[-2000:]
        url = default_storage_url(disk / "runs" / "tiny")
        mid = _trained(optuna.load_study(study_name="tiny", storage=open_storage(url)))
        assert len(mid) >= 2
        filler.unlink()  # space freed
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
        _no_traceback(r)
        assert r.returncode == 0, r.stderr[-2000:]
        final = _trained(optuna.load_study(study_name="tiny", storage=open_storage(url)))
        assert {k: v for k, v in final.items() if k in mid} == mid
        assert len({a for _, a in final.values()}) == 12
        assert journal.is_file()
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


# ----------------------------------------------------------------------------- one study, one definition


@pytest.mark.slow
def test_same_name_other_space_is_refused_naming_the_field(tmp_path, run_cli, tiny_space):
    base = {"search": {"trials": 2, "sampler": "random", "reference_models": False}}
    p = tiny_space(tmp_path, **base)
    run_cli("run", str(p), "--no-progress", cwd=tmp_path)
    n_trials = len(_study(tmp_path).trials)

    (tmp_path / "b").mkdir()
    other_budget = tiny_space(tmp_path / "b", budget={"macs": 12_200_000}, **base)
    r = run_cli("run", str(other_budget), "--no-progress", cwd=tmp_path, check=False)
    assert r.returncode == 2 and "budget.macs" in r.stderr and "8500000" in r.stderr, r.stderr
    assert "another name: (the study's name)" in r.stderr  # the study is named by name:, not by the file
    _no_traceback(r)
    r = run_cli("run", str(other_budget), "--no-progress", "--allow-change", cwd=tmp_path, check=False)
    assert r.returncode == 2 and "budget.macs" in r.stderr  # never acceptable

    (tmp_path / "c").mkdir()
    data = __import__("yaml").safe_load(p.read_text())
    data["space"]["token_dim"] = {"choice": [128, 192]}  # a changed choice list
    (tmp_path / "c" / "tiny.yaml").write_text(__import__("yaml").safe_dump(data))
    r = run_cli("run", str(tmp_path / "c" / "tiny.yaml"), "--no-progress", "--allow-change", cwd=tmp_path, check=False)
    assert r.returncode == 2 and "space.token_dim" in r.stderr and "choice" in r.stderr, r.stderr
    _no_traceback(r)
    study = _study(tmp_path)
    assert len(study.trials) == n_trials
    assert not [t for t in study.trials if t.state.name == "RUNNING"]

    (tmp_path / "d").mkdir()
    data = __import__("yaml").safe_load(p.read_text())
    data["space"]["stages"][1]["depth"] = {"int": [1, 3]}  # a wider range: acceptable with the flag
    (tmp_path / "d" / "tiny.yaml").write_text(__import__("yaml").safe_dump(data))
    r = run_cli("run", str(tmp_path / "d" / "tiny.yaml"), "--no-progress", "--trials", "3", cwd=tmp_path, check=False)
    assert r.returncode == 2 and "space.stages[1].depth" in r.stderr and "--allow-change" in r.stderr, r.stderr
    r = run_cli("run", str(tmp_path / "d" / "tiny.yaml"), "--no-progress", "--trials", "3", "--allow-change",
                cwd=tmp_path)
    study = _study(tmp_path)
    changes = study.user_attrs["definition_changes"]
    assert len(changes) == 1 and changes[0]["first_field"] == "space.stages[1].depth"
    assert study.user_attrs["definition"]["space"]["stages"][1]["depth"]["int"] == [1, 3]
    # the original file is now the one that differs
    r = run_cli("run", str(p), "--no-progress", cwd=tmp_path, check=False)
    assert r.returncode == 2 and "space.stages[1].depth" in r.stderr


# ----------------------------------------------------------------------------- locks and dead workers


@pytest.mark.slow
def test_stale_lock_from_a_killed_append_is_broken_within_the_grace(tmp_path, run_cli, tiny_space):
    """kill -9 mid-append leaves Optuna's lock link; the rerun (run from another folder) must not hang."""
    p = tiny_space(tmp_path, search={"trials": 2, "sampler": "random", "reference_models": False})
    run_cli("run", str(p), "--no-progress", cwd=tmp_path)
    journal = _journal(tmp_path)
    lock = journal.with_name("journal.log.lock")
    os.symlink("runs/tiny/journal.log", lock)  # left by a kill mid-append (older versions: a relative target)
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "mfsearch", "run", str(p), "--no-progress", "--trials", "3"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=300,  # a relative runs dir, as by default
                       env=dict(os.environ, MFSEARCH_RUNS="runs", MFSEARCH_LOCK_GRACE_S="4"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert time.monotonic() - t0 < 120
    assert not lock.exists()
    assert len({a for _, a in _trained(_study(tmp_path)).values()}) == 3


def test_default_journal_lock_link_points_at_an_absolute_path(tmp_path, monkeypatch, tiny_space):
    """A relative link target dangles, so Optuna's grace period can never stat (and break) it."""
    p = tiny_space(tmp_path, search={"trials": 1, "sampler": "random", "reference_models": False})
    r = subprocess.run([sys.executable, "-m", "mfsearch", "run", str(p), "--no-progress"], capture_output=True,
                       text=True, cwd=tmp_path, timeout=300, env=dict(os.environ, MFSEARCH_RUNS="runs"))
    assert r.returncode == 0, r.stderr[-2000:]
    info = json.loads((tmp_path / "runs" / "tiny" / "study.json").read_text())
    assert info["storage"] == "journal:journal.log"  # relative to the run directory: the folder can move
    from mfsearch.store.journal import JournalBackend

    monkeypatch.chdir(tmp_path)
    backend = JournalBackend(Path("runs/tiny/journal.log"))
    assert Path(backend._lock._lock_target_file).is_absolute()
    assert default_storage_url(Path("runs/tiny")) == f"journal:{tmp_path / 'runs' / 'tiny' / 'journal.log'}"


def _can_unshare() -> bool:
    return shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "-u", "-p", "-f", "--mount-proc", "true"], capture_output=True).returncode == 0


def _claimed(cwd: Path) -> bool:
    if not _journal(cwd).exists():
        return False
    try:
        return any(t.user_attrs.get("status") == "training" for t in _study(cwd).trials)
    except Exception:  # noqa: BLE001 - the study may not exist yet
        return False


@pytest.mark.slow
@pytest.mark.skipif(not _can_unshare(), reason="needs UTS / pid namespaces (unshare) for a second 'host'")
@pytest.mark.parametrize("where", ["other-host", "pid-namespace"])
def test_dead_worker_elsewhere_is_noticed_and_its_trial_redone(tmp_path, where, tiny_space):
    p = tiny_space(tmp_path, evaluation={"epochs": 3, "train_size": 4000},
                   search={"trials": 2, "sampler": "random", "reference_models": False})
    env = _env(tmp_path, MFSEARCH_HEARTBEAT_S="1", MFSEARCH_STALE_S="6")
    inner = f"{sys.executable} -m mfsearch run {p} --no-progress"
    if where == "other-host":  # another hostname, as a worker in another container
        cmd = ["unshare", "-u", "sh", "-c", f"hostname mfsearch-other-host && exec {inner}"]
    else:  # the same hostname, but pids of another namespace (the victim's pid exists here too)
        cmd = ["unshare", "-p", "-f", "--mount-proc", "sh", "-c", f"exec {inner}"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    t0 = time.monotonic()
    while not _claimed(tmp_path):
        assert time.monotonic() - t0 < 300, "the first worker never claimed a trial"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    (victim,) = [t for t in _study(tmp_path).trials if t.user_attrs.get("status") == "training"]
    if where == "other-host":
        assert victim.user_attrs["worker"]["host"] == "mfsearch-other-host"
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "mfsearch", "run", str(p), "--no-progress"], capture_output=True,
                       text=True, cwd=tmp_path, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert time.monotonic() - t0 < 300
    study = _study(tmp_path)
    v = study.trials[victim.number]
    assert v.state.name == "FAIL" and v.user_attrs["status"] == "interrupted"
    assert "stopped mid-trial" in v.user_attrs["failure_reason"] or "no sign of life" in v.user_attrs["failure_reason"]
    assert len({a for _, a in _trained(study).values()}) == 2


def test_a_trial_of_a_live_worker_is_not_taken_for_dead(tmp_path, tiny_space):
    """Another live process on another 'host' keeps beating: the second run leaves its trial alone."""
    from mfsearch.store.liveness import stale_reason

    # long enough that the first run is still training when the second has looked (checked below)
    p = tiny_space(tmp_path, evaluation={"epochs": 30, "train_size": 6000},
                   search={"trials": 1, "sampler": "random", "reference_models": False})
    env = _env(tmp_path, MFSEARCH_HEARTBEAT_S="1", MFSEARCH_STALE_S="5")
    proc = subprocess.Popen([sys.executable, "-m", "mfsearch", "run", str(p), "--no-progress"], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        t0 = time.monotonic()
        while not _claimed(tmp_path):
            assert time.monotonic() - t0 < 300
            time.sleep(0.2)
        time.sleep(7)  # longer than the stale period: only the heartbeats keep it alive
        (t,) = [t for t in _study(tmp_path).trials if t.user_attrs.get("status") == "training"]
        assert t.user_attrs["heartbeat"] > t.user_attrs["started"]
        w = dict(t.user_attrs["worker"], host="elsewhere")  # judged as if from another machine: by heartbeat
        frozen = optuna.trial.create_trial(state=optuna.trial.TrialState.RUNNING,
                                           user_attrs={**t.user_attrs, "worker": w})
        assert stale_reason(frozen, stale_s=5) is None
        r = subprocess.run([sys.executable, "-m", "mfsearch", "run", str(p), "--no-progress"], capture_output=True,
                           text=True, cwd=tmp_path, env=env, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        assert proc.poll() is None, "the first run ended before the second looked: give it more epochs"
        assert "being trained by other workers" in r.stderr
    finally:
        proc.wait(timeout=600)
    assert proc.returncode == 0
    trained = _trained(_study(tmp_path))
    assert len(trained) == 1


def test_a_claim_lock_held_elsewhere_is_waited_for_aloud_and_then_given_up(tmp_path, monkeypatch):
    """Another live process holds the claim lock: the waiter names it, then gives up with one line."""
    from mfsearch.store import StudyRef, claim

    run_dir = tmp_path / "runs" / "tiny"
    run_dir.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\nf = open(sys.argv[1], 'a+')\nfcntl.flock(f, fcntl.LOCK_EX)\n"
        "f.write(f'pid {os.getpid()}\\n'); f.flush(); print('held', flush=True); time.sleep(120)\n"),
        str(run_dir / ".claim.lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setattr(claim, "SAY_AFTER_S", 0.5)
        said: list[str] = []
        ref = StudyRef("tiny", f"journal:///{run_dir}/journal.log", run_dir)
        t0 = time.monotonic()
        with pytest.raises(claim.ClaimTimeout) as e:
            with claim.claim_lock(ref, None, timeout=2.0, log=said.append):
                pass
        assert time.monotonic() - t0 < 10
        assert len(said) == 1 and f"pid {holder.pid}" in said[0] and "giving up after 2 s" in said[0], said
        assert str(run_dir / ".claim.lock") in str(e.value) and "\n" not in str(e.value)
    finally:
        holder.kill()
        holder.wait()
    with claim.claim_lock(ref, None, timeout=2.0, log=said.append):  # the holder's death released it
        pass


# ----------------------------------------------------------------------------- several workers: one line, Ctrl-C


@pytest.mark.slow
def test_two_workers_deterministic_errors_give_one_line(tmp_path, run_cli, tiny_space):
    p = tiny_space(tmp_path, budget={"macs": 1000}, search={"trials": 2, "workers": 2, "max_resample": 4,
                                                            "reference_models": False})
    r = run_cli("run", str(p), "--no-progress", cwd=tmp_path, check=False)
    _no_traceback(r)
    assert r.returncode == 2, r.stderr[-2000:]
    errs = [ln for ln in r.stderr.splitlines() if "error" in ln]
    assert len(errs) == 1 and "budget" in errs[0], r.stderr[-2000:]
    assert "run the same command again" not in r.stderr

    (tmp_path / "b").mkdir()
    q = tiny_space(tmp_path / "b", name="nan", evaluation={"lr": 1e5},
                   search={"trials": 4, "workers": 2, "max_failures": 2, "sampler": "random",
                           "reference_models": False})
    r = run_cli("run", str(q), "--no-progress", cwd=tmp_path, check=False)
    _no_traceback(r)
    assert r.returncode == 1, r.stderr[-2000:]
    errs = [ln for ln in r.stderr.splitlines() if ln.startswith("mfsearch: error:")]
    assert len(errs) == 1 and "max_failures" in errs[0], r.stderr[-2000:]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("delay", [0.3, 2.5, 6.0])
def test_ctrl_c_with_two_workers_exits_130_without_tracebacks(tmp_path, delay, tiny_space):
    p = tiny_space(tmp_path, evaluation={"epochs": 2, "train_size": 3000},
                   search={"trials": 6, "workers": 2, "sampler": "random", "reference_models": False})
    # as a terminal's foreground job: Ctrl-C at its default action (a process that inherits it ignored, as from a
    # pytest-xdist worker or a background shell job, rightly keeps ignoring it)
    proc = subprocess.Popen([sys.executable, "-m", "mfsearch", "run", str(p), "--no-progress"], cwd=tmp_path,
                            env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=_default_sigint)
    time.sleep(delay)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (proc.returncode, err[-3000:])
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    if _journal(tmp_path).exists():
        running = [t for t in _study(tmp_path).trials if t.state.name == "RUNNING"]
        assert not running, [t.user_attrs for t in running]


_IN_PROCESS_RUN = """
import os, signal, sys, threading
from pathlib import Path
from mfsearch.search.workers import run_workers
from mfsearch.space import load_space
from mfsearch.store import StudyRef, default_storage_url
space = load_space(sys.argv[1])
run_dir = Path(sys.argv[2]); run_dir.mkdir(parents=True)
before = signal.getsignal(signal.SIGINT)
threading.Timer(2.5, os.kill, (os.getpid(), signal.SIGINT)).start()
try:
    run_workers(space, StudyRef(space.name, default_storage_url(run_dir), run_dir), 2, 10)
except KeyboardInterrupt:
    print("interrupted", flush=True)
print("handler restored:", signal.getsignal(signal.SIGINT) is before, flush=True)
"""


def test_an_in_process_search_gives_ctrl_c_back_to_its_caller(tmp_path, tiny_space):
    """run_workers called from Python (a notebook): after a Ctrl-C has stopped the workers, Ctrl-C works again in
    the caller (the handler it had, not ignored as during the clean-up)."""
    p = tiny_space(tmp_path, evaluation={"epochs": 2, "train_size": 3000},
                   search={"trials": 6, "workers": 2, "sampler": "random", "reference_models": False})
    proc = subprocess.run([sys.executable, "-c", _IN_PROCESS_RUN, str(p), str(tmp_path / "runs" / "t")], cwd=tmp_path,
                          env=_env(tmp_path), capture_output=True, text=True, timeout=120, preexec_fn=_default_sigint)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines()[-2:] == ["interrupted", "handler restored: True"], (proc.stdout,
                                                                                       proc.stderr[-2000:])


# a library whose import catches an interrupt and goes on half-initialised (what happened inside a worker's
# ``import torch`` on Ctrl-C: numpy without ``flexible``, then an AttributeError instead of exit 130)
_SWALLOWING_LIBRARY = """
import sys, time
print("importing", flush=True)
try:
    time.sleep(3)
except BaseException:
    sys.stdout.write("swallowed\\n")
ready = True
"""


def test_ctrl_c_during_a_library_import_is_held_until_the_import_ends(tmp_path):
    """Ctrl-C while the command line starts (its parser's modules import PyTorch): held, then exit 130."""
    (tmp_path / "swallower.py").write_text(_SWALLOWING_LIBRARY)
    code = ("import mfsearch.cli as c\nparser = c.build_parser\n\n"
            "def build_parser(*a):\n    import swallower\n    print('ready =', swallower.ready, flush=True)\n"
            "    return parser(*a)\n\nc.build_parser = build_parser\nraise SystemExit(c.main(['models']))\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, env=_env(tmp_path, PYTHONPATH=os.pathsep.join(
                                [str(tmp_path), os.environ.get("PYTHONPATH", "")])),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "importing"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert "swallowed" not in out, out
    assert "ready = True" in out, (out, err)
    assert proc.returncode == 130 and err.strip() == "mfsearch: interrupted; stored results are kept", (
        proc.returncode, err)


def test_a_workers_ctrl_c_lost_in_a_finaliser_prints_nothing_and_other_errors_still_show(tmp_path):
    """Where Python cannot raise (a finaliser, a weakref callback), a worker drops the interrupt quietly: the
    parent repeats the signal. Seen at Ctrl-C mid-run as 'Exception ignored in ... KeyboardInterrupt'."""
    code = ("import sys\nfrom mfsearch.search import workers\nsys.unraisablehook = workers._quiet_lost_interrupt\n"
            "class A:\n    def __del__(self):\n        raise KeyboardInterrupt\n"
            "class B:\n    def __del__(self):\n        raise ValueError('a real finaliser error')\n"
            "a = A(); del a\nb = B(); del b\nprint('went on')\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "went on", (r.stdout, r.stderr)
    assert "KeyboardInterrupt" not in r.stderr, r.stderr
    assert "a real finaliser error" in r.stderr, r.stderr


# ----------------------------------------------------------------------------- folders, read-only commands


@pytest.fixture
def locked(tmp_path):
    """A folder nothing can be written into: read-only for a user, a read-only mount for root."""
    d = tmp_path / "locked"
    d.mkdir()
    if os.geteuid() == 0:  # permissions do not stop root: a read-only file system does
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(d)], check=True)
        yield d
        subprocess.run(["umount", "-l", str(d)], check=False)
    else:
        d.chmod(0o555)
        yield d
        d.chmod(0o755)


@pytest.mark.skipif(os.geteuid() == 0 and not _can_mount(), reason="root without mounts cannot be denied a write")
def test_unwritable_run_dir_and_out_dir_get_one_line(tmp_path, locked, run_cli, tiny_space):
    p = tiny_space(tmp_path, search={"trials": 1, "sampler": "random", "reference_models": False})
    r = subprocess.run([sys.executable, "-m", "mfsearch", "run", str(p), "--no-progress"], capture_output=True,
                       text=True, cwd=tmp_path, env=dict(os.environ, MFSEARCH_RUNS=str(locked / "runs")), timeout=300)
    _no_traceback(r)
    assert r.returncode == 2 and str(locked / "runs") in r.stderr, r.stderr[-2000:]
    assert len(r.stderr.strip().splitlines()) == 1

    run_cli("run", str(p), "--no-progress", cwd=tmp_path)
    for cmd in (["results", "tiny", "--out", str(locked / "out")], ["pareto", "tiny", "--out", str(locked)]):
        r = run_cli(*cmd, cwd=tmp_path, check=False)
        _no_traceback(r)
        assert r.returncode == 2 and str(locked) in r.stderr, r.stderr[-2000:]


def test_read_only_commands_never_create_a_store(tmp_path, run_cli, tiny_space):
    (tmp_path / "runs" / "ghost").mkdir(parents=True)
    (tmp_path / "runs" / "ghost" / "study.json").write_text(json.dumps({"name": "ghost",
                                                                         "storage": "journal:journal.log"}))
    for cmd in ("results", "pareto"):
        r = run_cli(cmd, "ghost", cwd=tmp_path, check=False)
        _no_traceback(r)
        assert r.returncode == 2 and "run the study first" in r.stderr, r.stderr
    assert not (tmp_path / "runs" / "ghost" / "journal.log").exists()
    p = tiny_space(tmp_path, name="never")
    r = run_cli("results", str(p), cwd=tmp_path, check=False)
    assert r.returncode == 2
    assert not (tmp_path / "runs" / "never").exists()


def test_results_and_pareto_from_another_folder_and_a_moved_run_dir(tmp_path, tiny_space):
    p = tiny_space(tmp_path, search={"trials": 2, "sampler": "random", "reference_models": False})
    r = subprocess.run([sys.executable, "-m", "mfsearch", "run", str(p), "--no-progress"], capture_output=True,
                       text=True, cwd=tmp_path, env=dict(os.environ, MFSEARCH_RUNS="runs"), timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    moved = tmp_path / "archive" / "tiny"
    moved.parent.mkdir()
    for run_dir in (tmp_path / "runs" / "tiny", moved):
        if run_dir == moved:
            shutil.move(tmp_path / "runs" / "tiny", moved)
        for cmd in ("results", "pareto"):
            r = subprocess.run([sys.executable, "-m", "mfsearch", cmd, str(run_dir)], capture_output=True, text=True,
                               cwd=elsewhere, env=dict(os.environ, MFSEARCH_RUNS="runs"), timeout=300)
            assert r.returncode == 0, r.stderr[-2000:]
        assert not (elsewhere / "runs").exists()  # no stray journal
    import mfsearch

    study = mfsearch.open_study(moved)
    assert isinstance(study, optuna.Study) and len([t for t in study.trials if t.state.name == "COMPLETE"]) >= 2


# ----------------------------------------------------------------------------- Optuna conventions


def test_dashboard_sees_metric_names_and_infeasible_samples(tmp_path, run_cli, tiny_space):
    p = tiny_space(tmp_path, search={"trials": 3, "sampler": "random", "seed": 1, "reference_models": False})
    run_cli("run", str(p), "--no-progress", cwd=tmp_path)
    study = _study(tmp_path)
    assert study.metric_names == ["accuracy", "macs"]
    over = [t for t in study.trials if t.user_attrs.get("status") == "over_budget"]
    trained = [t for t in study.trials if t.user_attrs.get("status") == "trained"]
    assert over and trained
    for t in over:  # the list optuna-dashboard reads as the trial's constraints
        assert any(c > 0 for c in t.system_attrs["constraints"]), t.system_attrs
    for t in trained:
        assert all(c <= 0 for c in t.system_attrs["constraints"])
    assert study.user_attrs["constraint_names"] == ["macs"]


def test_python_dash_m_and_exit_codes(tmp_path):
    r = subprocess.run([sys.executable, "-m", "mfsearch", "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip()
    r = subprocess.run([sys.executable, "-m", "mfsearch", "run", str(tmp_path / "missing.yaml")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.startswith("mfsearch: error:") and len(r.stderr.splitlines()) == 1
