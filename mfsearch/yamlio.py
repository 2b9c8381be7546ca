"""Safe YAML loading that remembers where every key stands, for ``file:line: field: rule`` errors."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import IO, Any

import yaml

from .errors import InputError

MAX_FILE_BYTES = 1 << 20

__all__ = ["InputError", "line_of", "load_yaml", "located"]


MAX_NODES = 100_000


class _NodeError(Exception):
    """A problem found while walking the node tree, at ``line`` (1-based) of the text."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line, self.message = line, message


_UNREAD = object()  # a key whose value is not known here


def _key_value(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    """The value a mapping key reads as (``1`` and ``1.0`` and ``true`` are equal keys in a dict)."""
    if not isinstance(node, yaml.ScalarNode):
        return _UNREAD
    try:
        value = loader.construct_object(node)
        hash(value)
        return value
    except (yaml.YAMLError, TypeError, ValueError):
        return _UNREAD  # an unreadable key fails later, with its own message


def _walk(node: yaml.Node, path: str, lines: dict[str, int], ancestors: set[int], count: list[int],
          loader: yaml.SafeLoader) -> None:
    """Record the line of every field; refuse repeated keys, recursive aliases and alias bombs."""
    if id(node) in ancestors:
        raise InputError(f"line {node.start_mark.line + 1}: a YAML alias refers to itself")
    count[0] += 1
    if count[0] > MAX_NODES:
        raise InputError(f"more than {MAX_NODES} YAML nodes (an alias bomb?)")
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
        ancestors.add(id(node))
        if isinstance(node, yaml.MappingNode):
            by_name: dict[str, int] = {}  # the key as a field name -> its line
            by_value: dict[Any, int] = {}  # the key as read -> its line
            for k, v in node.value:
                key = str(k.value)
                p = f"{path}.{key}" if path else key
                line = k.start_mark.line + 1
                value = _key_value(loader, k)
                first = by_name.get(key, by_value.get(value) if value is not _UNREAD else None)
                if first is not None:  # a dict would keep the last silently; both are lost to the lines map
                    raise _NodeError(line, f"{p}: repeated key (first at line {first}); keep one of the two")
                by_name[key] = line
                if value is not _UNREAD:
                    by_value.setdefault(value, line)
                lines[p] = line
                _walk(v, p, lines, ancestors, count, loader)
        else:
            for i, v in enumerate(node.value):
                _walk(v, f"{path}[{i}]", lines, ancestors, count, loader)
        ancestors.discard(id(node))


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


def parse_yaml(text: str, source: str) -> tuple[Any, dict[str, int]]:
    """``(data, lines)`` of YAML ``text``; errors are one :class:`InputError` starting with ``source``."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        lines: dict[str, int] = {}
        if node is not None:
            try:
                _walk(node, "", lines, set(), [0], yaml.SafeLoader(""))
            except _NodeError as e:
                raise InputError(f"{source}:{e.line}: {e.message}") from None
            except InputError as e:
                raise InputError(f"{source}: invalid YAML: {e}") from None
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = f":{mark.line + 1}" if mark else ""
        msg = (e.problem or e.context or "invalid YAML").strip()
        raise InputError(f"{source}{line}: invalid YAML: {msg}") from None
    except (yaml.YAMLError, RecursionError) as e:
        raise InputError(f"{source}: invalid YAML: {type(e).__name__}") from None
    return data, lines


def load_yaml(path: str | Path) -> tuple[Any, dict[str, int]]:
    """``(data, lines)``: ``yaml.safe_load`` of ``path`` plus the line of every dotted field path.

    Unsafe tags, syntax errors, repeated keys, missing, unreadable, special (directory, FIFO)
    or huge files become one :class:`InputError`.
    """
    return parse_yaml(read_text(path), str(Path(path)))


def line_of(lines: dict[str, int], field: str) -> int | None:
    """The line of ``field`` or of its closest enclosing field that has one."""
    f = field
    while f:
        if f in lines:
            return lines[f]
        cut = max(f.rfind("."), f.rfind("["))
        f = f[:cut] if cut > 0 else ""
    return lines.get("")


def located(path: str | Path, lines: dict[str, int], field: str, rule: str) -> InputError:
    """An :class:`InputError` reading ``file:line: field: rule``."""
    line = line_of(lines, field)
    where = f"{path}:{line}" if line else str(path)
    return InputError(f"{where}: {field}: {rule}")
