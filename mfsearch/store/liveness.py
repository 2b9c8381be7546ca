"""Is the worker of a RUNNING trial still alive? Heartbeats and stale-trial recovery, for every storage.

A worker writes who it is into each trial it claims (host, pid, the process's start time and
boot id, a random token) and, while it trains, a ``heartbeat`` user attribute every
:data:`HEARTBEAT_S` seconds. A RUNNING trial of another worker is *stale*, and is marked FAIL
with the reason so the study redoes it, when

- its worker ran on this machine and that process is gone: no process with its pid, or one
  that started at another time or under another boot (the pid was reused); or
- its last heartbeat (or, without one, its start) is older than :data:`STALE_S` seconds:
  a worker on another host, in another container or pid namespace, that stopped beating.

Hosts that share a study need clocks in step (NTP); the grace is minutes, not seconds.
``MFSEARCH_HEARTBEAT_S`` and ``MFSEARCH_STALE_S`` change the two periods.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from functools import lru_cache
from typing import Any


def _seconds(name: str, default: float) -> float:
    try:
        v = float(os.environ.get(name, default))
    except ValueError:
        return default
    return v if v > 0 else default


#: seconds between heartbeats, and without one before a trial is stale (tunable for slow file systems)
HEARTBEAT_S = _seconds("MFSEARCH_HEARTBEAT_S", 20.0)
STALE_S = _seconds("MFSEARCH_STALE_S", 120.0)
_TOKEN = uuid.uuid4().hex[:12]


@lru_cache(maxsize=1)
def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def process_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux), or None if unknown / gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2:].split()  # the command name may contain spaces
    return fields[19].decode() if len(fields) > 19 else None


def worker_id() -> dict[str, Any]:
    """Who this process is: stored with every trial it claims."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start": process_start(pid), "boot": _boot_id(),
            "token": f"{_TOKEN}-{pid}"}


def is_mine(w: dict[str, Any]) -> bool:
    return w.get("token") == f"{_TOKEN}-{os.getpid()}" or (
        "token" not in w and w.get("host") == socket.gethostname() and w.get("pid") == os.getpid())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def local_process_gone(w: dict[str, Any]) -> bool | None:
    """True / False when the worker ran on this machine in this boot; None when that cannot be told here."""
    if w.get("host") != socket.gethostname():
        return None
    boot = w.get("boot")
    if boot and _boot_id() and boot != _boot_id():
        return True  # the machine rebooted since
    try:
        pid = int(w.get("pid", -1))
    except (TypeError, ValueError):
        return None
    if pid <= 0:
        return None
    if not _pid_alive(pid):
        return True
    start = w.get("start")
    if start is not None:
        now = process_start(pid)
        if now is not None and now != start:
            return True  # the pid belongs to another process now
    return False


def last_sign_of_life(t: Any) -> float:
    """Wall time of the last heartbeat of a trial, or of its start when it has none."""
    ua = t.user_attrs
    hb = ua.get("heartbeat") or ua.get("started")
    if isinstance(hb, (int, float)):
        return float(hb)
    return t.datetime_start.timestamp() if t.datetime_start else time.time()


def stale_reason(t: Any, now: float | None = None, stale_s: float = STALE_S) -> str | None:
    """Why a RUNNING trial of another worker is stale, or None while it may still be alive."""
    w = t.user_attrs.get("worker") or {}
    if w and is_mine(w):
        return None
    who = f"worker pid {w.get('pid')} on {w.get('host')}" if w else "a worker that never claimed it"
    gone = local_process_gone(w) if w else None
    if gone:
        return f"interrupted: {who} stopped mid-trial"
    age = (now or time.time()) - last_sign_of_life(t)
    if gone is None and age > stale_s:
        return f"interrupted: {who} gave no sign of life for {age:.0f} s (heartbeat every {HEARTBEAT_S:.0f} s)"
    return None


def fail_stale_trials(study: Any, stale_s: float = STALE_S) -> list[int]:
    """Mark the stale RUNNING trials of a study FAIL with the reason; the numbers of those marked."""
    from optuna.trial import TrialState

    from .._optuna import fail_trial

    marked = []
    now = time.time()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        reason = stale_reason(t, now, stale_s)
        if reason and fail_trial(study, t, {"status": "interrupted", "failure_reason": reason}):
            marked.append(t.number)
    return marked


class Heartbeat:
    """While in the ``with`` block, write the trial's ``heartbeat`` attribute every ``interval`` seconds."""

    def __init__(self, trial: Any, interval: float = HEARTBEAT_S, first: bool = True) -> None:
        self.trial = trial
        self.first = first  # False: the caller wrote the first beat with the trial's record
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.trial.set_user_attr("heartbeat", time.time())
            except Exception:  # noqa: BLE001 - a database away for a while: keep training, beat again later
                pass

    def __enter__(self) -> Heartbeat:
        if self.first:
            self.trial.set_user_attr("heartbeat", time.time())
        self._thread = threading.Thread(target=self._beat, name="mfsearch-heartbeat", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval + 5)
