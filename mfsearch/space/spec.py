"""Space files: the YAML that declares a search (knobs, budget, objectives, evaluation, search, storage).

``load_space(path)`` validates everything up front and raises :class:`~mfsearch.errors.InputError`
reading ``file:line: field: what is wrong``; nothing is run before the whole file is valid.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..evaluation.data import TRAIN_SPLIT_SIZES
from ..fields import (
    Ctx,
    bool_field,
    choice_field,
    float_field,
    int_field,
    load_yaml,
    mapping_field,
    no_unknown,
    scalar_ok,
    type_name,
)
from ..latency import LatencySettings
from ..models import ConfigError, MobileFormerConfig, get_config, list_models
from ..search.engines import ENGINES
from ..search.samplers import SAMPLERS

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


#: Evaluation fields the ``eval_id`` hash has covered from the start: always hashed.
EVAL_ID_FIELDS = ("dataset", "image_size", "channels", "epochs", "train_size", "val_size", "batch_size",
                  "eval_batch_size", "lr", "min_lr", "warmup_epochs", "weight_decay", "label_smoothing", "augment",
                  "bn_recalibration", "seed")
#: How a result is computed rather than what is measured (where the data lies, threads, device, compiler,
#: graphs, deterministic kernels): never hashed; records carry what they depend on (threads, deterministic).
EVAL_ID_IGNORED = ("data_root", "threads", "device", "compile", "cuda_graphs", "deterministic")


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
    deterministic: bool = False  # train under torch.use_deterministic_algorithms(True)

    def eval_id(self) -> str:
        """Hash of the settings that change results (see :data:`EVAL_ID_FIELDS`, :data:`EVAL_ID_IGNORED`).

        A field added after the first ids were stored (``precision``, ...) is hashed only when it is
        not at its default, so every id stored before it existed stays valid.
        """
        d = dataclasses.asdict(self)
        for f in dataclasses.fields(self):
            if f.name in EVAL_ID_IGNORED or (f.name not in EVAL_ID_FIELDS and d[f.name] == f.default):
                d.pop(f.name)
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

    def without_credentials(self) -> Space:
        """A copy to hand to other processes and their files: ``storage`` redacted and left out of ``raw``."""
        from ..store import redact

        raw = {k: v for k, v in self.raw.items() if k != "storage"}
        return dataclasses.replace(self, storage=self.storage and redact(self.storage), raw=raw)


# ----------------------------------------------------------------------------- parsing


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


def _parse_evaluation(ctx: Ctx, raw: Any) -> Evaluation:
    d = mapping_field(ctx, raw, "evaluation")
    known = {f.name for f in dataclasses.fields(Evaluation)}
    no_unknown(ctx, d, known, "evaluation")
    e = Evaluation()
    f = "evaluation."
    kw: dict[str, Any] = {}
    if "dataset" in d:
        kw["dataset"] = choice_field(ctx, d["dataset"], f + "dataset", DATASETS)
    if "data_root" in d:
        if d["data_root"] is not None and not isinstance(d["data_root"], str):
            raise ctx.err(f + "data_root", "must be a path string")
        kw["data_root"] = d["data_root"]
    ints = {"image_size": (8, 512), "channels": (1, 3), "epochs": (1, 1000), "val_size": (10, 10**7),
            "batch_size": (2, 65536), "eval_batch_size": (1, 65536), "seed": (0, 2**31 - 1),
            "bn_recalibration": (0, 10000)}
    for k, (lo, hi) in ints.items():
        if k in d:
            kw[k] = int_field(ctx, d[k], f + k, lo, hi)
    if kw.get("channels", e.channels) != 3:
        raise ctx.err(f + "channels", "must be 3: the models take RGB input (grey images are replicated)")
    if "train_size" in d:
        kw["train_size"] = int_field(ctx, d["train_size"], f + "train_size", 10, 10**8, optional=True)
    if "threads" in d:
        kw["threads"] = int_field(ctx, d["threads"], f + "threads", 1, 1024, optional=True)
    floats = {"lr": (1e-7, 1e6), "min_lr": (0.0, 10.0), "warmup_epochs": (0.0, 1000.0),
              "weight_decay": (0.0, 10.0), "label_smoothing": (0.0, 0.99)}
    for k, (lo, hi) in floats.items():
        if k in d:
            kw[k] = float_field(ctx, d[k], f + k, lo, hi)
    if "augment" in d:
        kw["augment"] = bool_field(ctx, d["augment"], f + "augment")
    if "device" in d:
        dev = d["device"]
        if not isinstance(dev, str) or not re.fullmatch(r"cpu|cuda(:\d+)?|mps|auto", dev):
            raise ctx.err(f + "device", f"must be cpu, cuda, cuda:N, mps or auto, got {dev!r}")
        kw["device"] = dev
    if "precision" in d:
        kw["precision"] = choice_field(ctx, d["precision"], f + "precision", PRECISIONS)
    if "compile" in d:
        kw["compile"] = bool_field(ctx, d["compile"], f + "compile")
    if "cuda_graphs" in d:
        kw["cuda_graphs"] = bool_field(ctx, d["cuda_graphs"], f + "cuda_graphs")
    if "deterministic" in d:
        kw["deterministic"] = bool_field(ctx, d["deterministic"], f + "deterministic")
    e = dataclasses.replace(e, **kw)
    _check_sizes(ctx, e)
    return e


def _check_sizes(ctx: Ctx, e: Evaluation) -> None:
    """Subsets must fit in the training split, and one full batch in the training subset.

    The split sizes of the fixed data sets are known here; an image folder's is checked when it is read.
    """
    n, f = TRAIN_SPLIT_SIZES.get(e.dataset), "evaluation."
    split = f"the {n} images of {e.dataset}'s training split (validation is drawn from it)"
    if n is not None and e.val_size >= n:
        raise ctx.err(f + "val_size", f"{e.val_size} leaves no training images: {split}; lower it")
    if n is not None and e.train_size is not None and e.train_size + e.val_size > n:
        raise ctx.err(f + "train_size", f"train_size + val_size = {e.train_size + e.val_size} is more than {split}; "
                      "lower train_size or val_size")
    if e.train_size is not None and e.batch_size > e.train_size:
        raise ctx.err(f + "batch_size", f"{e.batch_size} is more than train_size ({e.train_size}): the last partial "
                      "batch is dropped, so no step would train; lower batch_size or raise train_size")
    if n is not None and e.train_size is None and e.batch_size > n - e.val_size:
        raise ctx.err(f + "batch_size", f"{e.batch_size} is more than the {n - e.val_size} training images left "
                      f"({split}, minus val_size {e.val_size}): no step would train; lower batch_size")


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
            o = {o: OBJECTIVES.get(o, "")}
        if not isinstance(o, dict) or len(o) != 1:
            raise ctx.err(fld, "must be a one-key mapping {metric: maximize|minimize}")
        (name, direction), = o.items()
        choice_field(ctx, name, fld, tuple(OBJECTIVES))
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


def _parse_latency(ctx: Ctx, raw: Any) -> LatencySettings:
    d = mapping_field(ctx, raw, "latency")
    no_unknown(ctx, d, {f.name for f in dataclasses.fields(LatencySettings)}, "latency")
    kw: dict[str, Any] = {}
    if "device" in d:
        dev = d["device"]
        if not isinstance(dev, str) or not re.fullmatch(r"cpu|cuda(:\d+)?|auto", dev):
            raise ctx.err("latency.device", f"must be cpu, cuda, cuda:N or auto, got {dev!r}")
        kw["device"] = dev
    if "threads" in d:
        kw["threads"] = int_field(ctx, d["threads"], "latency.threads", 1, 1024, optional=True)
    if "runtime" in d:
        kw["runtime"] = choice_field(ctx, d["runtime"], "latency.runtime", RUNTIMES)
    for k, (lo, hi) in {"input_size": (8, 4096), "batch": (1, 4096), "warmup": (0, 10000),
                        "runs": (1, 100000)}.items():
        if k in d:
            kw[k] = int_field(ctx, d[k], f"latency.{k}", lo, hi)
    return LatencySettings(**kw)


def _parse_prescreen(ctx: Ctx, raw: Any) -> Prescreen | None:
    if raw is None or raw is False:
        return None
    d = mapping_field(ctx, raw, "prescreen")
    no_unknown(ctx, d, {"proxy", "candidates", "batch_size"}, "prescreen")
    if "proxy" not in d:
        raise ctx.err("prescreen.proxy", "is required: one of " + ", ".join((*ZERO_COST, "params", "macs")))
    proxy = choice_field(ctx, d["proxy"], "prescreen.proxy", (*ZERO_COST, "params", "macs"))
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
           "latency", "prescreen")
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
    evaluation = _parse_evaluation(ctx, data.get("evaluation"))
    search = _parse_search(ctx, data.get("search"))
    if search.sampler in ("grid", "bruteforce"):
        for k, v in _all_knobs(knobs, lite, stages):
            if isinstance(v, Dist) and v.kind == "float" and v.step is None:
                raise ctx.err(k, "grid search needs discrete knobs: give this float range a step")
    storage = _parse_storage(ctx, data.get("storage"))
    latency = _parse_latency(ctx, data.get("latency"))
    prescreen = _parse_prescreen(ctx, data.get("prescreen"))
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
