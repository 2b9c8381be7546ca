"""After a search that predicted latency: the front's members (and the reference models) timed for real.

A predicted latency is a sum over a table's units with a fitted correction; its error is a few
percent on average and larger for some configs. The architectures a search hands over are the
members of its front, so those are measured once the search ends, end to end with the space's
``latency:`` settings and statistic (the table's), in interleaved passes as the table's own
calibration was (:func:`mfsearch.deploy.latency_table.measure_configs`). Each measurement is kept
in the study under ``latency_measured:<arch_id>`` (latency depends on the architecture, not on the
weights or on which trial trained it; one key per architecture, so processes on several machines
never overwrite each other), with the device, runtime version, statistic, passes and load, and
shows up as the ``latency_measured_ms`` column of the results (``mfsearch.analysis.study_frames``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from ..models import MobileFormerConfig
from ..space import Space

PREFIX = "latency_measured:"
ROUNDS = 2  # interleaved passes per member (a burst of a neighbour sets no figure alone)


def _settings_key(space: Space) -> dict[str, Any]:
    s = space.latency
    return {"threads": s.threads, "input_size": s.input_size, "statistic": s.statistic, "runs": s.runs,
            "warmup": s.warmup}


def stored_measurements(attrs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """arch_id -> the stored measurement, from a study's user attributes."""
    return {k[len(PREFIX):]: v for k, v in attrs.items() if k.startswith(PREFIX) and isinstance(v, dict)}


def _number(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if f == f else None


def members_to_measure(df: Any, objectives: list[list[str]]) -> Any:
    """The front of the search trials under the study's objectives, plus every feasible reference model."""
    import pandas as pd

    from ..analysis import candidates, pareto_front

    search = df[df["kind"] == "search"]
    front = pareto_front(search, objectives) if not search.empty else search
    refs = candidates(df[df["kind"] == "reference"])
    both = pd.concat([front, refs], ignore_index=True)
    return both.drop_duplicates(subset=["arch_id"], keep="first")


def measure_front(space: Space, ref: Any, log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Measure the front members and reference models of the study at ``ref`` not measured yet with these
    settings; store each in the study. Returns the new measurements (nothing where latency is not predicted)."""
    if not space.predicts_latency:
        return []
    import optuna

    from ..analysis import study_frames
    from ..deploy.latency_table import loadavg, machine, measure_configs
    from ..store import open_storage

    say = log or (lambda m: None)
    df, attrs = study_frames(ref)
    objectives = attrs.get("objectives") or [list(o) for o in space.objectives]
    members = members_to_measure(df, objectives)
    want = _settings_key(space)
    here = machine(space.latency.threads or 1)
    done = stored_measurements(attrs)
    todo = []
    for _, row in members.iterrows():
        old = done.get(row["arch_id"])
        if old and old.get("settings") == want and old.get("device") == here["device"] \
                and old.get("runtime_version") == here["runtime_version"]:
            continue
        todo.append(row)
    if not todo:
        return []
    stat = space.latency.statistic
    say(f"measuring {len(todo)} front member(s) and reference model(s) for real: {here['device']}, "
        f"{here['runtime_version']}, {stat}, {ROUNDS} interleaved passes of {space.latency.runs} runs "
        f"(load {loadavg()})")
    configs = [MobileFormerConfig.from_dict(json.loads(r["config"])).replace(num_classes=1000) for r in todo]
    preds = [_number(r.get("latency_ms")) for r in todo]
    t0 = time.perf_counter()

    def note(i: int, n: int, row: dict[str, Any]) -> None:
        p = preds[i]
        shown = f"predicted {p:7.2f} ms ({(p / row['measured_ms'] - 1) * 100:+5.1f}%)" if p else "not predicted"
        label = todo[i]["name"] or todo[i]["arch_id"]
        say(f"  {label:<24} measured {row['measured_ms']:7.2f} ms, {shown}, load {row['load']}")

    rows = measure_configs(configs, space.latency.threads or 1, space.latency.input_size, stat, ROUNDS,
                           space.latency.runs, space.latency.warmup, note)
    study = optuna.load_study(study_name=ref.name, storage=open_storage(ref.storage, create=False))
    out = []
    budget = space.budget.latency_ms
    for member, row, pred in zip(todo, rows, preds):
        rec = {"latency_measured_ms": row["measured_ms"], "predicted_ms": pred,
               "error_pct": round((pred / row["measured_ms"] - 1) * 100, 2) if pred else None,
               "over_budget": bool(budget is not None and row["measured_ms"] > budget),
               "statistic": stat, "passes": row["passes"], "wall_median_ms": row["wall_ms"],
               "cpu_median_ms": row["cpu_ms"], "load": row["load"], "rounds": ROUNDS, "settings": want,
               "runtime": "onnxruntime", **here, "kind": member["kind"], "name": member["name"],
               "time": time.time()}
        study.set_user_attr(PREFIX + member["arch_id"], rec)
        out.append({"arch_id": member["arch_id"], **rec})
    over = [r for r in out if r["over_budget"]]
    say(f"measured {len(out)} in {time.perf_counter() - t0:.0f} s"
        + (f"; {len(over)} measured over the {budget:g} ms budget (predicted under it)" if over else ""))
    return out

