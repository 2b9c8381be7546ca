"""Space files: the YAML that declares a search (knobs, budget, objectives, evaluation, search, storage).

``load_space(path)`` validates everything up front and raises :class:`~mfsearch.yamlio.InputError`
reading ``file:line: field: what is wrong``; nothing is run before the whole file is valid.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..latency import LatencySettings
from ..models import ConfigError, MobileFormerConfig, get_config, list_models
from ..yamlio import InputError, load_yaml, located

# ----------------------------------------------------------------------------- knobs

#: Top-level architecture knobs a space may vary (every field but the block list).
ARCH_KNOBS = tuple(
    f.name for f in dataclasses.fields(MobileFormerConfig) if f.name not in ("blocks", "name", "num_classes")
)
LITE_KNOBS = ("out", "e1", "stride")
STAGE_KNOBS = ("out", "depth", "e1", "stride", "down_e1", "down_e2")
DIST_KEYS = ("choice", "int", "float")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # auto: bf16 autocast on CUDA, fp32 elsewhere
ZERO_COST = ("synflow", "grad_norm", "snip", "jacob_cov", "naswot")  # mfsearch.evaluation.zero_cost
#: metric -> direction; the record key of each is the metric name, except latency (``latency_ms``)
OBJECTIVES = {"accuracy": "maximize", "macs": "minimize", "params": "minimize", "latency": "minimize",
              **{z: "maximize" for z in ZERO_COST}}
RECORD_KEY = {"latency": "latency_ms"}
RUNTIMES = ("auto", "jit", "eager", "compile")
SAMPLERS = ("random", "tpe", "nsga2", "grid", "bruteforce")
ENGINES = ("optuna", "ray")
DATASETS = ("fashion_mnist", "cifar10", "cifar100", "imagefolder")
MAX_TRIALS = 100_000


@dataclass(frozen=True)
class Dist:
    """A knob's distribution: categorical ``choice``, or an ``int`` / ``float`` range."""

    kind: str
    values: tuple = ()
    low: float = 0
    high: float = 0
    step: float | None = None
    log: bool = False
    when: tuple[tuple[str, tuple], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {self.kind: list(self.values) if self.kind == "choice" else [self.low, self.high]}
        if self.step is not None:
            d["step"] = self.step
        if self.log:
            d["log"] = True
        if self.when:
            d["when"] = {k: list(v) for k, v in self.when}
        return d

    def bounds(self) -> list:
        return list(self.values) if self.kind == "choice" else [self.low, self.high]


Knob = Any  # a constant or a Dist


@dataclass(frozen=True)
class Evaluation:
    """Proxy-training settings (see :mod:`mfsearch.evaluation.train`)."""

    dataset: str = "fashion_mnist"
    data_root: str | None = None
    image_size: int = 32
    channels: int = 3
    epochs: int = 2
    train_size: int | None = 5000
    val_size: int = 2000
    batch_size: int = 128
    eval_batch_size: int = 512
    lr: float = 2e-3
    min_lr: float = 1e-5
    warmup_epochs: float = 0.3
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    augment: bool = True
    bn_recalibration: int = 8
    seed: int = 0
    threads: int | None = None
    device: str = "cpu"
    precision: str = "auto"
    compile: bool = False
    cuda_graphs: bool = True  # on CUDA, replay each full training step as one captured graph

    def eval_id(self) -> str:
        """Hash of the settings that change results (not where the data lies, threads, device, compile, graphs)."""
        d = dataclasses.asdict(self)
        for k in ("data_root", "threads", "device", "compile", "cuda_graphs"):
            d.pop(k)
        if d["precision"] == "auto":  # ids from before the setting existed stay valid
            d.pop("precision")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Search:
    engine: str = "optuna"
    sampler: str = "tpe"
    trials: int = 20
    seed: int = 0
    reference_models: tuple[str, ...] | bool = True
    max_resample: int = 64
    max_failures: int = 5
    startup_trials: int = 8
    population_size: int = 8
    address: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int | None = None
    asha: bool = True
    workers: int = 1  # Optuna engine: processes sharing the study on this machine (--workers overrides)


@dataclass(frozen=True)
class Budget:
    macs: int | None = None
    params: int | None = None
    input_size: int = 224
    latency_ms: float | None = None  # measured with the space's ``latency`` settings


@dataclass(frozen=True)
class Prescreen:
    """Multi-fidelity: score ``candidates`` feasible samples with a zero-cost proxy, train the best."""

    proxy: str
    candidates: int = 8
    batch_size: int = 64


@dataclass(frozen=True)
class Space:
    """A validated space file."""

    name: str
    base: str
    knobs: dict[str, Knob]
    lite: dict[str, Knob] | None
    stages: tuple[dict[str, Knob], ...] | None
    budget: Budget
    objectives: tuple[tuple[str, str], ...]
    evaluation: Evaluation
    search: Search
    storage: str | None
    path: str = ""
    description: str = ""
    raw: dict = field(default_factory=dict, compare=False, repr=False)
    latency: LatencySettings = field(default_factory=LatencySettings)
    prescreen: Prescreen | None = None

    @property
    def trains(self) -> bool:
        """Whether trials are trained (accuracy is an objective) or only scored at initialisation."""
        return any(n == "accuracy" for n, _ in self.objectives)

    @property
    def needs_latency(self) -> bool:
        return self.budget.latency_ms is not None or any(n == "latency" for n, _ in self.objectives)

    @property
    def base_config(self) -> MobileFormerConfig:
        return get_config(self.base)

    def reference_names(self) -> list[str]:
        """Paper models to evaluate as reference points (those under the budget)."""
        from .sample import within_budget

        refs = self.search.reference_models
        names = list_models() if refs is True else ([] if refs is False else list(refs))
        return [n for n in names if within_budget(get_config(n), self.budget)[0]]

    def with_overrides(self, **search: Any) -> Space:
        """A copy with some ``search`` fields replaced (CLI flags)."""
        s = dataclasses.replace(self.search, **{k: v for k, v in search.items() if v is not None})
        return dataclasses.replace(self, search=s)


# ----------------------------------------------------------------------------- parsing


class _Ctx:
    def __init__(self, path: str | Path, lines: dict[str, int]) -> None:
        self.path, self.lines = path, lines

    def err(self, fld: str, rule: str) -> InputError:
        return located(self.path, self.lines, fld, rule)


def _type_name(v: Any) -> str:
    return "a list" if isinstance(v, list) else "a mapping" if isinstance(v, dict) else type(v).__name__


def _mapping(ctx: _Ctx, v: Any, fld: str) -> dict:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise ctx.err(fld, f"must be a mapping, got {_type_name(v)}")
    return v


def _no_unknown(ctx: _Ctx, d: dict, known: tuple | set, fld: str) -> None:
    for k in d:
        if k not in known:
            prefix = f"{fld}." if fld else ""
            raise ctx.err(f"{prefix}{k}", f"unknown key; known keys are {', '.join(sorted(known))}")


def _int(ctx: _Ctx, v: Any, fld: str, lo: int, hi: int, optional: bool = False) -> int | None:
    if v is None and optional:
        return None
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if not isinstance(v, int) or isinstance(v, bool):
        raise ctx.err(fld, f"must be an integer, got {v!r}")
    if not lo <= v <= hi:
        raise ctx.err(fld, f"must be in [{lo}, {hi}], got {v}")
    return v


def _float(ctx: _Ctx, v: Any, fld: str, lo: float, hi: float) -> float:
    if isinstance(v, str):
        try:
            v = float(v)
        except ValueError:
            raise ctx.err(fld, f"must be a number, got {v!r}") from None
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
        raise ctx.err(fld, f"must be a number, got {v!r}")
    if not lo <= v <= hi:
        raise ctx.err(fld, f"must be in [{lo:g}, {hi:g}], got {v:g}")
    return float(v)


def _bool(ctx: _Ctx, v: Any, fld: str) -> bool:
    if not isinstance(v, bool):
        raise ctx.err(fld, f"must be true or false, got {v!r}")
    return v


def _choice(ctx: _Ctx, v: Any, fld: str, choices: tuple) -> str:
    if v not in choices:
        raise ctx.err(fld, f"unknown value {v!r}; choose one of {', '.join(choices)}")
    return v


def _scalar_ok(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


def _dist(ctx: _Ctx, v: Any, fld: str) -> Knob:
    """A constant, or a mapping with exactly one of choice / int / float (+ step, log, when)."""
    if not isinstance(v, dict):
        if not _scalar_ok(v):
            raise ctx.err(fld, f"must be a value or a distribution mapping ({', '.join(DIST_KEYS)}), "
                          f"got {_type_name(v)}")
        return v
    kinds = [k for k in DIST_KEYS if k in v]
    if len(kinds) != 1:
        raise ctx.err(fld, f"a distribution needs exactly one of {', '.join(DIST_KEYS)}")
    _no_unknown(ctx, v, {*DIST_KEYS, "step", "log", "when"}, fld)
    kind = kinds[0]
    when: tuple = ()
    if "when" in v:
        w = _mapping(ctx, v["when"], f"{fld}.when")
        when = tuple((str(k), tuple(x if isinstance(x, list) else [x])) for k, x in w.items())
        for k, vals in when:
            if k not in ARCH_KNOBS:
                raise ctx.err(f"{fld}.when.{k}",
                              f"conditions may name architecture knobs only ({', '.join(ARCH_KNOBS)})")
            if not all(_scalar_ok(x) for x in vals):
                raise ctx.err(f"{fld}.when.{k}", "condition values must be plain values")
    if kind == "choice":
        vals = v["choice"]
        if not isinstance(vals, list) or not vals:
            raise ctx.err(f"{fld}.choice", "must be a non-empty list of values")
        if len(vals) > 1000:
            raise ctx.err(f"{fld}.choice", f"has {len(vals)} values; at most 1000")
        if not all(_scalar_ok(x) for x in vals):
            raise ctx.err(f"{fld}.choice", "values must be plain numbers, strings or booleans")
        if len({json.dumps(x) for x in vals}) != len(vals):
            raise ctx.err(f"{fld}.choice", "has repeated values")
        if "step" in v or "log" in v:
            raise ctx.err(fld, "step / log apply to int and float ranges, not choice")
        return Dist("choice", tuple(vals), when=when)
    rng = v[kind]
    if not isinstance(rng, list) or len(rng) != 2:
        raise ctx.err(f"{fld}.{kind}", "must be a list [low, high]")
    log = _bool(ctx, v.get("log", False), f"{fld}.log")
    if kind == "int":
        lo = _int(ctx, rng[0], f"{fld}.int", -(10**6), 10**6)
        hi = _int(ctx, rng[1], f"{fld}.int", -(10**6), 10**6)
        step = _int(ctx, v.get("step", 1), f"{fld}.step", 1, 10**6)
    else:
        lo = _float(ctx, rng[0], f"{fld}.float", -1e9, 1e9)
        hi = _float(ctx, rng[1], f"{fld}.float", -1e9, 1e9)
        step = _float(ctx, v["step"], f"{fld}.step", 1e-9, 1e9) if "step" in v else None
    if lo > hi:
        raise ctx.err(f"{fld}.{kind}", f"low {lo} is above high {hi}")
    if log and (lo <= 0 or (kind == "int" and step != 1) or (kind == "float" and step is not None)):
        raise ctx.err(f"{fld}.log", "a log range needs low > 0 and no step")
    return Dist(kind, (), lo, hi, step, log, when)


def _check_arch_values(ctx: _Ctx, base: MobileFormerConfig, knob: str, k: Knob, fld: str) -> None:
    """Each candidate value must be acceptable for its field on its own (interplay is checked per sample)."""
    for value in (k.bounds() if isinstance(k, Dist) else [k]):
        try:
            base.replace(**{knob: value})
        except ConfigError as e:
            if e.field == knob:
                raise ctx.err(fld, f"value {value!r}: {e.rule}") from None
        except TypeError as e:
            raise ctx.err(fld, f"value {value!r}: {e}") from None


def _parse_space(ctx: _Ctx, raw: Any, base: MobileFormerConfig) -> tuple[dict, dict | None, tuple | None]:
    d = _mapping(ctx, raw, "space")
    _no_unknown(ctx, d, {*ARCH_KNOBS, "lite", "stages"}, "space")
    knobs: dict[str, Knob] = {}
    for k, v in d.items():
        if k in ("lite", "stages"):
            continue
        fld = f"space.{k}"
        knobs[k] = _dist(ctx, v, fld)
        _check_arch_values(ctx, base, k, knobs[k], fld)
    lite = None
    if "lite" in d:
        ld = _mapping(ctx, d["lite"], "space.lite")
        _no_unknown(ctx, ld, LITE_KNOBS, "space.lite")
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
            sd = _mapping(ctx, st, fld)
            _no_unknown(ctx, sd, STAGE_KNOBS, fld)
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


def _check_block_knob(ctx: _Ctx, k: str, v: Knob, fld: str) -> None:
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


def _parse_evaluation(ctx: _Ctx, raw: Any) -> Evaluation:
    d = _mapping(ctx, raw, "evaluation")
    known = {f.name for f in dataclasses.fields(Evaluation)}
    _no_unknown(ctx, d, known, "evaluation")
    e = Evaluation()
    f = "evaluation."
    kw: dict[str, Any] = {}
    if "dataset" in d:
        kw["dataset"] = _choice(ctx, d["dataset"], f + "dataset", DATASETS)
    if "data_root" in d:
        if d["data_root"] is not None and not isinstance(d["data_root"], str):
            raise ctx.err(f + "data_root", "must be a path string")
        kw["data_root"] = d["data_root"]
    ints = {"image_size": (8, 512), "channels": (1, 3), "epochs": (1, 1000), "val_size": (10, 10**7),
            "batch_size": (2, 65536), "eval_batch_size": (1, 65536), "seed": (0, 2**31 - 1),
            "bn_recalibration": (0, 10000)}
    for k, (lo, hi) in ints.items():
        if k in d:
            kw[k] = _int(ctx, d[k], f + k, lo, hi)
    if kw.get("channels", e.channels) != 3:
        raise ctx.err(f + "channels", "must be 3: the models take RGB input (grey images are replicated)")
    if "train_size" in d:
        kw["train_size"] = _int(ctx, d["train_size"], f + "train_size", 10, 10**8, optional=True)
    if "threads" in d:
        kw["threads"] = _int(ctx, d["threads"], f + "threads", 1, 1024, optional=True)
    floats = {"lr": (1e-7, 1e6), "min_lr": (0.0, 10.0), "warmup_epochs": (0.0, 1000.0),
              "weight_decay": (0.0, 10.0), "label_smoothing": (0.0, 0.99)}
    for k, (lo, hi) in floats.items():
        if k in d:
            kw[k] = _float(ctx, d[k], f + k, lo, hi)
    if "augment" in d:
        kw["augment"] = _bool(ctx, d["augment"], f + "augment")
    if "device" in d:
        dev = d["device"]
        if not isinstance(dev, str) or not re.fullmatch(r"cpu|cuda(:\d+)?|mps|auto", dev):
            raise ctx.err(f + "device", f"must be cpu, cuda, cuda:N, mps or auto, got {dev!r}")
        kw["device"] = dev
    if "precision" in d:
        kw["precision"] = _choice(ctx, d["precision"], f + "precision", PRECISIONS)
    if "compile" in d:
        kw["compile"] = _bool(ctx, d["compile"], f + "compile")
    if "cuda_graphs" in d:
        kw["cuda_graphs"] = _bool(ctx, d["cuda_graphs"], f + "cuda_graphs")
    return dataclasses.replace(e, **kw)


def _parse_search(ctx: _Ctx, raw: Any) -> Search:
    d = _mapping(ctx, raw, "search")
    _no_unknown(ctx, d, {f.name for f in dataclasses.fields(Search)}, "search")
    kw: dict[str, Any] = {}
    if "engine" in d:
        kw["engine"] = _choice(ctx, d["engine"], "search.engine", ENGINES)
    if "sampler" in d:
        kw["sampler"] = _choice(ctx, d["sampler"], "search.sampler", SAMPLERS)
    if "trials" in d:
        kw["trials"] = _int(ctx, d["trials"], "search.trials", 1, MAX_TRIALS)
    if "seed" in d:
        kw["seed"] = _int(ctx, d["seed"], "search.seed", 0, 2**31 - 1)
    limits = {"max_resample": (1, 10000), "max_failures": (1, 10000), "startup_trials": (0, 10000),
              "population_size": (2, 10000)}
    for k, (lo, hi) in limits.items():
        if k in d:
            kw[k] = _int(ctx, d[k], f"search.{k}", lo, hi)
    if "address" in d:
        a = d["address"]
        if a is not None and (not isinstance(a, str) or not re.fullmatch(r"auto|local|(ray://)?[\w.-]+:\d+", a)):
            raise ctx.err("search.address", "must be auto, local, host:port or ray://host:port")
        kw["address"] = a
    if "cpus_per_trial" in d:
        kw["cpus_per_trial"] = _float(ctx, d["cpus_per_trial"], "search.cpus_per_trial", 0.01, 1024)
    if "gpus_per_trial" in d:
        kw["gpus_per_trial"] = _float(ctx, d["gpus_per_trial"], "search.gpus_per_trial", 0.0, 64)
    if "max_concurrent" in d:
        kw["max_concurrent"] = _int(ctx, d["max_concurrent"], "search.max_concurrent", 1, 100000, optional=True)
    if "asha" in d:
        kw["asha"] = _bool(ctx, d["asha"], "search.asha")
    if "workers" in d:
        kw["workers"] = _int(ctx, d["workers"], "search.workers", 1, 256)
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
    return Search(**kw)


def _parse_objectives(ctx: _Ctx, raw: Any) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return (("accuracy", "maximize"), ("macs", "minimize"))
    if not isinstance(raw, list) or not raw:
        raise ctx.err("objectives", "must be a non-empty list like [{accuracy: maximize}, {macs: minimize}]")
    out = []
    for i, o in enumerate(raw):
        fld = f"objectives[{i}]"
        if isinstance(o, str):
            o = {o: OBJECTIVES.get(o, "")}
        if not isinstance(o, dict) or len(o) != 1:
            raise ctx.err(fld, "must be a one-key mapping {metric: maximize|minimize}")
        (name, direction), = o.items()
        _choice(ctx, name, fld, tuple(OBJECTIVES))
        if direction != OBJECTIVES[name]:
            raise ctx.err(fld, f"{name} can only be {OBJECTIVES[name]}d")
        out.append((name, direction))
    if len({n for n, _ in out}) != len(out):
        raise ctx.err("objectives", "lists a metric twice")
    names = {n for n, _ in out}
    if "accuracy" not in names and not names & set(ZERO_COST):
        raise ctx.err("objectives", "must include accuracy or a zero-cost proxy (" + ", ".join(ZERO_COST)
                      + "): a search needs a score that predicts accuracy")
    if "accuracy" in names and names & set(ZERO_COST):
        raise ctx.err("objectives", "a zero-cost proxy stands in for accuracy; to screen candidates before "
                      "training use a prescreen: section instead")
    return tuple(out)


def _parse_latency(ctx: _Ctx, raw: Any) -> LatencySettings:
    d = _mapping(ctx, raw, "latency")
    _no_unknown(ctx, d, {f.name for f in dataclasses.fields(LatencySettings)}, "latency")
    kw: dict[str, Any] = {}
    if "device" in d:
        dev = d["device"]
        if not isinstance(dev, str) or not re.fullmatch(r"cpu|cuda(:\d+)?|auto", dev):
            raise ctx.err("latency.device", f"must be cpu, cuda, cuda:N or auto, got {dev!r}")
        kw["device"] = dev
    if "threads" in d:
        kw["threads"] = _int(ctx, d["threads"], "latency.threads", 1, 1024, optional=True)
    if "runtime" in d:
        kw["runtime"] = _choice(ctx, d["runtime"], "latency.runtime", RUNTIMES)
    for k, (lo, hi) in {"input_size": (8, 4096), "batch": (1, 4096), "warmup": (0, 10000),
                        "runs": (1, 100000)}.items():
        if k in d:
            kw[k] = _int(ctx, d[k], f"latency.{k}", lo, hi)
    return LatencySettings(**kw)


def _parse_prescreen(ctx: _Ctx, raw: Any) -> Prescreen | None:
    if raw is None or raw is False:
        return None
    d = _mapping(ctx, raw, "prescreen")
    _no_unknown(ctx, d, {"proxy", "candidates", "batch_size"}, "prescreen")
    if "proxy" not in d:
        raise ctx.err("prescreen.proxy", "is required: one of " + ", ".join((*ZERO_COST, "params", "macs")))
    proxy = _choice(ctx, d["proxy"], "prescreen.proxy", (*ZERO_COST, "params", "macs"))
    cands = _int(ctx, d.get("candidates", 8), "prescreen.candidates", 1, 10000)
    bs = _int(ctx, d.get("batch_size", 64), "prescreen.batch_size", 2, 4096)
    return Prescreen(proxy, cands, bs)


def _parse_budget(ctx: _Ctx, raw: Any) -> Budget:
    d = _mapping(ctx, raw, "budget")
    _no_unknown(ctx, d, {"macs", "params", "input_size", "latency_ms"}, "budget")
    macs = _int(ctx, d.get("macs"), "budget.macs", 1, 10**13, optional=True)
    params = _int(ctx, d.get("params"), "budget.params", 1, 10**11, optional=True)
    size = _int(ctx, d.get("input_size", 224), "budget.input_size", 8, 4096)
    lat = None if d.get("latency_ms") is None else _float(ctx, d["latency_ms"], "budget.latency_ms", 1e-3, 1e7)
    return Budget(macs, params, size, lat)


def _parse_storage(ctx: _Ctx, raw: Any) -> str | None:
    if raw is None or raw == "default":
        return None
    if not isinstance(raw, str) or not raw.strip():
        raise ctx.err("storage", "must be a storage URL string (or default)")
    known = r"^(journal:|sqlite:///|postgresql(\+\w+)?://|mysql(\+\w+)?://)"
    if ("://" in raw or raw.startswith(("journal", "sqlite"))) and not re.match(known, raw) or \
            not re.match(r"^[\w./~:+@%-]", raw):
        raise ctx.err("storage", "must be journal:<file>, sqlite:///<file>, postgresql://... or a file path")
    return raw


def parse_name(ctx: _Ctx, data: dict, path: str | Path) -> str:
    """The ``name`` field (default: the file's stem); it names a run directory."""
    name = data.get("name", Path(path).stem)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
        raise ctx.err("name", "must be 1-64 letters, digits, '_', '.', '-' (it names the run directory)")
    return name


def parse_base(ctx: _Ctx, data: dict) -> str:
    """The ``base`` preset (default mobile_former_294m)."""
    base = data.get("base", "mobile_former_294m")
    if base not in list_models():
        raise ctx.err("base", f"unknown preset {base!r}; known: {', '.join(list_models())}")
    return base


def space_from_data(data: Any, path: str | Path, lines: dict[str, int]) -> Space:
    ctx = _Ctx(path, lines)
    if not isinstance(data, dict):
        raise ctx.err("file", f"a space file must be a mapping at the top level, got {_type_name(data)}")
    top = ("name", "description", "base", "space", "budget", "objectives", "evaluation", "search", "storage",
           "latency", "prescreen", "oneshot")
    _no_unknown(ctx, data, top, "")
    name = parse_name(ctx, data, path)
    desc = data.get("description", "")
    if not isinstance(desc, str):
        raise ctx.err("description", "must be text")
    base = parse_base(ctx, data)
    base_cfg = get_config(base)
    knobs, lite, stages = _parse_space(ctx, data.get("space"), base_cfg)
    budget = _parse_budget(ctx, data.get("budget"))
    objectives = _parse_objectives(ctx, data.get("objectives"))
    evaluation = _parse_evaluation(ctx, data.get("evaluation"))
    search = _parse_search(ctx, data.get("search"))
    if search.sampler in ("grid", "bruteforce"):
        for k, v in _all_knobs(knobs, lite, stages):
            if isinstance(v, Dist) and v.kind == "float" and v.step is None:
                raise ctx.err(k, "grid search needs discrete knobs: give this float range a step")
    storage = _parse_storage(ctx, data.get("storage"))
    latency = _parse_latency(ctx, data.get("latency"))
    prescreen = _parse_prescreen(ctx, data.get("prescreen"))
    if "oneshot" in data:  # validated up front; read by mfsearch.oneshot
        from ..oneshot.settings import parse_oneshot

        parse_oneshot(data["oneshot"], path, lines)
    if search.engine == "ray" and (budget.latency_ms is not None or prescreen is not None
                                   or not any(n == "accuracy" for n, _ in objectives)):
        raise ctx.err("search.engine", "ray schedules trained trials only: a latency budget, a prescreen or a "
                      "zero-cost objective needs engine: optuna")
    if prescreen is not None and not any(n == "accuracy" for n, _ in objectives):
        raise ctx.err("prescreen", "screens candidates before training; with a zero-cost objective nothing is trained")
    space = Space(name, base, knobs, lite, stages, budget, objectives, evaluation, search, storage,
                  str(path), desc, data, latency, prescreen)
    from .sample import check_space_buildable

    problem = check_space_buildable(space)
    if problem:
        raise ctx.err(*problem)
    return space


def _all_knobs(knobs: dict, lite: dict | None, stages: tuple | None) -> list[tuple[str, Knob]]:
    out = [(f"space.{k}", v) for k, v in knobs.items()]
    out += [(f"space.lite.{k}", v) for k, v in (lite or {}).items()]
    for i, st in enumerate(stages or ()):
        out += [(f"space.stages[{i}].{k}", v) for k, v in st.items()]
    return out


def load_space(path: str | Path) -> Space:
    """Load and validate a space file; errors are one :class:`InputError` line."""
    data, lines = load_yaml(path)
    return space_from_data(data, path, lines)


__all__ = ["Budget", "Dist", "Evaluation", "InputError", "Search", "Space", "load_space", "space_from_data"]
