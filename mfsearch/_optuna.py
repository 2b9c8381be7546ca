"""The one place that reaches past Optuna's public API.

mfsearch needs a few things Optuna does not expose: the storage of a study (to mark another
worker's trial failed, to take a database lock), a trial's storage id, constraints in the form
optuna-dashboard displays, and the hypervolume kernel. Each is a small function here, so an
Optuna release that moves one breaks one function, and the hypervolume has a fallback.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna

CONSTRAINTS_KEY = "constraints"  # the system attribute optuna-dashboard reads (a list, <= 0 feasible)


def storage_of(obj: Any) -> Any:
    """The :class:`optuna.storages.BaseStorage` behind a study or a trial (or a wrapper keeping it as ``_obj``)."""
    obj = getattr(obj, "_obj", obj)
    if isinstance(obj, optuna.Trial):
        return obj.storage
    return obj._storage


def trial_id(trial: Any) -> int:
    """The storage id of a trial (a :class:`optuna.Trial` or a :class:`optuna.trial.FrozenTrial`)."""
    trial = getattr(trial, "_obj", trial)
    return trial._trial_id


def fail_trial(study: Any, trial: Any, attrs: dict[str, Any]) -> bool:
    """Set ``attrs`` as user attributes of another worker's RUNNING trial and mark it FAIL.

    Returns False when the trial was finished meanwhile (another worker got there first).
    """
    import optuna
    from optuna.trial import TrialState

    st, tid = storage_of(study), trial_id(trial)
    try:
        for k, v in attrs.items():
            st.set_trial_user_attr(tid, k, v)
        return bool(st.set_trial_state_values(tid, TrialState.FAIL))
    except (RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
        return False


def set_constraints(trial: Any, values: dict[str, float]) -> None:
    """Store a trial's constraint values (<= 0: feasible), by name and as a list.

    By name (Optuna 5's ``Trial.set_constraint``) for Optuna and for readers of the store; and as
    the list optuna-dashboard reads (the older form, also read by Optuna's samplers), so an
    over-budget sample appears there as infeasible. Both hold the same values, so feasibility and
    the samplers' ordering by violation are unchanged.
    """
    if not values:
        return
    for k, v in values.items():
        trial.set_constraint(k, float(v))
    storage_of(trial).set_trial_system_attr(trial_id(trial), CONSTRAINTS_KEY, [float(v) for v in values.values()])


def rdb_engine(study: Any) -> Any:
    """The SQLAlchemy engine of a study on an RDB storage (for an advisory lock), or None."""
    st = storage_of(study)
    st = getattr(st, "_backend", st)  # a cached storage wraps the RDB one
    return getattr(st, "engine", None)


def compute_hypervolume(points: np.ndarray, reference: Sequence[float]) -> float:
    """Hypervolume dominated by ``points`` (all objectives minimised) up to ``reference``."""
    pts = np.asarray(points, dtype=float)
    ref = np.asarray(reference, dtype=float)
    try:
        from optuna._hypervolume import compute_hypervolume as optuna_hv
    except ImportError:
        return _hypervolume(pts, ref)
    return float(optuna_hv(pts, ref))


def _hypervolume(points: np.ndarray, ref: np.ndarray) -> float:
    """Exact hypervolume by slicing along the last objective (fine for the small fronts of a study)."""
    pts = points[np.all(points < ref, axis=1)]
    if len(pts) == 0:
        return 0.0
    if pts.shape[1] == 1:
        return float(ref[0] - pts[:, 0].min())
    order = np.argsort(pts[:, -1])
    pts = pts[order]
    total = 0.0
    for i in range(len(pts)):
        upper = pts[i + 1, -1] if i + 1 < len(pts) else ref[-1]
        depth = upper - pts[i, -1]
        if depth > 0:
            total += depth * _hypervolume(pts[: i + 1, :-1], ref[:-1])
    return float(total)
