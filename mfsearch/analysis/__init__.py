"""Analysis of studies: tidy tables, Pareto fronts, hypervolume, plots (pure, tested functions)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..objectives import OBJECTIVES, measured_columns, of_kind
from ..store import trial_constraints

__all__ = [
    "AXES", "OBJECTIVE_COLUMNS", "candidates", "confirmed", "confirmed_markdown", "front_markdown", "hypervolume",
    "hypervolume_history",
    "param_importance", "pareto_front", "pareto_mask", "plot_front", "plot_fronts", "plot_hypervolume_history",
    "plot_latency_fronts", "study_cost", "study_frames", "trials_frame",
]


#: objective name -> results column (from the registry: :mod:`mfsearch.objectives`)
OBJECTIVE_COLUMNS = {n: o.column for n, o in OBJECTIVES.items()}

#: measured columns a record may carry (latency, zero-cost scores), and what scoring cost
SCORE_COLUMNS = tuple(OBJECTIVES[n].column for n in of_kind("zero_cost"))
MEASURED = tuple(OBJECTIVES[n].column for n in of_kind("measured")) + tuple(measured_columns()) + SCORE_COLUMNS \
    + ("zero_cost_s",)


def trials_frame(study: Any, kind: str | None = None) -> pd.DataFrame:
    """One row per trial of an Optuna study, from the stored records (tidy: scalars only)."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        ua = t.user_attrs
        hist = ua.get("history") or []
        row = {
            "study": study.study_name,
            "trial": t.number,
            "state": t.state.name,
            "kind": ua.get("kind", kind or "search"),
            "status": ua.get("status", "running" if t.state.name == "RUNNING" else t.state.name.lower()),
            "name": ua.get("name", ""),
            "arch_id": ua.get("arch_id", ""),
            "summary": ua.get("summary", ""),
            "macs": ua.get("macs"),
            "params": ua.get("params"),
            "accuracy": ua.get("accuracy"),
            "epochs": len(hist),
            "train_s": ua.get("train_s"),
            "total_s": ua.get("total_s"),
            "cpu_s": ua.get("cpu_s"),
            "seed": ua.get("seed"),
            "eval_id": ua.get("eval_id", ""),
            "fidelity": ua.get("fidelity", ""),
            "supernet": ua.get("supernet", ""),
            "feasible": bool(t.state.name == "COMPLETE" and all(c <= 0 for c in trial_constraints(t))),
            "duplicate_of": ua.get("duplicate_of"),
            "failure_reason": ua.get("failure_reason", ""),
            "config": json.dumps(ua.get("config")) if ua.get("config") else "",
            "history": json.dumps(hist) if hist else "",
            "versions": json.dumps(ua.get("versions")) if ua.get("versions") else "",
            "datetime_start": t.datetime_start,
            "datetime_complete": t.datetime_complete,
        }
        for k in MEASURED:
            if k in ua:
                row[k] = ua[k]
        if isinstance(ua.get("latency"), dict):
            row["latency_device"] = ua["latency"].get("device", "")
            row["latency_source"] = ua["latency"].get("source", "measured")
        for k, v in t.params.items():
            row[f"p.{k}"] = v
        rows.append(row)
    return pd.DataFrame(rows)


def pareto_mask(values: np.ndarray) -> np.ndarray:
    """Non-dominated rows of ``values`` (all objectives minimised)."""
    n = len(values)
    mask = np.ones(n, dtype=bool)
    for i in range(n):
        if not mask[i]:
            continue
        dominated = np.all(values <= values[i], axis=1) & np.any(values < values[i], axis=1)
        if dominated.any():
            mask[i] = False
    return mask


def _minimised(df: pd.DataFrame, objectives: Sequence[Sequence[str]]) -> np.ndarray:
    cols = []
    for name, direction in objectives:
        v = df[OBJECTIVE_COLUMNS[name]].astype(float).to_numpy()
        cols.append(-v if direction == "maximize" else v)
    return np.stack(cols, axis=1) if cols else np.zeros((len(df), 0))


def candidates(df: pd.DataFrame) -> pd.DataFrame:
    """Feasible, finished, distinct architectures (duplicates collapsed)."""
    if df.empty:
        return df
    scored = df["accuracy"].notna()
    for z in SCORE_COLUMNS:  # a zero-cost search scores instead of training
        if z in df.columns:
            scored |= df[z].notna() & df["status"].isin(["trained", "duplicate"])
    ok = df[df["feasible"] & scored]
    return ok.sort_values("trial").drop_duplicates(subset=["arch_id", "kind"], keep="first")


def confirmed(df: pd.DataFrame) -> pd.DataFrame:
    """One row per confirmed architecture (``kind: confirm`` trials): the stand-alone mean over its seeds with
    the 95% confidence interval (Student t; none with one seed) beside its search score (``score``: the
    one-shot or proxy accuracy of the trial or paper model it confirms). Columns: ``arch_id``, ``name``,
    ``source`` (search / reference), ``macs``, ``params``, ``summary``, ``score``, ``accuracy`` (the mean),
    ``ci95``, ``std``, ``seeds``, ``kind`` (``confirmed``), ``feasible``, ``status``, and every other objective
    column the trials carry (``latency_ms``...; an architecture's, the same for each of its seeds), so the
    confirmed means have a front and a hypervolume in any objectives."""
    cols = ["trial", "arch_id", "name", "source", "macs", "params", "summary", "score", "accuracy", "ci95", "std",
            "seeds", "kind", "feasible", "status"]
    extra = [c for c in dict.fromkeys([*OBJECTIVE_COLUMNS.values(), "latency_measured_ms"])
             if c in df.columns and c not in cols]
    cols += extra
    if df.empty or "kind" not in df.columns:
        return pd.DataFrame(columns=cols)
    c = df[(df["kind"] == "confirm") & (df["status"] == "confirmed") & df["accuracy"].notna()]
    if c.empty:
        return pd.DataFrame(columns=cols)
    from scipy import stats

    scored = df[df["kind"].isin(["search", "reference"]) & df["accuracy"].notna()]
    scored = scored.sort_values("trial").drop_duplicates("arch_id", keep="first").set_index("arch_id")
    rows = []
    for arch, g in c.groupby("arch_id", sort=False):
        acc = g.drop_duplicates("seed", keep="first")["accuracy"].astype(float).to_numpy()
        n = len(acc)
        std = float(acc.std(ddof=1)) if n > 1 else float("nan")
        ci = float(stats.t.ppf(0.975, n - 1) * std / np.sqrt(n)) if n > 1 else float("nan")
        first = g.iloc[0]
        name = first["name"] if isinstance(first["name"], str) else ""  # None in the store, NaN from results.csv
        src = scored.loc[arch] if arch in scored.index else None
        rows.append({"trial": int(first["trial"]), "arch_id": arch, "name": name,
                     "source": "reference" if name else "search",
                     "macs": first["macs"], "params": first["params"], "summary": first["summary"],
                     "score": float(src["accuracy"]) if src is not None else float("nan"),
                     "accuracy": float(acc.mean()), "ci95": ci, "std": std, "seeds": n, "kind": "confirmed",
                     "feasible": bool(g["feasible"].all()), "status": "confirmed",
                     **{k: first[k] for k in extra}})
    return pd.DataFrame(rows, columns=cols).sort_values("accuracy", ascending=False, ignore_index=True)


def study_cost(df: pd.DataFrame, attrs: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a study cost the machine, from its trials (``trials_frame`` / ``results.csv``) and attributes.

    ``evaluations``: trials that spent CPU (a duplicate, or a confirmation reusing a stored run, costs none);
    ``trials_cpu_s``: their process CPU seconds (``cpu_s``) summed, over trained and confirmed trials;
    ``without_cpu``: trials of those stored without their CPU time (left out of the sum); ``supernet`` /
    ``supernet_cpu_s``: the one-shot supernet's key and whole training CPU (None for a stand-alone study).
    """
    ran = df[df["status"].isin(["trained", "confirmed"])] if "status" in df.columns else df.iloc[0:0]
    cpu = (pd.to_numeric(ran["cpu_s"], errors="coerce") if "cpu_s" in ran.columns
           else pd.Series(float("nan"), index=ran.index))
    known = cpu.notna()
    shot = (attrs or {}).get("oneshot")
    shot = shot if isinstance(shot, dict) else {}
    train = shot.get("train_cpu_s")
    return {"evaluations": int((cpu > 0).sum()), "trials_cpu_s": round(float(cpu[known].sum()), 3),
            "without_cpu": int((~known).sum()), "supernet": shot.get("key"),
            "supernet_cpu_s": round(float(train), 3) if train is not None else None}


def confirmed_markdown(conf: pd.DataFrame) -> str:
    """A markdown table of :func:`confirmed`: search score beside the stand-alone mean +/- 95% CI."""
    lines = ["| rank | kind | name / arch_id | MACs (M) | params (M) | search score (%) | stand-alone mean +/- 95% CI "
             "(%) | seeds | architecture |", "|---:|---|---|---:|---:|---:|---:|---:|---|"]
    for i, (_, r) in enumerate(conf.iterrows(), 1):
        ci = f" +/- {r['ci95']:.2f}" if pd.notna(r["ci95"]) else ""
        score = f"{r['score']:.2f}" if pd.notna(r["score"]) else "-"
        lines.append(f"| {i} | {r['source']} | {r['name'] or r['arch_id']} | {r['macs'] / 1e6:.1f} | "
                     f"{r['params'] / 1e6:.2f} | {score} | {r['accuracy']:.2f}{ci} | {r['seeds']} | {r['summary']} |")
    return "\n".join(lines) + "\n"


def pareto_front(df: pd.DataFrame, objectives: Sequence[Sequence[str]]) -> pd.DataFrame:
    """The rows of ``df`` (feasible candidates) on the Pareto front, sorted by the first cost."""
    c = candidates(df)
    if c.empty:
        return c
    front = c[pareto_mask(_minimised(c, objectives))]
    costs = [n for n, d in objectives if d == "minimize"]
    return front.sort_values(OBJECTIVE_COLUMNS[costs[0]] if costs else OBJECTIVE_COLUMNS[objectives[0][0]])


def hypervolume(df: pd.DataFrame, objectives: Sequence[Sequence[str]], reference_point: dict[str, float]) -> float:
    """Hypervolume dominated by the feasible candidates, normalised to [0, 1].

    Accuracy (percent) is scaled to [0, 1]; every cost is divided by its reference value
    (the budget), so the volume is the fraction of the box [ref acc, 100%] x [0, budget].
    """
    from .._optuna import compute_hypervolume

    c = candidates(df)
    if c.empty:
        return 0.0
    pts, ref = [], []
    for name, direction in objectives:
        v = c[OBJECTIVE_COLUMNS[name]].astype(float).to_numpy()
        r = float(reference_point[name])
        if direction == "maximize":
            pts.append(-(v - r) / (100.0 - r if name == "accuracy" else max(abs(r), 1.0)))
            ref.append(0.0)
        else:
            pts.append(v / r)
            ref.append(1.0)
    p = np.stack(pts, axis=1)
    p = p[np.all(p < np.asarray(ref), axis=1)]
    if len(p) == 0:
        return 0.0
    return float(compute_hypervolume(p, np.asarray(ref, dtype=float)))


def hypervolume_history(df: pd.DataFrame, objectives: Sequence[Sequence[str]],
                        reference_point: dict[str, float]) -> pd.DataFrame:
    """Hypervolume after each search trial (reference models excluded)."""
    s = df[df["kind"] == "search"].sort_values("trial")
    out = []
    for n in s["trial"]:
        out.append({"trial": int(n), "hypervolume": hypervolume(s[s["trial"] <= n], objectives, reference_point)})
    return pd.DataFrame(out)


def front_markdown(front: pd.DataFrame) -> str:
    """A markdown table of the front (best architectures), with latency and zero-cost scores when measured."""
    extra = [c for c in MEASURED[:-1] if c in front.columns and front[c].notna().any()]
    has_acc = "accuracy" in front.columns and front["accuracy"].notna().any()
    head = "| rank | kind | name / arch_id | MACs (M) | params (M) | accuracy (%) |"
    labels = {o.column: o.label for o in OBJECTIVES.values()}
    labels.update({c: o.measured_label for c, o in measured_columns().items()})
    head += "".join(f" {labels.get(c, c)} |" for c in extra) + " architecture |"
    lines = [head, "|---:|---|---|---:|---:|---:|" + "---:|" * len(extra) + "---|"]
    order = front.sort_values("accuracy" if has_acc else (extra[-1] if extra else "macs"), ascending=False)
    for i, (_, r) in enumerate(order.iterrows(), 1):
        label = r["name"] or r["arch_id"]
        acc = f"{r['accuracy']:.2f}" if has_acc and pd.notna(r["accuracy"]) else "-"
        cells = "".join(f" {r[c]:.4g} |" if pd.notna(r[c]) else " - |" for c in extra)
        lines.append(f"| {i} | {r['kind']} | {label} | {r['macs'] / 1e6:.1f} | {r['params'] / 1e6:.2f} | "
                     f"{acc} |{cells} {r['summary']} |")
    return "\n".join(lines) + "\n"


#: x axis of a front plot (a cost's column, or the measurement of a predicted one) -> (scale, label)
AXES = {o.column: (o.scale, o.label) for o in OBJECTIVES.values() if o.kind in ("analytic", "measured")}
AXES.update({c: (o.scale, o.measured_label) for c, o in measured_columns().items()})


def _accuracy_front(c: pd.DataFrame, x: str) -> pd.DataFrame:
    """The rows of ``c`` on the front of accuracy (max) against column ``x`` (min)."""
    return c[pareto_mask(np.stack([-c["accuracy"].astype(float).to_numpy(), c[x].astype(float).to_numpy()], 1))]


def _finish(fig: Any, ax: Any, xlabel: str, title: str, path: str | Path | None) -> Any:
    """The labels, grid and legend every accuracy plot shares; written to ``path`` when given."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel("proxy top-1 (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(Path(path))
    return fig


def plot_front(df: pd.DataFrame, objectives: Sequence[Sequence[str]], path: str | Path | None = None,
               x: str = "macs", title: str = "", ax: Any = None, xlabel: str | None = None,
               budget: float | None = None) -> Any:
    """Accuracy vs ``x`` (``macs``, ``params``, ``latency_ms``, ``latency_measured_ms``): feasible trials,
    the front, paper models; a dashed line at ``budget`` (in ``x``'s unit) when given.

    Returns the :class:`matplotlib.figure.Figure` (a notebook shows it); writes it to ``path`` when given.
    Draws on ``ax``, or on its own figure: no pyplot state, no backend switch.
    """
    from matplotlib.figure import Figure

    if x not in AXES:
        raise ValueError(f"x must be one of {', '.join(AXES)}, got {x!r}")
    scale, label = AXES[x]
    conf = confirmed(df)
    c = candidates(df[df["kind"] != "confirm"]) if "kind" in df.columns else candidates(df)
    if x not in c.columns:
        c = c.assign(**{x: np.nan})
    c = c[c[x].notna()]
    if ax is None:
        fig = Figure(figsize=(7, 4.5), dpi=120)
        ax = fig.subplots()
    fig = ax.get_figure()
    search = c[c["kind"] == "search"]
    refs = c[c["kind"] == "reference"]
    ax.scatter(search[x] * scale, search["accuracy"], s=18, alpha=0.6, label="trials")
    if c.empty:
        front = c
    else:  # the front of accuracy against this axis (also for a measurement column, which is no objective)
        front = _accuracy_front(c, x)
    if not front.empty:
        f = front.sort_values(x)
        ax.step(f[x] * scale, f["accuracy"], where="post", color="C3", lw=1.5, label="Pareto front")
        ax.scatter(f[x] * scale, f["accuracy"], color="C3", s=30, zorder=3)
    if not refs.empty:
        ax.scatter(refs[x] * scale, refs["accuracy"], marker="*", s=140, color="k", zorder=4, label="paper models")
        for _, r in refs.iterrows():
            ax.annotate(r["name"].replace("mobile_former_", "MF-"), (r[x] * scale, r["accuracy"]),
                        textcoords="offset points", xytext=(4, 4), fontsize=8)
    if budget is not None:
        ax.axvline(budget * scale, color="0.4", ls="--", lw=1, label="budget")
    if not conf.empty and x in conf.columns:
        ax.errorbar(conf[x].astype(float) * scale, conf["accuracy"], yerr=conf["ci95"].fillna(0.0), fmt="D", ms=5,
                    color="C2", capsize=3, zorder=5, label="confirmed stand-alone (mean +/- 95% CI)")
        for _, r in conf.iterrows():  # each confirmed mean joined to its search score
            if pd.notna(r["score"]):
                ax.plot([r[x] * scale] * 2, [r["score"], r["accuracy"]], color="C2", lw=0.8, ls=":", zorder=2)
    return _finish(fig, ax, xlabel or label, title, path)


def plot_fronts(runs: Sequence[tuple[str, pd.DataFrame, float | None]], path: str | Path | None = None,
                x: str = "macs", title: str = "") -> Any:
    """Several searches on one axis: each ``(name, trials, budget)`` drawn as its Pareto front of accuracy
    against ``x`` with its budget as a dashed line in the same colour; the paper models once. For fronts
    at several budgets (one-shot searches sharing one supernet score on one scale, so they compare)."""
    from matplotlib.figure import Figure

    if x not in AXES:
        raise ValueError(f"x must be one of {', '.join(AXES)}, got {x!r}")
    scale, label = AXES[x]
    fig = Figure(figsize=(7.5, 4.8), dpi=120)
    ax = fig.subplots()
    refs: dict[str, tuple[float, float]] = {}
    for i, (name, df, budget) in enumerate(runs):
        c = candidates(df[df["kind"] != "confirm"]) if "kind" in df.columns else candidates(df)
        c = c[c[x].notna()] if x in c.columns else c.iloc[0:0]
        search = c[c["kind"] == "search"]
        color = f"C{i % 10}"
        ax.scatter(search[x] * scale, search["accuracy"], s=6, alpha=0.25, color=color)
        if not search.empty:
            f = _accuracy_front(search, x).sort_values(x)
            ax.step(f[x] * scale, f["accuracy"], where="post", color=color, lw=1.6,
                    label=f"{name}: front of {len(search)} trials")
            ax.scatter(f[x] * scale, f["accuracy"], color=color, s=22, zorder=3)
        if budget is not None:
            ax.axvline(budget * scale, color=color, ls="--", lw=1)
        for _, r in c[c["kind"] == "reference"].iterrows():
            refs.setdefault(r["name"], (r[x], r["accuracy"]))
    for name, (xv, acc) in refs.items():
        ax.scatter(xv * scale, acc, marker="*", s=140, color="k", zorder=4)
        ax.annotate(name.replace("mobile_former_", "MF-"), (xv * scale, acc), textcoords="offset points",
                    xytext=(4, 4), fontsize=8)
    return _finish(fig, ax, label, title, path)


def plot_latency_fronts(df: pd.DataFrame, objectives: Sequence[Sequence[str]], path: str | Path | None = None,
                        budget: float | None = None, title: str = "") -> Any:
    """Accuracy vs latency; for a search that predicted latency, two panels: the predicted latency of every
    trial, and the latency measured after the search (front members and paper models).

    Returns the figure; writes it to ``path`` when given.
    """
    from matplotlib.figure import Figure

    measured = "latency_measured_ms"
    predicted = "latency_source" in df.columns and (df["latency_source"] == "predicted").any()
    if not (measured in df.columns and df[measured].notna().any()):
        label = "predicted latency (ms)" if predicted else None
        return plot_front(df, objectives, path, "latency_ms", title, xlabel=label, budget=budget)
    fig = Figure(figsize=(12, 4.5), dpi=120)
    left, right = fig.subplots(1, 2, sharey=True)
    plot_front(df, objectives, None, "latency_ms", f"{title} (predicted)" if title else "predicted", ax=left,
               xlabel="predicted latency (ms)", budget=budget)
    plot_front(df[df[measured].notna()], objectives, None, measured,
               f"{title} (measured after the search)" if title else "measured", ax=right, budget=budget)
    lo = min(a.get_xlim()[0] for a in (left, right))
    hi = max(a.get_xlim()[1] for a in (left, right))
    for a in (left, right):  # one scale: a point moves right or left by its prediction error
        a.set_xlim(lo, hi)
    fig.tight_layout()
    if path is not None:
        fig.savefig(Path(path))
    return fig


def study_frames(ref: Any) -> tuple[pd.DataFrame, dict]:
    """All trials of the study at ``ref`` (a :class:`~mfsearch.store.StudyRef`) and of its reference study.

    Returns ``(frame, study attributes)``; the frame has one row per trial (``kind`` is
    ``search`` or ``reference``). Reading never creates a store.
    """
    import optuna

    from ..errors import InputError
    from ..store import open_storage

    st = open_storage(ref.storage, create=False)
    names = {s.study_name for s in optuna.get_all_study_summaries(st, include_best_trial=False)}
    if ref.name not in names:
        raise InputError(f"no study named {ref.name} in the storage; run it first")
    study = optuna.load_study(study_name=ref.name, storage=st)
    frames = [trials_frame(study, "search")]
    if ref.reference_name in names:
        frames.append(trials_frame(optuna.load_study(study_name=ref.reference_name, storage=st), "reference"))
    if all(f.empty for f in frames):
        raise InputError(f"study {ref.name} has no trials yet; run it first (mfsearch run <space file>)")
    attrs = dict(study.user_attrs)
    attrs["run_dir"] = str(ref.run_dir)
    frames = [f for f in frames if not f.empty]
    if not frames:
        raise InputError(f"study {ref.name} has no trials yet; run it first (mfsearch run SPACE)")
    df = pd.concat(frames, ignore_index=True)
    from ..search.measure_front import stored_measurements

    done = stored_measurements(attrs)  # latency measured after a search that predicted it, by architecture
    if done:
        df["latency_measured_ms"] = df["arch_id"].map(lambda a: (done.get(a) or {}).get("latency_measured_ms"))
        df["latency_measured_ms"] = df["latency_measured_ms"].astype(float)
    return df, attrs


def param_importance(df: pd.DataFrame, seed: int = 0) -> pd.Series:
    """Importance of each knob for proxy accuracy over the trained search trials (Optuna's evaluator)."""
    import optuna
    from optuna.distributions import CategoricalDistribution

    s = candidates(df[df["kind"] == "search"])
    pcols = [c for c in s.columns if c.startswith("p.")]
    if len(s) < 3 or not pcols:
        return pd.Series(dtype=float)
    study = optuna.create_study(direction="maximize")
    for _, r in s.iterrows():
        params = {c[2:]: r[c] for c in pcols if pd.notna(r[c])}
        params = {k: (v.item() if hasattr(v, "item") else v) for k, v in params.items()}
        dists = {k: CategoricalDistribution(sorted(s[f"p.{k}"].dropna().map(
            lambda v: v.item() if hasattr(v, "item") else v).unique().tolist())) for k in params}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=float(r["accuracy"])))
    imp = optuna.importance.get_param_importances(study, evaluator=optuna.importance.PedAnovaImportanceEvaluator())
    return pd.Series(imp, name="importance")


def plot_hypervolume_history(hist: pd.DataFrame, path: str | Path | None = None, ax: Any = None) -> Any:
    """Hypervolume after each trial (from :func:`hypervolume_history`) on ``ax``, or on a new figure.

    Returns the figure drawn on (a notebook shows it); writes it to ``path`` when given.
    """
    from matplotlib.figure import Figure

    if ax is None:
        fig = Figure(figsize=(6, 3.5), dpi=120)
        ax = fig.subplots()
    ax.plot(hist["trial"], hist["hypervolume"], marker="o", ms=3)
    ax.set_xlabel("trial")
    ax.set_ylabel("hypervolume (normalised)")
    ax.grid(alpha=0.3)
    fig = ax.get_figure()
    if path is not None:
        fig.tight_layout()
        fig.savefig(Path(path))
    return fig
