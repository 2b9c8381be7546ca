"""The project's YAML files and their fields: where every key stands, and one checked reader per kind of value.

:func:`load_yaml` is ``yaml.safe_load`` plus the line of every dotted field (repeated keys, alias
bombs, unsafe tags and special files refused). :class:`Ctx` and the ``*_field`` readers check a
value and raise :class:`~mfsearch.errors.InputError` reading ``file:line: field: rule`` (space
files, experiment files, evaluation and latency sections all use them).
"""

from __future__ import annotations

import decimal
import math
from pathlib import Path
from typing import Any

import yaml

from ._utils import read_text
from .errors import InputError

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


class Ctx:
    def __init__(self, path: str | Path, lines: dict[str, int]) -> None:
        self.path, self.lines = path, lines

    def err(self, fld: str, rule: str) -> InputError:
        return located(self.path, self.lines, fld, rule)


def type_name(v: Any) -> str:
    return "a list" if isinstance(v, list) else "a mapping" if isinstance(v, dict) else type(v).__name__


def mapping_field(ctx: Ctx, v: Any, fld: str) -> dict:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise ctx.err(fld, f"must be a mapping, got {type_name(v)}")
    return v


def no_unknown(ctx: Ctx, d: dict, known: tuple | set, fld: str) -> None:
    for k in d:
        if k not in known:
            prefix = f"{fld}." if fld else ""
            raise ctx.err(f"{prefix}{k}", f"unknown key; known keys are {', '.join(sorted(known))}")


def int_field(ctx: Ctx, v: Any, fld: str, lo: int, hi: int, optional: bool = False) -> int | None:
    """An integer field. Numbers written with an exponent count when they are whole: YAML 1.1 reads
    ``8.5e6`` as text (it wants ``8.5e+6``, a float), so both, and ``1e6``, mean the integer."""
    if v is None and optional:
        return None
    raw = v
    if isinstance(v, str):
        try:
            d = decimal.Decimal(v.strip())
        except decimal.InvalidOperation:
            raise ctx.err(fld, f"must be an integer, got {raw!r}") from None
        if d.is_finite() and d.adjusted() > 18:  # far out of any range; int() of 1e999999999 would take ages
            raise ctx.err(fld, f"must be in [{lo}, {hi}], got {raw!r}")
        if not d.is_finite() or d != d.to_integral_value():
            raise ctx.err(fld, f"must be an integer, got {raw!r}")
        v = int(d)
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if not isinstance(v, int) or isinstance(v, bool):
        raise ctx.err(fld, f"must be an integer, got {raw!r}")
    if not lo <= v <= hi:
        raise ctx.err(fld, f"must be in [{lo}, {hi}], got {v}")
    return v


def float_field(ctx: Ctx, v: Any, fld: str, lo: float, hi: float) -> float:
    """A real-valued field; text that reads as a finite number counts (``1e-3`` is text in YAML 1.1)."""
    raw = v
    if isinstance(v, str):
        try:
            v = float(v)
        except ValueError:
            raise ctx.err(fld, f"must be a number, got {raw!r}") from None
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
        raise ctx.err(fld, f"must be a number, got {raw!r}")
    if not lo <= v <= hi:
        raise ctx.err(fld, f"must be in [{lo:g}, {hi:g}], got {v:g}")
    return float(v)


def bool_field(ctx: Ctx, v: Any, fld: str) -> bool:
    if not isinstance(v, bool):
        raise ctx.err(fld, f"must be true or false, got {v!r}")
    return v


def choice_field(ctx: Ctx, v: Any, fld: str, choices: tuple) -> str:
    if v not in choices:
        raise ctx.err(fld, f"unknown value {v!r}; choose one of {', '.join(choices)}")
    return v


def file_field(ctx: Ctx, v: Any, fld: str, what: str, example: str) -> Path:
    """A path to another file, relative to the file being read (``~`` expanded); ``what`` and ``example``
    go into the one-line error when the value is not a non-empty string."""
    if not isinstance(v, str) or not v.strip():
        raise ctx.err(fld, f"must be the path of {what} (relative to this file), e.g. {example}")
    path = Path(v).expanduser()
    return path if path.is_absolute() else Path(ctx.path).parent / path


def scalar_ok(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))
