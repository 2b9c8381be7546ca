"""Space files as data: the knobs, budget, objectives, evaluation and search settings of a search.

:class:`Space` is what :func:`mfsearch.space.load_space` (``mfsearch.space.parse``) returns after
validating a whole file; :func:`within_budget` and :func:`constraint_values` judge a config
against its budget.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..evaluation.latency import LatencySettings
from ..evaluation.settings import Evaluation
from ..models import MobileFormerConfig, complexity, get_config, list_models
from ..objectives import OBJECTIVES

# ----------------------------------------------------------------------------- knobs

#: Top-level architecture knobs a space may vary (every field but the block list).
ARCH_KNOBS = tuple(
    f.name for f in dataclasses.fields(MobileFormerConfig) if f.name not in ("blocks", "name", "num_classes")
)
LITE_KNOBS = ("out", "e1", "stride")
STAGE_KNOBS = ("out", "depth", "e1", "stride", "down_e1", "down_e2")
DIST_KEYS = ("choice", "int", "float")
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
    confirm: tuple[int, int] | None = None  # (top, seeds): stand-alone training of the front after the search


@dataclass(frozen=True)
class Budget:
    macs: int | None = None
    params: int | None = None
    input_size: int = 224
    latency_ms: float | None = None  # measured (or predicted) with the space's ``latency`` settings


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
        return any(OBJECTIVES[n].kind == "trained" for n, _ in self.objectives)

    @property
    def needs_latency(self) -> bool:
        """Whether latency is used at all: a budget or an objective."""
        return self.budget.latency_ms is not None or any(OBJECTIVES[n].kind == "measured" for n, _ in self.objectives)

    @property
    def predicts_latency(self) -> bool:
        """Latency is predicted from a table for every sample (``latency.source: predicted``); nothing is timed
        before training, and the front is measured after the search."""
        return self.needs_latency and self.latency.source == "predicted"

    @property
    def measures_latency(self) -> bool:
        """Latency is timed for every sample before it is trained (``latency.source: measured``, the default)."""
        return self.needs_latency and self.latency.source == "measured"

    def kind(self, name: str) -> str:
        """How objective ``name`` is obtained in this space: its registered kind, or ``predicted`` for a
        predictable one this space predicts (then it is known before training, like an analytic count)."""
        obj = OBJECTIVES[name]
        return "predicted" if obj.predictable and self.predicts_latency else obj.kind

    def latency_table_path(self) -> Path | None:
        """The latency table file of a predicted-latency space (``latency.table``, relative to the space file)."""
        if self.latency.table is None:
            return None
        p = Path(self.latency.table).expanduser()
        return p if p.is_absolute() or not self.path else Path(self.path).parent / p

    def latency_table(self) -> Any:
        """The :class:`~mfsearch.deploy.LatencyTable` a predicted-latency space reads, checked against this
        machine and the ``latency:`` settings (:class:`~mfsearch.deploy.TableError`, one line, otherwise)."""
        from ..deploy.latency_table import TableError, search_table
        from ..deploy.runtime import RuntimeMissing

        s, path = self.latency, self.latency_table_path()
        rebuild = (f"mfsearch latency-table build --space {self.path} --threads {s.threads} --input-size "
                   f"{s.input_size} --statistic {s.statistic} --out {path}")
        try:
            return search_table(path, s, rebuild)
        except TableError as e:
            raise TableError(f"{self.path}: latency.table: {e}") from None
        except RuntimeMissing:  # the table is checked against the runtime installed here: there is none
            raise TableError(f"{self.path}: latency.runtime: onnxruntime is not installed, and a predicted latency "
                             "reads a table of its times checked against the installed version; install it with "
                             "`pip install onnx onnxruntime` (or `pip install -e .`)") from None

    def latency_predictor(self) -> Callable[[MobileFormerConfig], float] | None:
        """``cfg -> predicted latency (ms)`` where this space predicts latency, else None."""
        if not self.predicts_latency:
            return None
        from ..deploy.latency_table import predict_latency

        table = self.latency_table()
        return lambda cfg: round(predict_latency(cfg, table), 4)

    def latency_record(self) -> dict[str, Any]:
        """What a predicted latency stands on (stored with each trial beside ``latency_ms``)."""
        t = self.latency_table()
        return {"source": "predicted", "table": str(self.latency_table_path()), "table_created": t.meta.get("created"),
                "statistic": t.statistic, "device": t.device, "runtime": t.runtime,
                "runtime_version": t.runtime_version, "threads": t.threads, "input_size": t.input_size, "batch": 1}

    def within_budget(self, cfg: MobileFormerConfig) -> tuple[bool, dict[str, Any]]:
        """:func:`within_budget` with this space's predicted latency, where it predicts latency."""
        return within_budget(cfg, self.budget, self.latency_predictor())

    @property
    def base_config(self) -> MobileFormerConfig:
        return get_config(self.base)

    def reference_names(self) -> list[str]:
        """Paper models to evaluate as reference points (those under the budget)."""
        refs = self.search.reference_models
        names = list_models() if refs is True else ([] if refs is False else list(refs))
        return [n for n in names if self.within_budget(get_config(n))[0]]

    def with_overrides(self, **search: Any) -> Space:
        """A copy with some ``search`` fields replaced (CLI flags)."""
        s = dataclasses.replace(self.search, **{k: v for k, v in search.items() if v is not None})
        return dataclasses.replace(self, search=s)

    def without_credentials(self) -> Space:
        """A copy to hand to other processes and their files: ``storage`` redacted and left out of ``raw``."""
        from ..store import redact

        raw = {k: v for k, v in self.raw.items() if k != "storage"}
        return dataclasses.replace(self, storage=self.storage and redact(self.storage), raw=raw)


def within_budget(cfg: MobileFormerConfig, budget: Budget,
                  latency: Callable[[MobileFormerConfig], float] | None = None) -> tuple[bool, dict[str, Any]]:
    """``(fits, cost)``: cost holds MACs and params at the budget's input size (1000 classes), and the
    latency in ms when ``latency`` (a predictor, e.g. :meth:`Space.latency_predictor`) is given."""
    cfg = cfg.replace(num_classes=1000) if cfg.num_classes != 1000 else cfg
    cx = complexity(cfg, budget.input_size)
    fits = (budget.macs is None or cx.macs <= budget.macs) and (budget.params is None or cx.params <= budget.params)
    cost: dict[str, Any] = {"macs": cx.macs, "params": cx.params}
    if latency is not None:
        cost["latency_ms"] = latency(cfg)
        fits = fits and (budget.latency_ms is None or cost["latency_ms"] <= budget.latency_ms)
    return fits, cost


def constraint_values(cost: dict[str, Any], budget: Budget) -> dict[str, float]:
    """Optuna constraints by name (<= 0 feasible): the relative excess over each budget."""
    out = {}
    if budget.macs is not None:
        out["macs"] = cost["macs"] / budget.macs - 1.0
    if budget.params is not None:
        out["params"] = cost["params"] / budget.params - 1.0
    if budget.latency_ms is not None:  # predicted or measured before training; unknown counts as over
        out["latency"] = cost["latency_ms"] / budget.latency_ms - 1.0 if "latency_ms" in cost else 1.0
    return out
