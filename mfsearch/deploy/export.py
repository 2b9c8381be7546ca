"""Getting an architecture out: its config (YAML), its ONNX graph, its weights (state dict).

A source is a preset, an architecture config file, or a member of a finished study (a space
file, a run directory or a study name; ``rank`` K picks the K-th member of the Pareto front as
``pareto.md`` lists it, most accurate first, ``arch_id`` any evaluated architecture).
:func:`resolve_source` turns any of them into an :class:`ExportSource`; :func:`export_files`
writes the formats asked for. Studies store configs, not trained weights: their weights (like a
preset's or a config file's) are a seeded random initialisation, said so in every output.

Files are written under a temporary name and renamed when complete: a killed export never
leaves a file that looks finished.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._utils import atomic_write
from ..errors import InputError
from ..models import ConfigError, MobileFormer, MobileFormerConfig, list_models
from ..models.io import dump_config
from .onnx_graph import DEFAULT_OPSET, INPUT, ExportError, check_opset, model_proto

FORMATS = ("onnx", "yaml", "pt")
TOLERANCE = 1e-4  # ONNX Runtime vs eager PyTorch, fp32, max absolute difference of the logits


@dataclass(frozen=True)
class ExportSource:
    """An architecture to export: its config, a file-name stem, where it came from, and what is known of it."""

    cfg: MobileFormerConfig
    stem: str
    origin: str
    record: dict[str, Any] = field(default_factory=dict)  # a study member's figures (accuracy, MACs, trial)
    state_dict: dict[str, torch.Tensor] | None = None  # trained weights, when the source has them


@dataclass(frozen=True)
class ExportResult:
    """What was written: format -> path, the opset, and the ONNX Runtime check (max |ORT - eager|)."""

    paths: dict[str, Path]
    opset: int
    weights: str
    max_abs_diff: float | None = None


def parse_formats(text: str) -> tuple[str, ...]:
    """``"onnx,yaml"`` -> ``("onnx", "yaml")``; an unknown format names ``--format`` and the choices."""
    out = []
    for f in (p.strip().lower() for p in str(text).split(",")):
        if f not in FORMATS:
            raise ExportError(f"--format: unknown format {f!r}; choose from {', '.join(FORMATS)} (comma-separated)")
        if f not in out:
            out.append(f)
    if not out:
        raise ExportError(f"--format: give at least one of {', '.join(FORMATS)}")
    return tuple(out)


def _is_space_file(path: Path) -> bool:
    """Whether a YAML file is a space file (a search) rather than an architecture config."""
    from ..fields import load_yaml

    data, _ = load_yaml(path)
    return isinstance(data, dict) and any(k in data for k in ("space", "search", "objectives", "evaluation"))


def resolve_source(target: str, rank: int | None = None, arch_id: str | None = None, storage: str | None = None,
                   runs: str | Path | None = None) -> ExportSource:
    """An :class:`ExportSource` from a preset name, a config file, or a study (space file, run dir, study name)."""
    from ..models import resolve_config
    from ..store import runs_dir

    p = Path(target)
    if target in list_models():
        is_study = False
    elif p.is_dir():
        is_study = True
    elif p.suffix in (".yaml", ".yml", ".json"):
        is_study = p.suffix != ".json" and p.is_file() and _is_space_file(p)
    else:  # a study name: in the runs directory, or in the storage given
        is_study = storage is not None or (runs_dir(runs) / target / "study.json").is_file()
    if is_study:
        return study_source(target, rank, arch_id, storage, runs)
    if rank is not None or arch_id is not None:
        raise InputError(f"{'--rank' if rank is not None else '--arch-id'}: picks a member of a study; "
                         f"{target} is an architecture (preset or config file)")
    try:
        cfg = resolve_config(target)
    except ConfigError as e:
        raise InputError(str(e)) from None
    except KeyError as e:
        raise InputError(f"{e.args[0]}; or a study (space file, run directory, study name)") from None
    stem = target if target in list_models() else p.stem
    return ExportSource(cfg, stem, f"preset {target}" if target in list_models() else f"config file {target}")


def _front_order(df: Any, objectives: Sequence[Sequence[str]]) -> Any:
    """The Pareto front in ``pareto.md``'s order: most accurate first (or the first maximised score)."""
    from ..analysis import pareto_front

    front = pareto_front(df, objectives)
    if front.empty:
        return front
    if "accuracy" in front.columns and front["accuracy"].notna().any():
        key = "accuracy"
    else:
        from ..analysis import OBJECTIVE_COLUMNS

        key = next((OBJECTIVE_COLUMNS[n] for n, d in objectives if d == "maximize"), "macs")
    return front.sort_values(key, ascending=key == "macs", kind="stable")


def study_source(target: str, rank: int | None = None, arch_id: str | None = None, storage: str | None = None,
                 runs: str | Path | None = None) -> ExportSource:
    """A member of a study: ``rank`` K of its Pareto front (default 1, the most accurate) or ``arch_id``."""
    from .. import load_results

    if rank is not None and arch_id is not None:
        raise InputError("--rank and --arch-id: give one of them")
    if rank is not None and rank < 1:
        raise InputError(f"--rank: must be >= 1, got {rank}")
    df, attrs = load_results(target, storage, runs)
    study = str(df["study"].iloc[0]) if len(df) else Path(target).stem
    objectives = attrs.get("objectives") or [["accuracy", "maximize"], ["macs", "minimize"]]
    if arch_id is not None:
        # the full id or a unique prefix of it, as the trial lines print (8 characters)
        known = sorted({str(a) for a in df.loc[df["config"] != "", "arch_id"] if str(a).startswith(arch_id)}) \
            if arch_id else []
        if len(known) > 1:
            raise InputError(f"--arch-id: {arch_id} is the start of {len(known)} architectures in study {study} "
                             f"({', '.join(known[:4])}{', ...' if len(known) > 4 else ''}); give more characters")
        if not known:
            raise InputError(f"--arch-id: no architecture {arch_id} in study {study}; see `mfsearch results {target}`")
        arch_id = known[0]
        rows = df[(df["arch_id"] == arch_id) & (df["config"] != "")]
        scored = rows[rows["accuracy"].notna()] if "accuracy" in rows.columns else rows
        row = (scored if len(scored) else rows).sort_values("trial").iloc[0]
        stem, how = f"{study}_{arch_id}", f"arch_id {arch_id}"
    else:
        k = rank or 1
        front = _front_order(df, objectives)
        if len(front) < k:
            raise InputError(f"--rank: study {study} has {len(front)} architecture(s) on its Pareto front, "
                             f"asked for rank {k}")
        row = front.iloc[k - 1]
        stem, how = f"{study}_rank{k}_{row['arch_id']}", f"rank {k} of the Pareto front"
    try:
        cfg = MobileFormerConfig.from_dict(json.loads(row["config"]), name=stem)
    except (ConfigError, ValueError) as e:
        raise InputError(f"study {study}, trial {row['trial']}: stored config is not valid here ({e})") from None
    record = {"study": study, "trial": int(row["trial"]), "kind": row["kind"], "arch_id": row["arch_id"]}
    for k in ("accuracy", "macs", "params", "latency_ms"):
        if k in row and row[k] is not None and row[k] == row[k]:
            record[k] = float(row[k]) if k in ("accuracy", "latency_ms") else int(row[k])
    return ExportSource(cfg, stem, f"study {study}, trial {record['trial']} ({how})", record)


def build_model(source: ExportSource, seed: int = 0) -> MobileFormer:
    """The eval-mode model of ``source``: its weights if it has any, else a seeded random initialisation."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MobileFormer(source.cfg)
    if source.state_dict is not None:
        model.load_state_dict(source.state_dict)
    return model.eval()


def onnx_bytes(model: MobileFormer, input_size: int = 224, opset: int = DEFAULT_OPSET, batch: int | None = None,
               metadata: dict[str, str] | None = None) -> bytes:
    """The serialized ONNX model (checked with ``onnx.checker``), metadata added as ``metadata_props``."""
    from .runtime import import_onnx

    onnx = import_onnx()
    proto = model_proto(model, input_size, opset, batch)
    for k, v in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"onnx: the graph fails onnx.checker ({str(e).splitlines()[0]}); "
                          "please report it with the config") from None
    return proto.SerializeToString()


def verify_onnx(data: bytes, model: MobileFormer, input_size: int, batch: int = 1, seed: int = 0) -> float:
    """Max |ONNX Runtime - eager PyTorch| of the logits on a seeded random input (fp32, plain kernels)."""
    from ..models.mobile_former import plain_kernels
    from .runtime import import_onnxruntime, make_session

    import_onnxruntime()  # not installed: RuntimeMissing says so (not "cannot load the graph")
    x = torch.randn(batch, 3, input_size, input_size, generator=torch.Generator().manual_seed(seed))
    try:
        sess = make_session(data, threads=None)
    except Exception as e:  # noqa: BLE001 - a runtime that refuses the graph: one line
        raise ExportError(f"onnx: ONNX Runtime cannot load the graph ({str(e).splitlines()[0][:200]}); "
                          "try another --opset") from None
    out = sess.run(None, {INPUT: x.numpy()})[0]
    with torch.no_grad(), plain_kernels():
        ref = model.eval()(x).numpy()
    return float(np.abs(out - ref).max())


def export_files(source: ExportSource, formats: Sequence[str], out_dir: str | Path, opset: int = DEFAULT_OPSET,
                 input_size: int = 224, seed: int = 0, verify: bool = True) -> ExportResult:
    """Write ``formats`` of ``source`` into ``out_dir``: ``<stem>.onnx``, ``<stem>.yaml``, ``<stem>.pt``.

    ``pt`` is the model's state dict (``torch.load(path, weights_only=True)``) and always comes with
    the YAML beside it, so ``create_model(yaml).load_state_dict(torch.load(pt))`` restores the model.
    ``verify`` runs the ONNX file in ONNX Runtime and raises :class:`ExportError` if its logits
    differ from eager PyTorch by more than :data:`TOLERANCE`.
    """
    formats = parse_formats(",".join(formats))
    check_opset(opset)
    if not 8 <= input_size <= 4096:
        raise ExportError(f"--input-size: must be in [8, 4096], got {input_size}")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".{source.stem}.probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ExportError(f"--out: cannot write to {out} ({e.strerror}); choose a writable folder") from None
    model = build_model(source, seed)
    weights = "trained weights" if source.state_dict is not None else f"random initialisation (seed {seed})"
    header = f"# {source.cfg.name or source.stem}: {source.origin}; arch_id {source.cfg.arch_id}\n"
    if source.record:
        header += "# " + ", ".join(f"{k} {v}" for k, v in source.record.items()) + "\n"
    paths: dict[str, Path] = {}
    diff = None
    if "onnx" in formats:
        meta = {"mfsearch.arch_id": source.cfg.arch_id, "mfsearch.config": json.dumps(source.cfg.to_dict()),
                "mfsearch.origin": source.origin, "mfsearch.weights": weights, "mfsearch.input_size": str(input_size),
                "mfsearch.opset": str(opset)}
        data = onnx_bytes(model, input_size, opset, batch=None, metadata=meta)
        if verify:
            diff = verify_onnx(data, model, input_size, batch=2, seed=seed)
            if not diff <= TOLERANCE:
                raise ExportError(f"onnx: ONNX Runtime's logits differ from PyTorch's by {diff:.2e} "
                                  f"(> {TOLERANCE:g}); please report it with the config")
        paths["onnx"] = out / f"{source.stem}.onnx"
        atomic_write(paths["onnx"], lambda p: p.write_bytes(data))
    if "yaml" in formats or "pt" in formats:
        paths["yaml"] = out / f"{source.stem}.yaml"
        atomic_write(paths["yaml"], lambda p: p.write_text(header + dump_config(source.cfg)))
    if "pt" in formats:
        paths["pt"] = out / f"{source.stem}.pt"
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        atomic_write(paths["pt"], lambda p: torch.save(state, p))
    return ExportResult(paths, opset, weights, diff)
