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
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError, RunError
from .liveness import fail_stale_trials, worker_id

__all__ = [
    "REFERENCE_SUFFIX", "Retrying", "StorageDown", "StorageError", "StudyRef", "default_storage_url",
    "fail_stale_trials", "journal_path", "open_storage", "read_run_info", "redact", "resolve_study", "runs_dir",
    "trial_constraints", "versions", "worker_id", "write_run_info",
]

REFERENCE_SUFFIX = ".reference"
RUNS_DIR_ENV = "MFSEARCH_RUNS"


class StorageError(InputError):
    """A storage URL that cannot be opened; the message never contains credentials."""


class StorageDown(RunError):
    """The storage went away during a run for longer than the retry window."""


# the start of a URL that may carry credentials: ``scheme://`` (or a database dialect without ``//``)
_URL_START = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://|\b(?:postgres(?:ql)?|mysql|mariadb)(?:\+\w+)?:(?!//)")
_PASSWORD_PARAM = re.compile(r"(?i)password=")


def _password_span(text: str) -> tuple[int, int] | None:
    """Where the password of the first URL in ``text`` is (``[start, end)``), if it has one.

    A raw password may hold ``/ @ : ? #`` and spaces, so no URL grammar decides where it ends: the
    user-info runs from ``scheme://`` to the LAST ``@`` of the text, and everything after its first
    ``:`` counts as the password. Hiding too much is acceptable, hiding too little is not.
    """
    m = _URL_START.search(text)
    if not m:
        return None
    at = text.rfind("@", m.end())
    colon = text.find(":", m.end(), at) if at >= 0 else -1
    return (colon + 1, at) if colon >= 0 else None


def _hidden_spans(text: str) -> list[tuple[int, int]]:
    """The spans of ``text`` to hide, sorted and merged: the password and everything after ``password=``."""
    spans = [s for s in (_password_span(text),) if s]
    p = _PASSWORD_PARAM.search(text)
    if p:
        spans.append((p.end(), len(text)))
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _parses_as_written(url: str, password: str) -> bool:
    """Whether SQLAlchemy reads ``password`` as the URL's password (a raw ``@`` in it, for one, makes
    SQLAlchemy take the rest of the password for the host)."""
    from urllib.parse import unquote

    try:
        from sqlalchemy.engine import make_url

        return (make_url(url).password or "") == unquote(password)
    except Exception:  # noqa: BLE001 - any failure: its message may quote the password
        return False


def redact(text: str, url: str | None = None) -> str:
    """``text`` with the credentials of the URLs in it hidden: ``scheme://user:***@host/db``.

    The user name is kept; the rest of the user-info (see :func:`_password_span`) and everything
    after a ``password=`` parameter (any case) become ``***``. With ``url``, ``text`` is a message
    about that URL (a driver's error): every copy of the URL's secrets in it is hidden too, and when
    the URL does not parse as written, so that the message may quote pieces of the password as a
    host, port or database, the message is replaced by advice.
    """
    out, last = "", 0
    for start, end in _hidden_spans(text):
        out += text[last:start] + "***"
        last = end
    out += text[last:]
    if not url:
        return out
    pw = _password_span(url)
    if pw and not _parses_as_written(url, url[pw[0]:pw[1]]):
        return ("the URL does not parse as written: percent-encode the special characters of the password "
                "(@ as %40, / as %2F, : as %3A, ? as %3F, # as %23, space as %20)")
    from urllib.parse import unquote

    pieces = [url[start:end] for start, end in _hidden_spans(url)]
    secrets = {f for p in pieces for q in (p, *p.split("&")) for f in (q, unquote(q)) if f}
    for secret in sorted(secrets, key=len, reverse=True):
        out = out.replace(secret, "***")
    return out


def runs_dir(override: str | Path | None = None) -> Path:
    return Path(override or os.environ.get(RUNS_DIR_ENV) or "runs")


def default_storage_url(run_dir: Path) -> str:
    """The journal file of a run directory, as an absolute ``journal:`` URL."""
    return f"journal:{(Path(run_dir) / 'journal.log').expanduser().absolute()}"


def journal_path(url: str) -> Path | None:
    """The file of a ``journal:<file>`` (or ``<file>.log``) URL, else None."""
    if url.startswith("journal:"):
        return Path(url[len("journal:"):]).expanduser()
    if url.endswith(".log") and "://" not in url:
        return Path(url).expanduser()
    return None


def open_storage(url: str, create: bool = True) -> Any:
    """An Optuna storage for ``url``: ``journal:<file>`` (or a ``.log`` path), ``sqlite:``, ``postgresql:``.

    ``create=False`` (read-only commands): a journal file that does not exist is an error
    rather than a new, empty store.
    """
    import optuna

    try:
        path = journal_path(url)
        if path is not None:
            from .journal import JournalBackend

            if not create and not path.is_file():
                raise InputError(f"{path}: no results store here; run the study first (mfsearch run SPACE)")
            path.parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.JournalStorage(JournalBackend(path))
        if re.match(r"^(sqlite|postgresql|mysql)(\+\w+)?:", url):
            engine_kwargs = {"pool_pre_ping": True} if not url.startswith("sqlite") else {}
            if url.startswith("postgresql"):
                engine_kwargs["connect_args"] = {"connect_timeout": 10}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except ImportError as e:  # name what this scheme (+driver) needs
        pg = "pip install 'mfsearch[postgres]' (psycopg)"
        hint = {"mysql": "pip install mysqlclient (or pymysql, with a mysql+pymysql:// URL)",
                "mysql+mysqldb": "pip install mysqlclient", "mysql+pymysql": "pip install pymysql",
                "postgresql": pg, "postgresql+psycopg": pg, "postgresql+psycopg2": "pip install psycopg2-binary",
                }.get(url.split("://", 1)[0], "install the database driver the URL names")
        raise StorageError(f"storage {redact(url)}: a driver is missing ({e.name or e}); {hint}") from None
    except (InputError, OSError):
        raise
    except Exception as e:  # noqa: BLE001 - any connection failure becomes one clear line
        msg = redact(str(e).splitlines()[0] if str(e) else type(e).__name__, url)
        raise StorageError(f"storage {redact(url)}: cannot open ({msg}); check the URL and that the "
                           "server is running") from None
    raise StorageError(f"storage {redact(url)}: unknown scheme; use journal:<file>, sqlite:///<file> "
                       "or postgresql://user@host/db")


def versions() -> dict[str, str]:
    """Versions of what produced a result (stored with every trial), and the CPU kernels torch picked here
    (``x86_64 AVX512``): one thread is bit-reproducible on one machine, not across instruction sets."""
    import numpy
    import optuna
    import torch

    from .. import __version__

    return {"mfsearch": __version__, "torch": torch.__version__, "optuna": optuna.__version__,
            "numpy": numpy.__version__, "python": platform.python_version(),
            "cpu": f"{platform.machine()} {torch.backends.cpu.get_cpu_capability()}"}


def trial_constraints(t: Any) -> list[float]:
    """A trial's constraint values (Optuna 5 keeps them by name; older versions as a list)."""
    c = t.constraints
    return list(c.values()) if isinstance(c, dict) else list(c or [])


@dataclass(frozen=True)
class StudyRef:
    """Where a study lives: its name, storage URL and run directory."""

    name: str
    storage: str
    run_dir: Path

    @property
    def reference_name(self) -> str:
        return self.name + REFERENCE_SUFFIX


def _portable(url: str, run_dir: Path) -> str:
    """A journal inside the run directory is written relative to it, so the folder can move."""
    path = journal_path(url)
    if path is None:
        return redact(url)
    try:
        return f"journal:{path.absolute().relative_to(Path(run_dir).absolute())}"
    except ValueError:
        return f"journal:{path.absolute()}"


def _located(url: str, run_dir: Path) -> str:
    """The storage URL of study.json made usable from any folder (relative journals: against the run dir)."""
    path = journal_path(url)
    if path is None or path.is_absolute():
        return url
    for cand in (run_dir / path, run_dir / path.name, Path.cwd() / path):  # the last two: older study.json files
        if cand.is_file():
            return f"journal:{cand.absolute()}"
    return f"journal:{(run_dir / path).absolute()}"


def write_run_info(ref: StudyRef, extra: dict[str, Any]) -> None:
    """``run_dir/study.json``: how to find the study again (credentials never written)."""
    ref.run_dir.mkdir(parents=True, exist_ok=True)
    info = {"name": ref.name, "storage": _portable(ref.storage, ref.run_dir), **extra}
    tmp = ref.run_dir / f".study.json.{os.getpid()}"
    tmp.write_text(json.dumps(info, indent=2))
    os.replace(tmp, ref.run_dir / "study.json")  # never a half-written study.json


def read_run_info(run_dir: Path) -> dict[str, Any]:
    """The contents of ``run_dir/study.json``, checked; one clear line when it is unusable."""
    f = Path(run_dir) / "study.json"
    try:
        info = json.loads(f.read_text())
    except FileNotFoundError:
        raise InputError(f"{f}: no such file; give a space file, a run directory or a study name") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else "not valid JSON"
        raise InputError(f"{f}: cannot be read ({why}); give the space file instead "
                         "(mfsearch results spaces/<name>.yaml) or --storage URL") from None
    if not isinstance(info, dict) or not isinstance(info.get("name"), str) or not isinstance(info.get("storage"), str):
        raise InputError(f"{f}: lacks the study name or storage; give the space file instead "
                         "(mfsearch results spaces/<name>.yaml) or --storage URL")
    return info


def resolve_study(target: str | Path, storage: str | None = None, runs: str | Path | None = None) -> StudyRef:
    """A study from a run directory (holding ``study.json``) or a study name under the runs directory."""
    p = Path(target)
    run_dir = p if (p / "study.json").exists() else runs_dir(runs) / str(target)
    if not (run_dir / "study.json").exists():
        raise InputError(f"{target}: no study found (looked for {run_dir / 'study.json'}); give a space file, "
                         "a run directory or a study name")
    info = read_run_info(run_dir)
    url = storage or _located(info["storage"], run_dir)
    if "***" in url:
        raise InputError(f"{target}: the study's storage needs credentials; pass --storage URL")
    return StudyRef(info["name"], url, run_dir)


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

    Retries for up to ``window`` seconds with back-off, then raises :class:`StorageDown` (one
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
                        raise StorageDown(
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
