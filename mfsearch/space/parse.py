"""Parsing a space file: ``load_space(path)`` validates everything up front.

Every problem raises :class:`~mfsearch.errors.InputError` reading ``file:line: field: what is
wrong``; nothing runs before the whole file is valid.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..evaluation.latency import parse_latency
from ..evaluation.settings import parse_evaluation
from ..evaluation.zero_cost import PROXIES
from ..fields import (
    Ctx,
    bool_field,
    choice_field,
    file_field,
    float_field,
    int_field,
    line_of,
    load_yaml,
    mapping_field,
    no_unknown,
    scalar_ok,
    type_name,
)
from ..models import ConfigError, MobileFormerConfig, get_config, list_models
from ..objectives import OBJECTIVES, of_kind
from ..search.engines import ENGINES
from ..search.samplers import SAMPLERS
from .sample import check_space_buildable
from .spec import (
    ARCH_KNOBS,
    DIST_KEYS,
    LITE_KNOBS,
    MAX_TRIALS,
    STAGE_KNOBS,
    Budget,
    Dist,
    Knob,
    Prescreen,
    Search,
    Space,
)


def _dist(ctx: Ctx, v: Any, fld: str) -> Knob:
    """A constant, or a mapping with exactly one of choice / int / float (+ step, log, when)."""
    if not isinstance(v, dict):
        if not scalar_ok(v):
            raise ctx.err(fld, f"must be a value or a distribution mapping ({', '.join(DIST_KEYS)}), "
                          f"got {type_name(v)}")
        return v
    kinds = [k for k in DIST_KEYS if k in v]
    if len(kinds) != 1:
        raise ctx.err(fld, f"a distribution needs exactly one of {', '.join(DIST_KEYS)}")
    no_unknown(ctx, v, {*DIST_KEYS, "step", "log", "when"}, fld)
    kind = kinds[0]
    when: tuple = ()
    if "when" in v:
        w = mapping_field(ctx, v["when"], f"{fld}.when")
        when = tuple((str(k), tuple(x if isinstance(x, list) else [x])) for k, x in w.items())
        for k, vals in when:
            if k not in ARCH_KNOBS:
                raise ctx.err(f"{fld}.when.{k}",
                              f"conditions may name architecture knobs only ({', '.join(ARCH_KNOBS)})")
            if not all(scalar_ok(x) for x in vals):
                raise ctx.err(f"{fld}.when.{k}", "condition values must be plain values")
    if kind == "choice":
        vals = v["choice"]
        if not isinstance(vals, list) or not vals:
            raise ctx.err(f"{fld}.choice", "must be a non-empty list of values")
        if len(vals) > 1000:
            raise ctx.err(f"{fld}.choice", f"has {len(vals)} values; at most 1000")
        if not all(scalar_ok(x) for x in vals):
            raise ctx.err(f"{fld}.choice", "values must be plain numbers, strings or booleans")
        if len({json.dumps(x) for x in vals}) != len(vals):
            raise ctx.err(f"{fld}.choice", "has repeated values")
        if "step" in v or "log" in v:
            raise ctx.err(fld, "step / log apply to int and float ranges, not choice")
        return Dist("choice", tuple(vals), when=when)
    rng = v[kind]
    if not isinstance(rng, list) or len(rng) != 2:
        raise ctx.err(f"{fld}.{kind}", "must be a list [low, high]")
    log = bool_field(ctx, v.get("log", False), f"{fld}.log")
    if kind == "int":
        lo = int_field(ctx, rng[0], f"{fld}.int", -(10**6), 10**6)
        hi = int_field(ctx, rng[1], f"{fld}.int", -(10**6), 10**6)
        step = int_field(ctx, v.get("step", 1), f"{fld}.step", 1, 10**6)
    else:
        lo = float_field(ctx, rng[0], f"{fld}.float", -1e9, 1e9)
        hi = float_field(ctx, rng[1], f"{fld}.float", -1e9, 1e9)
        step = float_field(ctx, v["step"], f"{fld}.step", 1e-9, 1e9) if "step" in v else None
    if lo > hi:
        raise ctx.err(f"{fld}.{kind}", f"low {lo} is above high {hi}")
    if log and (lo <= 0 or (kind == "int" and step != 1) or (kind == "float" and step is not None)):
        raise ctx.err(f"{fld}.log", "a log range needs low > 0 and no step")
    return Dist(kind, (), lo, hi, step, log, when)


def _check_arch_values(ctx: Ctx, base: MobileFormerConfig, knob: str, k: Knob, fld: str) -> None:
    """Each candidate value must be acceptable for its field on its own (interplay is checked per sample)."""
    for value in (k.bounds() if isinstance(k, Dist) else [k]):
        try:
            base.replace(**{knob: value})
        except ConfigError as e:
            if e.field == knob:
                raise ctx.err(fld, f"value {value!r}: {e.rule}") from None
        except TypeError as e:
            raise ctx.err(fld, f"value {value!r}: {e}") from None


def _parse_space(ctx: Ctx, raw: Any, base: MobileFormerConfig) -> tuple[dict, dict | None, tuple | None]:
    d = mapping_field(ctx, raw, "space")
    no_unknown(ctx, d, {*ARCH_KNOBS, "lite", "stages"}, "space")
    knobs: dict[str, Knob] = {}
    for k, v in d.items():
        if k in ("lite", "stages"):
            continue
        fld = f"space.{k}"
        knobs[k] = _dist(ctx, v, fld)
        _check_arch_values(ctx, base, k, knobs[k], fld)
    lite = None
    if "lite" in d:
        ld = mapping_field(ctx, d["lite"], "space.lite")
        no_unknown(ctx, ld, LITE_KNOBS, "space.lite")
        lite = {k: _dist(ctx, v, f"space.lite.{k}") for k, v in ld.items()}
        for k, v in lite.items():
            _check_block_knob(ctx, k, v, f"space.lite.{k}")
    stages = None
    if "stages" in d:
        sl = d["stages"]
        if not isinstance(sl, list) or not sl:
            raise ctx.err("space.stages", "must be a non-empty list of stages")
        if len(sl) > 12:
            raise ctx.err("space.stages", f"has {len(sl)} stages; at most 12")
        parsed = []
        for i, st in enumerate(sl):
            fld = f"space.stages[{i}]"
            sd = mapping_field(ctx, st, fld)
            no_unknown(ctx, sd, STAGE_KNOBS, fld)
            for req in ("out", "depth"):
                if req not in sd:
                    raise ctx.err(f"{fld}.{req}", "is required")
            p = {k: _dist(ctx, v, f"{fld}.{k}") for k, v in sd.items()}
            for k, v in p.items():
                _check_block_knob(ctx, k, v, f"{fld}.{k}")
            parsed.append(p)
        stages = tuple(parsed)
    return knobs, lite, stages


_BLOCK_RULES = {
    "out": (1, 8192, int), "depth": (1, 16, int), "e1": (0.01, 16, float), "stride": (1, 2, int),
    "down_e1": (1, 16, int), "down_e2": (1, 16, int),
}


def _check_block_knob(ctx: Ctx, k: str, v: Knob, fld: str) -> None:
    lo, hi, typ = _BLOCK_RULES[k]
    for value in (v.bounds() if isinstance(v, Dist) else [v]):
        if typ is int and (not isinstance(value, int) or isinstance(value, bool)):
            raise ctx.err(fld, f"value {value!r}: must be an integer")
        if typ is float and (not isinstance(value, (int, float)) or isinstance(value, bool)):
            raise ctx.err(fld, f"value {value!r}: must be a number")
        if not lo <= value <= hi:
            raise ctx.err(fld, f"value {value!r}: must be in [{lo}, {hi}]")
        if k == "stride" and value not in (1, 2):
            raise ctx.err(fld, f"value {value!r}: must be 1 or 2")


def _parse_search(ctx: Ctx, raw: Any) -> Search:
    d = mapping_field(ctx, raw, "search")
    no_unknown(ctx, d, {f.name for f in dataclasses.fields(Search)}, "search")
    kw: dict[str, Any] = {}
    if "engine" in d:
        kw["engine"] = choice_field(ctx, d["engine"], "search.engine", tuple(ENGINES))
    if "sampler" in d:
        kw["sampler"] = choice_field(ctx, d["sampler"], "search.sampler", tuple(SAMPLERS))
    if "trials" in d:
        kw["trials"] = int_field(ctx, d["trials"], "search.trials", 1, MAX_TRIALS)
    if "seed" in d:
        kw["seed"] = int_field(ctx, d["seed"], "search.seed", 0, 2**31 - 1)
    limits = {"max_resample": (1, 10000), "max_failures": (1, 10000), "startup_trials": (0, 10000),
              "population_size": (2, 10000)}
    for k, (lo, hi) in limits.items():
        if k in d:
            kw[k] = int_field(ctx, d[k], f"search.{k}", lo, hi)
    if "address" in d:
        a = d["address"]
        if a is not None and (not isinstance(a, str) or not re.fullmatch(r"auto|local|(ray://)?[\w.-]+:\d+", a)):
            raise ctx.err("search.address", "must be auto, local, host:port or ray://host:port")
        kw["address"] = a
    if "cpus_per_trial" in d:
        kw["cpus_per_trial"] = float_field(ctx, d["cpus_per_trial"], "search.cpus_per_trial", 0.01, 1024)
    if "gpus_per_trial" in d:
        kw["gpus_per_trial"] = float_field(ctx, d["gpus_per_trial"], "search.gpus_per_trial", 0.0, 64)
    if "max_concurrent" in d:
        kw["max_concurrent"] = int_field(ctx, d["max_concurrent"], "search.max_concurrent", 1, 100000, optional=True)
    if "asha" in d:
        kw["asha"] = bool_field(ctx, d["asha"], "search.asha")
    if "workers" in d:
        kw["workers"] = int_field(ctx, d["workers"], "search.workers", 1, 256)
    if "reference_models" in d:
        r = d["reference_models"]
        if isinstance(r, bool):
            kw["reference_models"] = r
        elif isinstance(r, list) and all(isinstance(x, str) for x in r):
            for x in r:
                if x not in list_models():
                    raise ctx.err("search.reference_models", f"unknown model {x!r}; known: {', '.join(list_models())}")
            kw["reference_models"] = tuple(r)
        else:
            raise ctx.err("search.reference_models", "must be true, false or a list of preset names")
    if d.get("confirm") is not None:
        c = mapping_field(ctx, d["confirm"], "search.confirm")
        no_unknown(ctx, c, {"top", "seeds"}, "search.confirm")
        for k in ("top", "seeds"):
            if k not in c:
                raise ctx.err(f"search.confirm.{k}", "missing; write confirm: {top: K, seeds: S} (the K best front "
                              "architectures, each trained stand-alone with S seeds)")
        kw["confirm"] = (int_field(ctx, c["top"], "search.confirm.top", 1, 1000),
                         int_field(ctx, c["seeds"], "search.confirm.seeds", 1, 100))
    return Search(**kw)


def _parse_objectives(ctx: Ctx, raw: Any) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return (("accuracy", "maximize"), ("macs", "minimize"))
    if not isinstance(raw, list) or not raw:
        raise ctx.err("objectives", "must be a non-empty list like [{accuracy: maximize}, {macs: minimize}]")
    out = []
    for i, o in enumerate(raw):
        fld = f"objectives[{i}]"
        if isinstance(o, str):
            o = {o: OBJECTIVES[o].direction if o in OBJECTIVES else ""}
        if not isinstance(o, dict) or len(o) != 1:
            raise ctx.err(fld, "must be a one-key mapping {metric: maximize|minimize}")
        (name, direction), = o.items()
        choice_field(ctx, name, fld, tuple(OBJECTIVES))
        if direction != OBJECTIVES[name].direction:
            raise ctx.err(fld, f"{name} can only be {OBJECTIVES[name].direction}d")
        out.append((name, direction))
    if len({n for n, _ in out}) != len(out):
        raise ctx.err("objectives", "lists a metric twice")
    kinds = {OBJECTIVES[n].kind for n, _ in out}
    zero_cost = ", ".join(of_kind("zero_cost"))
    if not kinds & {"trained", "zero_cost"}:
        raise ctx.err("objectives", f"must include accuracy or a zero-cost proxy ({zero_cost}): a search needs a "
                      "score that predicts accuracy")
    if {"trained", "zero_cost"} <= kinds:
        raise ctx.err("objectives", "a zero-cost proxy stands in for accuracy; to screen candidates before "
                      "training use a prescreen: section instead")
    return tuple(out)


def _parse_prescreen(ctx: Ctx, raw: Any) -> Prescreen | None:
    if raw is None or raw is False:
        return None
    d = mapping_field(ctx, raw, "prescreen")
    no_unknown(ctx, d, {"proxy", "candidates", "batch_size"}, "prescreen")
    if "proxy" not in d:
        raise ctx.err("prescreen.proxy", "is required: one of " + ", ".join(PROXIES))
    proxy = choice_field(ctx, d["proxy"], "prescreen.proxy", PROXIES)
    cands = int_field(ctx, d.get("candidates", 8), "prescreen.candidates", 1, 10000)
    bs = int_field(ctx, d.get("batch_size", 64), "prescreen.batch_size", 2, 4096)
    return Prescreen(proxy, cands, bs)


def _parse_budget(ctx: Ctx, raw: Any) -> Budget:
    d = mapping_field(ctx, raw, "budget")
    no_unknown(ctx, d, {"macs", "params", "input_size", "latency_ms"}, "budget")
    macs = int_field(ctx, d.get("macs"), "budget.macs", 1, 10**13, optional=True)
    params = int_field(ctx, d.get("params"), "budget.params", 1, 10**11, optional=True)
    size = int_field(ctx, d.get("input_size", 224), "budget.input_size", 8, 4096)
    lat = None if d.get("latency_ms") is None else float_field(ctx, d["latency_ms"], "budget.latency_ms", 1e-3, 1e7)
    return Budget(macs, params, size, lat)


def _parse_storage(ctx: Ctx, raw: Any) -> str | None:
    if raw is None or raw == "default":
        return None
    if not isinstance(raw, str) or not raw.strip():
        raise ctx.err("storage", "must be a storage URL string (or default)")
    known = r"^(journal:|sqlite:///|postgresql(\+\w+)?://|mysql(\+\w+)?://)"
    if ("://" in raw or raw.startswith(("journal", "sqlite"))) and not re.match(known, raw) or \
            not re.match(r"^[\w./~:+@%-]", raw):
        raise ctx.err("storage", "must be journal:<file>, sqlite:///<file>, postgresql://... or a file path")
    return raw


def parse_name(ctx: Ctx, data: dict, path: str | Path) -> str:
    """The ``name`` field (default: the file's stem); it names a run directory."""
    name = data.get("name", Path(path).stem)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
        raise ctx.err("name", "must be 1-64 letters, digits, '_', '.', '-' (it names the run directory)")
    return name


def parse_base(ctx: Ctx, data: dict) -> str:
    """The ``base`` preset (default mobile_former_294m)."""
    base = data.get("base", "mobile_former_294m")
    if base not in list_models():
        raise ctx.err("base", f"unknown preset {base!r}; known: {', '.join(list_models())}")
    return base


def space_from_data(data: Any, path: str | Path, lines: dict[str, int]) -> Space:
    ctx = Ctx(path, lines)
    if not isinstance(data, dict):
        raise ctx.err("file", f"a space file must be a mapping at the top level, got {type_name(data)}")
    top = ("name", "description", "base", "space", "budget", "objectives", "evaluation", "search", "storage",
           "latency", "prescreen", "oneshot")
    no_unknown(ctx, data, top, "")
    name = parse_name(ctx, data, path)
    desc = data.get("description", "")
    if not isinstance(desc, str):
        raise ctx.err("description", "must be text")
    base = parse_base(ctx, data)
    base_cfg = get_config(base)
    knobs, lite, stages = _parse_space(ctx, data.get("space"), base_cfg)
    budget = _parse_budget(ctx, data.get("budget"))
    objectives = _parse_objectives(ctx, data.get("objectives"))
    evaluation = parse_evaluation(ctx, data.get("evaluation"))
    search = _parse_search(ctx, data.get("search"))
    if search.sampler in ("grid", "bruteforce"):
        for k, v in _all_knobs(knobs, lite, stages):
            if isinstance(v, Dist) and v.kind == "float" and v.step is None:
                raise ctx.err(k, "grid search needs discrete knobs: give this float range a step")
    storage = _parse_storage(ctx, data.get("storage"))
    latency = parse_latency(ctx, data.get("latency"))
    prescreen = _parse_prescreen(ctx, data.get("prescreen"))
    if "oneshot" in data:  # validated up front; read by mfsearch.oneshot
        from ..evaluation.strategies import parse_oneshot

        parse_oneshot(data["oneshot"], path, lines)
    trains = any(OBJECTIVES[n].kind == "trained" for n, _ in objectives)
    timed_budget = budget.latency_ms is not None and latency.source == "measured"
    if search.engine == "ray" and (timed_budget or prescreen is not None or not trains):
        raise ctx.err("search.engine", "ray schedules trained trials only: a measured latency budget, a prescreen "
                      "or a zero-cost objective needs engine: optuna (a predicted latency budget works with ray)")
    if prescreen is not None and not trains:
        raise ctx.err("prescreen", "screens candidates before training; with a zero-cost objective nothing is trained")
    if search.confirm is not None and not trains:
        raise ctx.err("search.confirm", "trains the front stand-alone, but this search has no training data (its "
                      "objectives are zero-cost scores, so nothing is trained); add accuracy to the objectives or "
                      "drop the confirm: block")
    if evaluation.strategy == "oneshot":
        if not trains:
            raise ctx.err("evaluation.strategy", "oneshot scores accuracy with a supernet; with a zero-cost objective "
                          "nothing is scored by it: add accuracy to the objectives or drop the strategy")
        if search.engine == "ray":
            raise ctx.err("evaluation.strategy", "oneshot runs on the optuna engine only (its trials take about a "
                          "second, less than a Ray task costs to schedule); use search.engine: optuna")
        if prescreen is not None:
            raise ctx.err("prescreen", "screens candidates before training; one-shot scoring is about as cheap as "
                          "the screen: drop the prescreen: section")
    space = Space(name, base, knobs, lite, stages, budget, objectives, evaluation, search, storage,
                  str(path), desc, data, latency, prescreen)
    problem = check_space_buildable(space)
    if problem:
        raise ctx.err(*problem)
    if evaluation.strategy == "oneshot":  # every knob that varies must share weights
        from ..oneshot.skeleton import check_shareable

        check_shareable(space)
    return space


def _all_knobs(knobs: dict, lite: dict | None, stages: tuple | None) -> list[tuple[str, Knob]]:
    out = [(f"space.{k}", v) for k, v in knobs.items()]
    out += [(f"space.lite.{k}", v) for k, v in (lite or {}).items()]
    for i, st in enumerate(stages or ()):
        out += [(f"space.stages[{i}].{k}", v) for k, v in st.items()]
    return out


def read_space_data(path: str | Path) -> tuple[Any, dict[str, int]]:
    """A space file's data and line numbers, with ``extends: other.yaml`` resolved (see :func:`_read_space_data`)."""
    data, lines, _ = _read_space_data(path)
    return data, lines


def _read_space_data(path: str | Path) -> tuple[Any, dict[str, int], tuple[Path, dict[str, int], set[str]] | None]:
    """A space file's data and line numbers, with ``extends: other.yaml`` resolved.

    ``extends`` names another space file (relative to this one), validated as a space of its own; this
    file's top-level sections replace the other's whole (typically ``name``, ``budget``, ``search``), the
    rest is inherited. Several searches then share one definition: at other budgets, one-shot spaces
    that extend the same file share one supernet. One level only, and the result is what a study stores.
    """
    data, lines = load_yaml(path)
    if not isinstance(data, dict) or "extends" not in data:
        return data, lines, None
    ctx = Ctx(path, lines)
    other = file_field(ctx, data["extends"], "extends", "another space file", "span_oneshot.yaml")
    try:
        base, base_lines = load_yaml(other)
    except InputError as e:
        raise ctx.err("extends", str(e)) from None
    if not isinstance(base, dict):
        raise ctx.err("extends", f"{other} is not a space file (not a mapping at the top level)")
    if "extends" in base:
        raise ctx.err("extends", f"{other} extends another file too; extend that file here (one level only)")
    space_from_data(base, other, base_lines)  # its own mistakes are reported against its own lines
    merged = {**base, **{k: v for k, v in data.items() if k != "extends"}}
    ev = merged.get("evaluation")
    if "evaluation" not in data and isinstance(ev, dict) and isinstance(ev.get("from"), str):
        src_ev = Path(ev["from"]).expanduser()  # relative to the other file: say it relative to this one
        if not src_ev.is_absolute():
            merged["evaluation"] = {**ev, "from": os.path.relpath(other.parent / src_ev, Path(path).parent)}
    return merged, lines, (other, base_lines, {k for k in base if k not in data})


def load_space(path: str | Path) -> Space:
    """Load and validate a space file; errors are one :class:`InputError` line."""
    data, lines, base = _read_space_data(path)
    try:
        return space_from_data(data, path, lines)
    except InputError as e:
        raise _where_inherited(e, path, base) from None


def _where_inherited(e: InputError, path: str | Path, base: tuple[Path, dict[str, int], set[str]] | None) -> InputError:
    """An error about a field this file inherits through ``extends:`` points at the file and line it comes from."""
    if base is None:
        return e
    other, base_lines, inherited = base
    m = re.match(rf"{re.escape(str(path))}(?::\d+)?: ([^:\s]+): (.*)$", str(e), re.S)
    if not m:
        return e
    fld, rule = m.groups()
    section = re.split(r"[.\[]", fld, maxsplit=1)[0]
    if section not in inherited:
        return e
    line = line_of(base_lines, fld)
    return InputError(f"{other}{f':{line}' if line else ''}: {fld}: {rule} (inherited by {path} through extends:)")


__all__ = ["load_space", "parse_base", "parse_name", "read_space_data", "space_from_data"]
