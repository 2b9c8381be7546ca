"""Small process-level helpers: environment switches and reading a user's file safely."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO

from .errors import InputError

MAX_FILE_BYTES = 1 << 20  # a config or space file larger than this is refused

OFF = ("0", "false", "no", "off")


def switched_on(name: str) -> bool:
    """Whether the switch ``name`` is on: unset, or set to anything but 0 / false / no / off."""
    return os.environ.get(name, "1").strip().lower() not in OFF


def open_regular_file(path: str | Path, what: str = "file") -> IO[bytes]:
    """Open ``path`` for reading in binary, or raise one :class:`InputError` saying what it is instead.

    A directory, a FIFO, a socket or a device is refused without blocking (a FIFO is opened
    non-blocking and checked before anything is read); a missing or unreadable file is named.
    """
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise InputError(f"{p}: no such {what}") from None
    except PermissionError:
        raise InputError(f"{p}: {what} cannot be read (permission denied); check its permissions and those "
                         "of its folders") from None
    except IsADirectoryError:
        raise InputError(f"{p}: is a directory; give the path of a {what}") from None
    except OSError as e:
        if e.errno == errno.ENOTDIR:
            raise InputError(f"{p}: no such {what} (a part of the path is not a folder)") from None
        raise InputError(f"{p}: {what} cannot be read ({e.strerror or e})") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise InputError(f"{p}: is a directory; give the path of a {what}")
        if not stat.S_ISREG(mode):
            kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
                    else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a special file")
            raise InputError(f"{p}: is not a regular file ({kind}); give the path of a {what}")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_text(path: str | Path, max_bytes: int = MAX_FILE_BYTES, what: str = "file") -> str:
    """The UTF-8 text of a regular file of at most ``max_bytes``; anything else is one :class:`InputError`."""
    p = Path(path)
    with open_regular_file(p, what) as f:
        try:
            raw = f.read(max_bytes + 1)
        except OSError as e:
            raise InputError(f"{p}: {what} cannot be read ({e.strerror or e})") from None
    if len(raw) > max_bytes:
        raise InputError(f"{p}: file is larger than {max_bytes} bytes; is it really a config?")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{p}: not UTF-8 text") from None


def append_jsonl(path: str | Path, rec: dict) -> None:
    """Append one JSON record as a line. After a torn last line (a crash mid-write) the record starts a line of
    its own: the torn one stays unreadable (its run is redone), the new one is never welded onto it and lost."""
    import json

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        if f.tell() > 0:
            f.seek(-1, 2)
            if f.read(1) != b"\n":
                f.write(b"\n")
        f.write((json.dumps(rec) + "\n").encode())
        f.flush()


def merge_jsonl(records: Iterable[dict], dest: str | Path) -> int:
    """Append to ``dest`` the ``records`` it does not hold yet (the same content, whatever the key order, is
    the same record); the file is replaced whole, what it held is kept byte for byte. Returns how many."""
    import json

    dest = Path(dest)
    old = dest.read_bytes() if dest.is_file() else b""
    have = set()
    for line in old.decode("utf-8-sig", errors="replace").splitlines():
        try:
            have.add(json.dumps(json.loads(line), sort_keys=True))
        except (ValueError, RecursionError):
            continue  # a damaged line stays as it is, and counts for nothing
    new = []
    for r in records:
        key = json.dumps(r, sort_keys=True)
        if key not in have:
            have.add(key)
            new.append(json.dumps(r) + "\n")
    if new:
        dest.parent.mkdir(parents=True, exist_ok=True)
        head = old if not old or old.endswith(b"\n") else old + b"\n"
        atomic_write(dest, lambda t: t.write_bytes(head + "".join(new).encode()))
    return len(new)


def writable_folder(path: str | Path, flag: str) -> Path:
    """``path`` as a folder this process can write (created if missing), or one :class:`InputError` naming ``flag``."""
    if not str(path).strip():
        raise InputError(f"{flag}: empty; name a folder")
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{flag} {path}: cannot create it ({e.strerror or e}); name a writable folder") from None
    if not p.is_dir() or not os.access(p, os.W_OK | os.X_OK):
        raise InputError(f"{flag} {path}: not a writable folder; name a writable folder")
    return p


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """``write(tmp)`` to a temporary file beside ``path`` (this process's id in its name, the same suffix),
    then move it into place: a reader sees the old file or the new one, never half of one, and a failed
    write (a full disk) leaves no temporary file behind. OSError propagates."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # gone already after a successful replace
    return path


def finite_json(obj: object, indent: int | None = 2) -> str:
    """``json.dumps`` that writes valid JSON: a NaN or infinity (an undefined correlation) becomes ``null``."""
    import json
    import math

    def clean(v: object) -> object:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(obj), indent=indent, allow_nan=False)


@contextlib.contextmanager
def one_runner(folders: Iterable[Path], command: str) -> Iterator[None]:
    """Refuse a second process that would train into the same result folders at once (both would train the
    same missing runs and append each twice): :class:`~mfsearch.errors.RunError` naming the folder and who
    holds it. An advisory ``flock`` on ``<folder>/.lock``: the system drops it when its holder dies, so a
    killed run leaves nothing stale behind."""
    import fcntl
    import socket
    import time

    from .errors import RunError

    held: list[IO[str]] = []
    try:
        for folder in sorted({Path(f) for f in folders}):
            folder.mkdir(parents=True, exist_ok=True)
            fh = open(folder / ".lock", "a+")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                who = fh.read().strip() or "another process"
                fh.close()
                raise RunError(f"{folder}: {who} is running `{command}` into this folder; let it finish (or stop "
                               "it), then run again: it resumes") from None
            fh.seek(0)
            fh.truncate()
            fh.write(f"pid {os.getpid()} on {socket.gethostname()} (since {time.strftime('%H:%M:%S')})")
            fh.flush()
            held.append(fh)
        yield
    finally:
        for fh in held:
            fcntl.flock(fh, fcntl.LOCK_UN)
            fh.close()


def exit_with_parent(parent: int, every_s: float = 1.0) -> None:
    """In a worker process: end it (exit 1) soon after ``parent`` is gone, killed or not (kill -9 leaves no
    chance to stop the workers): a daemon thread compares ``os.getppid()`` with ``parent`` every ``every_s``.
    A worker whose parent died can deliver nothing: its run would only hold a core for nothing."""
    import threading
    import time

    def watch() -> None:
        while True:
            time.sleep(every_s)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="mfsearch-parent-watch", daemon=True).start()
