"""Safe YAML loading that remembers where every key stands, for ``file:line: field: rule`` errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import InputError

MAX_FILE_BYTES = 1 << 20

__all__ = ["InputError", "line_of", "load_yaml", "located"]


MAX_NODES = 100_000


def _walk(node: yaml.Node, path: str, lines: dict[str, int], ancestors: set[int], count: list[int]) -> None:
    """Record the line of every field; refuse recursive aliases and alias bombs."""
    if id(node) in ancestors:
        raise InputError(f"line {node.start_mark.line + 1}: a YAML alias refers to itself")
    count[0] += 1
    if count[0] > MAX_NODES:
        raise InputError(f"more than {MAX_NODES} YAML nodes (an alias bomb?)")
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
        ancestors.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = str(k.value)
                p = f"{path}.{key}" if path else key
                lines[p] = k.start_mark.line + 1
                _walk(v, p, lines, ancestors, count)
        else:
            for i, v in enumerate(node.value):
                _walk(v, f"{path}[{i}]", lines, ancestors, count)
        ancestors.discard(id(node))


def load_yaml(path: str | Path) -> tuple[Any, dict[str, int]]:
    """``(data, lines)``: ``yaml.safe_load`` of ``path`` plus the line of every dotted field path.

    Unsafe tags, syntax errors, missing or huge files become one :class:`InputError`.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    if p.stat().st_size > MAX_FILE_BYTES:
        raise InputError(f"{p}: file is larger than {MAX_FILE_BYTES} bytes; is it really a config?")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{p}: not UTF-8 text") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        lines: dict[str, int] = {}
        if node is not None:
            try:
                _walk(node, "", lines, set(), [0])
            except InputError as e:
                raise InputError(f"{p}: invalid YAML: {e}") from None
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = f":{mark.line + 1}" if mark else ""
        msg = (e.problem or e.context or "invalid YAML").strip()
        raise InputError(f"{p}{line}: invalid YAML: {msg}") from None
    except (yaml.YAMLError, RecursionError) as e:
        raise InputError(f"{p}: invalid YAML: {type(e).__name__}") from None
    return data, lines


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
