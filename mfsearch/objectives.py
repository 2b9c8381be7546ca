"""The metrics a search can optimise or bound, by name: one registry for space files, engines, records and plots.

An :class:`Objective` says which way is better, where its value stands in a trial record (and
the results table), how it is obtained (``trained``: proxy training; ``zero_cost``: a score at
initialisation; ``analytic``: counted from the config; ``measured``: timed on a device), the
budget field that can bound it, and how to label it. A measured cost may also be *predictable*: a
space can say where its value comes from (``latency: {source: predicted, table: FILE}``), and then
it is known before anything is built, like an analytic count (kind ``predicted`` in that space, see
:meth:`mfsearch.space.Space.kind`), and the front's members are measured after the search into its
``measured_column``. Adding a metric is one :func:`register`
call here plus the function that produces its value (see :mod:`mfsearch.search.objective`).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InputError

KINDS = ("trained", "zero_cost", "analytic", "measured", "predicted")


@dataclass(frozen=True)
class Objective:
    """One metric: its name in space files, its direction and where its value is kept."""

    name: str
    direction: str  # maximize | minimize
    column: str  # key of the trial record and column of the results table
    kind: str  # one of KINDS
    label: str  # axis label and table header
    scale: float = 1.0  # value * scale is what a plot shows (MACs in millions...)
    budget: str | None = None  # the ``budget:`` field that bounds it, if any
    #: a predictable measured cost: where a measurement made after a search that predicted it is kept
    measured_column: str | None = None

    @property
    def predictable(self) -> bool:
        """Whether a space may predict it instead of measuring each sample."""
        return self.measured_column is not None

    @property
    def measured_label(self) -> str:
        return f"measured {self.label}"

    @property
    def scores_architectures(self) -> bool:
        """Whether it predicts accuracy (a search needs one: accuracy itself or a zero-cost score)."""
        return self.kind in ("trained", "zero_cost")

    def worst(self, cost: dict[str, float]) -> float:
        """The value told for a sample that is never evaluated (over budget or invalid): its own cost
        where it was counted, otherwise the worst possible."""
        if self.kind in ("analytic", "measured", "predicted") and self.column in cost:
            return float(cost[self.column])
        if self.kind == "measured":
            return 1e9
        return 0.0 if self.name == "accuracy" else -1e30


OBJECTIVES: dict[str, Objective] = {}


def register(obj: Objective) -> Objective:
    if obj.direction not in ("maximize", "minimize") or obj.kind not in KINDS:
        raise ValueError(f"objective {obj.name}: direction must be maximize|minimize and kind one of {KINDS}")
    OBJECTIVES[obj.name] = obj
    return obj


def get(name: str) -> Objective:
    """The objective ``name``; an unknown name is one line listing the known ones."""
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise InputError(f"unknown objective {name!r}; known: {', '.join(OBJECTIVES)}") from None


def of_kind(*kinds: str) -> tuple[str, ...]:
    """Names of the registered objectives of these kinds, in registration order."""
    return tuple(n for n, o in OBJECTIVES.items() if o.kind in kinds)


def measured_columns() -> dict[str, Objective]:
    """The columns that hold measurements of predicted objectives -> their objective."""
    return {o.measured_column: o for o in OBJECTIVES.values() if o.measured_column}


def column(name: str) -> str:
    """The record key / table column of objective ``name``."""
    return get(name).column


register(Objective("accuracy", "maximize", "accuracy", "trained", "proxy top-1 (%)"))
register(Objective("macs", "minimize", "macs", "analytic", "MACs (M)", 1e-6, budget="macs"))
register(Objective("params", "minimize", "params", "analytic", "parameters (M)", 1e-6, budget="params"))
register(Objective("latency", "minimize", "latency_ms", "measured", "latency (ms)", 1.0, budget="latency_ms",
                   measured_column="latency_measured_ms"))


def _register_zero_cost() -> None:
    from .evaluation.zero_cost import SCORES

    for name in SCORES:
        register(Objective(name, "maximize", name, "zero_cost", name))


_register_zero_cost()
