"""The claim lock: workers sharing a study take turns at "count, sample, mark training".

Without it two workers could both see one trial left and both train one, overshooting the
study's target. A file lock next to a journal / SQLite file (workers on one machine, released
by the kernel when a holder dies); a PostgreSQL advisory lock for a database shared by several
machines (released when the holder's session ends); nothing for other storages.

Waiting is bounded: after :data:`SAY_AFTER_S` the waiter says what it waits for (and who holds
the lock, when known), and after ``timeout`` seconds it gives up with one line.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import _optuna
from . import StorageError, StudyRef, _transient, redact

SAY_AFTER_S = 10.0
TIMEOUT_S = 600.0
TRANSIENT_WINDOW_S = 90.0


class ClaimTimeout(StorageError):
    """The claim lock could not be taken within the bound."""


class claim_lock:  # noqa: N801 - a context manager
    """Serialises claims between workers (see the module)."""

    def __init__(self, ref: StudyRef, study: Any, timeout: float = TIMEOUT_S,
                 log: Callable[[str], None] | None = None) -> None:
        self.ref = ref
        self.study = study
        self.timeout = timeout
        self.log = log or (lambda m: print(f"mfsearch: {m}", file=sys.stderr, flush=True))
        self.fh: Any = None
        self.conn: Any = None
        self._key = int.from_bytes(hashlib.sha256(ref.name.encode()).digest()[:7], "big")

    # ------------------------------------------------------------------ file lock
    def _file_lock(self) -> None:
        import fcntl

        path = Path(self.ref.run_dir) / ".claim.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(path, "a+")  # noqa: SIM115 - closed in __exit__
        t0 = time.monotonic()
        said = False
        while True:
            try:
                fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - t0
                if waited > self.timeout:
                    self.fh.close()
                    self.fh = None
                    raise ClaimTimeout(f"{path}: another worker ({self._holder(path)}) held the claim lock of study "
                                       f"{self.ref.name} for over {self.timeout:.0f} s; stop it or run again "
                                       "later") from None
                if not said and waited > SAY_AFTER_S:
                    self.log(f"waiting for the claim lock of study {self.ref.name} ({path}), held by "
                             f"{self._holder(path)}; giving up after {self.timeout:.0f} s")
                    said = True
                time.sleep(0.1)
        self.fh.seek(0)
        self.fh.truncate()
        self.fh.write(f"pid {os.getpid()}\n")
        self.fh.flush()

    @staticmethod
    def _holder(path: Path) -> str:
        try:
            text = path.read_text().strip()
        except OSError:
            text = ""
        return text or "another process"

    # ------------------------------------------------------------------ PostgreSQL advisory lock
    def _pg_lock(self) -> None:
        import sqlalchemy

        url = self.ref.storage
        engine = _optuna.rdb_engine(self.study)
        t0 = time.monotonic()
        said = False
        while True:
            try:
                if self.conn is None:
                    self.conn = engine.connect()
                got = self.conn.execute(sqlalchemy.text("SELECT pg_try_advisory_lock(:k)"), {"k": self._key}).scalar()
                if got:
                    return
            except Exception as e:  # noqa: BLE001 - classified just below
                if self.conn is not None:
                    self.conn.close()
                    self.conn = None
                if not _transient(e) or time.monotonic() - t0 > TRANSIENT_WINDOW_S:
                    raise StorageError(f"storage {redact(url)}: cannot take the claim lock ({type(e).__name__}); "
                                       "stored trials are safe: run the same command again once the database "
                                       "is back") from None
            waited = time.monotonic() - t0
            if waited > self.timeout:
                if self.conn is not None:
                    self.conn.close()
                    self.conn = None
                raise ClaimTimeout(f"storage {redact(url)}: another worker held the claim lock of study "
                                   f"{self.ref.name} for over {self.timeout:.0f} s; run again later") from None
            if not said and waited > SAY_AFTER_S:
                self.log(f"waiting for the claim lock of study {self.ref.name} in {redact(url)} (another worker "
                         f"is sampling); giving up after {self.timeout:.0f} s")
                said = True
            time.sleep(0.2)

    def __enter__(self) -> claim_lock:
        url = self.ref.storage
        if url.startswith("postgresql"):
            self._pg_lock()
        elif url.startswith(("journal:", "sqlite:")) or url.endswith(".log"):
            self._file_lock()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fh is not None:
            import fcntl

            fcntl.flock(self.fh, fcntl.LOCK_UN)
            self.fh.close()
            self.fh = None
        if self.conn is not None:
            import sqlalchemy

            try:
                self.conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": self._key})
            except Exception as e:  # noqa: BLE001 - a dropped session has released its locks already
                if not _transient(e):
                    raise
            finally:
                self.conn.close()
                self.conn = None
