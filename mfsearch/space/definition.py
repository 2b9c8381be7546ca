"""The search definition a study is pinned to, and how two definitions differ.

A study holds results that are only comparable under one definition: the base model, the
knobs and their ranges, the budget, the objectives, the evaluation settings (and the latency
settings where latency is used: how it is measured, whether it is measured or predicted, the
statistic budgets and objectives read, and the table a prediction reads, by when it was built).
Run controls (trials, sampler, seed, workers, reference models, storage) are not part of it:
they may change between runs of a study.

:func:`definition` gives a canonical, credential-free dict of a space; :func:`first_difference`
names the first field where two differ and whether an explicit ``--allow-change`` may accept
it. Acceptable: a knob's int / float range, a constant, a knob added or dropped. Never: a choice
list (Optuna keeps one distribution per parameter in a study), a knob's kind, the base model,
the budget, the objectives, the evaluation or latency settings (stored results would no longer
be comparable, or would be judged against another budget).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from .spec import Dist, Space

#: sections whose change is never accepted, in the order they are compared
FIXED = ("base", "objectives", "budget", "evaluation", "latency")


def _knob(v: Any) -> Any:
    return v.to_dict() if isinstance(v, Dist) else {"const": v}


#: latency settings added since studies were first pinned, with the value every older study used
_LATENCY_DEFAULTS = {"source": "measured", "table": None, "statistic": "wall"}


def _table_built(space: Space) -> str | None:
    """When a predicted-latency space's table was built (its identity: a rebuilt table predicts otherwise)."""
    path = space.latency_table_path()
    try:
        return str(json.loads(path.read_text()).get("created")) if path is not None else None
    except (OSError, ValueError, AttributeError):
        return None


def _latency(space: Space) -> dict[str, Any] | None:
    if not space.needs_latency:
        return None
    out = dataclasses.asdict(space.latency)
    if space.latency.source == "predicted":
        out["table_built"] = _table_built(space)
    return out


def definition(space: Space) -> dict[str, Any]:
    """The canonical definition of ``space`` (plain JSON data, no storage URL)."""
    ev = dataclasses.asdict(space.evaluation)
    for k in ("data_root", "threads", "device", "compile", "cuda_graphs"):
        ev.pop(k, None)  # where and how fast, not what: the eval_id leaves them out too
    return {
        "base": space.base,
        "objectives": [list(o) for o in space.objectives],
        "budget": dataclasses.asdict(space.budget),
        "evaluation": {"eval_id": space.evaluation.eval_id(), **ev},
        "latency": _latency(space),
        "space": {
            "knobs": {k: _knob(v) for k, v in space.knobs.items()},
            "lite": {k: _knob(v) for k, v in space.lite.items()} if space.lite is not None else None,
            "stages": [{k: _knob(v) for k, v in st.items()} for st in space.stages] if space.stages is not None
            else None,
        },
    }


def _diff(a: Any, b: Any, path: str) -> str | None:
    """The dotted path of the first difference between two JSON values, or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            if k not in a or k not in b:
                return f"{path}.{k}" if path else k
            d = _diff(a[k], b[k], f"{path}.{k}" if path else k)
            if d:
                return d
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            d = _diff(x, y, f"{path}[{i}]")
            if d:
                return d
        return None
    return None if json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True) else path


def _at(d: Any, path: str) -> Any:
    cur = d
    for part in path.replace("[", ".[").split("."):
        if not part:
            continue
        if part.startswith("["):
            i = int(part[1:-1])
            cur = cur[i] if isinstance(cur, list) and i < len(cur) else None
        else:
            cur = cur.get(part) if isinstance(cur, dict) else None
    return cur


def _knob_change_ok(old: Any, new: Any) -> bool:
    """A changed knob is acceptable unless a choice list or the kind of distribution changed."""
    if old is None or new is None:
        return True  # added or dropped
    if "const" in old or "const" in new:
        return "const" in old and "const" in new or ("choice" not in old and "choice" not in new)
    kind = lambda k: next(x for x in ("choice", "int", "float") if x in k)  # noqa: E731
    if kind(old) != kind(new):
        return False
    return kind(old) != "choice" or old["choice"] == new["choice"]


def _knobs(d: dict[str, Any]) -> dict[str, Any]:
    """Every knob of a definition's space by its parameter name (as the samplers see it)."""
    sp = d.get("space") or {}
    out = dict(sp.get("knobs") or {})
    out.update({f"lite.{k}": v for k, v in (sp.get("lite") or {}).items()})
    for i, st in enumerate(sp.get("stages") or []):
        out.update({f"stages.{i}.{k}": v for k, v in st.items()})
    return out


def first_difference(stored: dict[str, Any], new: dict[str, Any]) -> tuple[str, Any, Any, bool] | None:
    """``(field, stored value, new value, acceptable with --allow-change)`` of the first difference, or None."""
    if isinstance(stored.get("latency"), dict):  # pinned before a setting existed: it had today's default
        stored = {**stored, "latency": {**_LATENCY_DEFAULTS, **stored["latency"]}}
    for sect in FIXED:
        d = _diff(stored.get(sect), new.get(sect), sect)
        if d:
            if sect == "evaluation" and d == "evaluation.eval_id":  # name the setting, not the hash
                d = _diff({k: v for k, v in (stored.get(sect) or {}).items() if k != "eval_id"},
                          {k: v for k, v in (new.get(sect) or {}).items() if k != "eval_id"}, sect) or d
            return d, _at(stored, d), _at(new, d), False
    d = _diff(stored.get("space"), new.get("space"), "space")
    if not d:
        return None
    old_k, new_k = _knobs(stored), _knobs(new)
    changed = [n for n in list(old_k) + [n for n in new_k if n not in old_k] if old_k.get(n) != new_k.get(n)]
    for n in changed:
        if not _knob_change_ok(old_k.get(n), new_k.get(n)):
            return _field(n), old_k.get(n), new_k.get(n), False
    if changed:
        return _field(changed[0]), old_k.get(changed[0]), new_k.get(changed[0]), True
    return d, _at(stored, d), _at(new, d), True


def _field(param: str) -> str:
    """``stages.1.out`` -> ``space.stages[1].out`` (the field as written in a space file)."""
    parts = param.split(".")
    if parts[0] == "stages" and len(parts) == 3:
        return f"space.stages[{parts[1]}].{parts[2]}"
    return f"space.{param}"
