"""The journal-file backend of the results store, hardened against torn records and full disks.

Optuna's journal file is append-only JSON lines. A crash or a full disk in the middle of an
append leaves a *torn* last record (a line without its newline). Optuna's own reader skips a
torn last line, but the next append lands right after it, welding the two into one line that
no longer parses, and from then on every reader refuses the file. :class:`JournalBackend`:

- before every append, under the journal's lock, cuts a torn tail off the file and keeps its
  bytes in a side file ``journal.log.torn-<time>`` (one line on stderr says so), so the next
  record starts on a line of its own;
- reads tolerantly: a torn last line is not a record; a line that an older version welded
  (torn prefix + complete record) yields the complete record it ends with; a line with no
  record in it is skipped. Every reader makes the same decision, so all processes replay the
  same operations;
- turns an ``OSError`` of an append (``ENOSPC``: disk full) into one carrying the journal's
  path, so the command can name it.

The path is made absolute, and the lock (Optuna's symbolic link next to the journal) is judged by
the link itself: a relative target dangles, which hid a lock left by a killed process from the
grace period that breaks it, and the next run waited forever.
"""

from __future__ import annotations

import bisect
import errno
import json
import os
import sys
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock
from optuna.storages.journal._file import get_lock_file

#: seconds after which a journal lock left by a killed process is broken (Optuna's grace period;
#: ``MFSEARCH_LOCK_GRACE_S`` changes it)
LOCK_GRACE_S = int(os.environ["MFSEARCH_LOCK_GRACE_S"]) if os.environ.get("MFSEARCH_LOCK_GRACE_S", "").isdigit() \
    and int(os.environ["MFSEARCH_LOCK_GRACE_S"]) > 0 else 30

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(f"mfsearch: {msg}", file=sys.stderr, flush=True)


def _record(line: bytes) -> dict[str, Any] | None:
    """The record of a journal line: the line itself, or the complete record a welded line ends with."""
    try:
        out = json.loads(line)
        return out if isinstance(out, dict) else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        pass
    start = line.rfind(b'{"op_code"')  # every Optuna journal record starts with its op code
    while start > 0:
        try:
            out = json.loads(line[start:])
            return out if isinstance(out, dict) else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            start = line.rfind(b'{"op_code"', 0, start)
    return None


class JournalLock(JournalFileSymlinkLock):
    """Optuna's symbolic-link lock, judged by the link itself: a link left by a killed process is
    broken after the grace period even when its target dangles (older versions linked a relative
    path), and the waiter says what it waits for."""

    def __init__(self, filepath: str, grace_period: int = LOCK_GRACE_S, log: Log | None = None) -> None:
        super().__init__(filepath, grace_period=grace_period)
        self._log = log or _stderr

    def acquire(self) -> bool:
        sleep_s, said, seen, since = 0.001, False, None, time.monotonic()
        while True:
            try:
                os.symlink(self._lock_target_file, self._lock_file)
                return True
            except OSError as err:
                if err.errno != errno.EEXIST:
                    raise
            try:
                mtime = os.lstat(self._lock_file).st_mtime
            except OSError:
                continue  # released meanwhile: try again at once
            if mtime != seen:
                seen, since = mtime, time.monotonic()
            held = time.monotonic() - since
            if held > 5 and not said:
                self._log(f"waiting for the journal lock {self._lock_file} (another process is writing, or one "
                          f"was killed while writing); it is broken after {self.grace_period} s")
                said = True
            if held > self.grace_period:
                try:
                    self.release()
                    self._log(f"broke the journal lock {self._lock_file}, left for {held:.0f} s")
                except RuntimeError:
                    pass
                sleep_s = 0.001
                continue
            time.sleep(sleep_s)
            sleep_s = min(sleep_s * 2, 0.5)


class JournalBackend(JournalFileBackend):
    """:class:`optuna.storages.journal.JournalFileBackend` that survives torn records (see the module)."""

    def __init__(self, file_path: str | Path, log: Log | None = None, create: bool = True) -> None:
        path = str(Path(file_path).expanduser().absolute())
        if not create and not os.path.exists(path):
            raise FileNotFoundError(path)
        self._log = log or _stderr
        super().__init__(path, lock_obj=JournalLock(path, LOCK_GRACE_S, self._log))
        self._numbers, self._offsets = [0], [0]  # record number -> end offset of its line, both sorted

    # ------------------------------------------------------------------ reading
    def _nearest(self, log_number: int) -> tuple[int, int]:
        """The last record number at or before ``log_number`` whose end offset is known, and that offset.

        Every read starts there. A one-shot search reads the journal thousands of times; a scan of
        all known numbers per read grew with the journal and came to dominate a one-second trial.
        """
        i = bisect.bisect_right(self._numbers, log_number) - 1
        return self._numbers[i], self._offsets[i]

    def read_logs(self, log_number_from: int) -> Generator[dict[str, Any], None, None]:
        """Records from number ``log_number_from`` on; numbers count records, not lines."""
        with open(self._file_path, "rb") as f:
            size = os.fstat(f.fileno()).st_size  # what another process appends meanwhile is read next time
            number, offset = self._nearest(log_number_from)
            f.seek(offset)
            for line in f:
                offset += len(line)
                if offset > size or not line.endswith(b"\n"):
                    break  # a torn last line (or one being written right now): not a record
                rec = _record(line)
                if rec is None:
                    continue
                number += 1
                if number > self._numbers[-1]:  # offsets are learnt in order: both lists stay sorted
                    self._numbers.append(number)
                    self._offsets.append(offset)
                if number > log_number_from:
                    yield rec

    # ------------------------------------------------------------------ writing
    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        try:
            with get_lock_file(self._lock):
                self._set_aside_torn_tail()
                data = ("\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n").encode()
                with open(self._file_path, "ab") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
        except OSError as e:
            if e.filename:
                raise
            raise OSError(e.errno, e.strerror, self._file_path) from None

    def _set_aside_torn_tail(self) -> None:
        """Cut a last line without its newline off the journal, keeping its bytes in a side file."""
        with open(self._file_path, "rb+") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return
            end = size
            keep = 0
            while end > 0:  # find the last newline, reading backwards in blocks
                start = max(0, end - 65536)
                f.seek(start)
                block = f.read(end - start)
                nl = block.rfind(b"\n")
                if nl >= 0:
                    keep = start + nl + 1
                    break
                end = start
            f.seek(keep)
            torn = f.read()
            side = f"{self._file_path}.torn-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
            with open(side, "wb") as s:
                s.write(torn)
                s.flush()
                os.fsync(s.fileno())
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
        self._log(f"{self._file_path}: its last record was torn ({len(torn)} bytes without an end, left by a "
                  f"crash or a full disk); set aside in {side}; every finished trial before it is intact")
