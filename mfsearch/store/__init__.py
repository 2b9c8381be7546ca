"""The results store: Optuna storages by URL, trial records, and the tidy results table.

Every trial of every engine lands here as an Optuna trial whose user attributes hold the
complete record (config, arch_id, MACs, params, per-epoch metrics, seeds, durations, versions,
status, failure reason). The default storage is a journal file in the run directory: it needs
no server, survives a crash mid-run (append-only) and is safe for several processes on one
machine (file lock). ``postgresql://`` URLs serve several machines.
"""

from __future__ import annotations

import json
import os
import platform
import re
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..yamlio import InputError

REFERENCE_SUFFIX = ".reference"
RUNS_DIR_ENV = "MFSEARCH_RUNS"


class StorageError(InputError):
    """A storage URL that cannot be opened; the message never contains credentials."""


def redact(url: str) -> str:
    """``scheme://user:***@host/db``: the password (and any ``password=`` query) hidden."""
    url = re.sub(r"(//[^:/@]+):[^@/]*@", r"\1:***@", url)
    return re.sub(r"(?i)(password=)[^&]*", r"\1***", url)


def runs_dir(override: str | Path | None = None) -> Path:
    return Path(override or os.environ.get(RUNS_DIR_ENV) or "runs")


def default_storage_url(run_dir: Path) -> str:
    return f"journal:{run_dir / 'journal.log'}"


def open_storage(url: str) -> Any:
    """An Optuna storage for ``url``: ``journal:<file>`` (or a ``.log`` path), ``sqlite:``, ``postgresql:``."""
    import optuna

    try:
        if url.startswith("journal:") or url.endswith(".log"):
            from optuna.storages.journal import JournalFileBackend

            path = Path(url[len("journal:"):] if url.startswith("journal:") else url).expanduser()
            path.parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        if re.match(r"^(sqlite|postgresql|mysql)(\+\w+)?:", url):
            engine_kwargs = {"pool_pre_ping": True} if not url.startswith("sqlite") else {}
            if url.startswith("postgresql"):
                engine_kwargs["connect_args"] = {"connect_timeout": 10}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=30,
                                                  grace_period=120)
    except ImportError as e:  # name what this scheme (+driver) needs
        pg = "pip install 'mfsearch[postgres]' (psycopg)"
        hint = {"mysql": "pip install mysqlclient (or pymysql, with a mysql+pymysql:// URL)",
                "mysql+mysqldb": "pip install mysqlclient", "mysql+pymysql": "pip install pymysql",
                "postgresql": pg, "postgresql+psycopg": pg, "postgresql+psycopg2": "pip install psycopg2-binary",
                }.get(url.split("://", 1)[0], "install the database driver the URL names")
        raise StorageError(f"storage {redact(url)}: a driver is missing ({e.name or e}); {hint}") from None
    except Exception as e:  # noqa: BLE001 - any connection failure becomes one clear line
        msg = redact(str(e).splitlines()[0] if str(e) else type(e).__name__)
        raise StorageError(f"storage {redact(url)}: cannot open ({msg}); check the URL and that the "
                           "server is running") from None
    raise StorageError(f"storage {redact(url)}: unknown scheme; use journal:<file>, sqlite:///<file> "
                       "or postgresql://user@host/db")


def versions() -> dict[str, str]:
    """Versions of what produced a result (stored with every trial)."""
    import numpy
    import optuna
    import torch

    from .. import __version__

    return {"mfsearch": __version__, "torch": torch.__version__, "optuna": optuna.__version__,
            "numpy": numpy.__version__, "python": platform.python_version()}


def worker_id() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def trial_constraints(t: Any) -> list[float]:
    """A trial's constraint values (Optuna 5 keeps them by name; older versions as a list)."""
    c = t.constraints
    return list(c.values()) if isinstance(c, dict) else list(c or [])


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_stale_trials(study: Any) -> list[int]:
    """Mark RUNNING trials whose worker process (on this host) is gone as FAIL, with the reason.

    RDB storages also fail trials whose heartbeat stopped (other hosts).
    Returns the numbers of the trials marked.
    """
    import optuna
    from optuna.trial import TrialState

    host = socket.gethostname()
    marked = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        w = t.user_attrs.get("worker") or {}
        if w.get("host") == host and w.get("pid") != os.getpid() and not pid_alive(int(w.get("pid", -1))):
            reason = f"interrupted: worker pid {w.get('pid')} on {host} stopped mid-trial"
            try:
                study._storage.set_trial_user_attr(t._trial_id, "status", "interrupted")
                study._storage.set_trial_user_attr(t._trial_id, "failure_reason", reason)
                study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
                marked.append(t.number)
            except (RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
                pass  # another worker got there first
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # RDB storages: trials whose heartbeat stopped
    return marked


@dataclass(frozen=True)
class StudyRef:
    """Where a study lives: its name, storage URL and run directory."""

    name: str
    storage: str
    run_dir: Path

    @property
    def reference_name(self) -> str:
        return self.name + REFERENCE_SUFFIX


def write_run_info(ref: StudyRef, extra: dict[str, Any]) -> None:
    """``run_dir/study.json``: how to find the study again (credentials never written)."""
    ref.run_dir.mkdir(parents=True, exist_ok=True)
    info = {"name": ref.name, "storage": redact(ref.storage), **extra}
    (ref.run_dir / "study.json").write_text(json.dumps(info, indent=2))


def resolve_study(target: str, storage: str | None = None, runs: str | Path | None = None) -> StudyRef:
    """A study from a space file, a run directory, or a study name under the runs directory."""
    p = Path(target)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        from ..space import load_space

        space = load_space(p)
        run_dir = runs_dir(runs) / space.name
        return StudyRef(space.name, storage or space.storage or default_storage_url(run_dir), run_dir)
    run_dir = p if (p / "study.json").is_file() else runs_dir(runs) / target
    info_file = run_dir / "study.json"
    if not info_file.is_file():
        raise InputError(f"{target}: no study found (looked for {info_file}); give a space file, a run "
                         "directory or a study name")
    try:  # empty, cut short or edited by hand: one line, and the way round it
        info = json.loads(info_file.read_text())
        name, url = info["name"], storage or info["storage"]
        if not isinstance(name, str) or not isinstance(url, str):
            raise TypeError
    except (OSError, ValueError, TypeError, KeyError) as e:
        what = "is not valid JSON" if isinstance(e, ValueError) else "lacks the study's name and storage"
        raise InputError(f"{info_file}: {what}; give the study's space file instead (it finds the study "
                         "again)") from None
    if "***" in url:
        raise InputError(f"{target}: the study's storage needs credentials; pass --storage URL")
    return StudyRef(name, url, run_dir)


TRANSIENT_WINDOW_S = 90.0


def _transient(e: BaseException) -> bool:
    """Errors of a database that went away for a while (connection refused, reset, restarted)."""
    import optuna

    if isinstance(e, optuna.exceptions.StorageInternalError):
        return True
    try:
        import sqlalchemy.exc as sa
    except ImportError:
        return False
    return isinstance(e, (sa.OperationalError, sa.InterfaceError)) or (
        isinstance(e, sa.DBAPIError) and bool(getattr(e, "connection_invalidated", False)))


class Retrying:
    """Wraps a study or trial: storage calls are retried while the database is away.

    Retries for up to ``window`` seconds with back-off, then raises :class:`StorageError` (one
    clear line; stored trials stay as they are). A ``tell`` whose first attempt did reach the
    database is not applied twice.
    """

    def __init__(self, obj: Any, url: str, window: float = TRANSIENT_WINDOW_S, log: Any = None) -> None:
        self._obj = obj
        self._url = url
        self._window = window
        self._log = log

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._obj, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            import time

            import optuna

            args = tuple(a._obj if isinstance(a, Retrying) else a for a in args)
            deadline = time.monotonic() + self._window
            delay, attempt = 0.5, 0
            while True:
                try:
                    out = attr(*args, **kwargs)
                    break
                except optuna.exceptions.UpdateFinishedTrialError:
                    if attempt and name == "tell":  # the first attempt got through before the error
                        return None
                    raise
                except Exception as e:  # noqa: BLE001 - classified just below
                    if not _transient(e):
                        raise
                    attempt += 1
                    if time.monotonic() > deadline:
                        raise StorageError(
                            f"storage {redact(self._url)}: unreachable for {self._window:.0f}s ({name}); stored "
                            "trials are safe: run the same command again once the database is back") from None
                    if self._log and attempt == 1:
                        self._log(f"storage {redact(self._url)} unreachable ({name}); retrying for up to "
                                  f"{self._window:.0f}s")
                    time.sleep(delay)
                    delay = min(delay * 2, 5.0)
            if isinstance(out, optuna.trial.Trial):
                return Retrying(out, self._url, self._window, self._log)
            return out

        return call
