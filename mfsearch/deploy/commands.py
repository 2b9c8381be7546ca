"""CLI commands of the deployment layer: ``export`` and ``latency-table build | predict | check``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from .onnx_graph import DEFAULT_OPSET


def _usage_error(msg: str) -> Exception:
    from ..errors import InputError

    return InputError(msg)


def _input_errors() -> tuple[type[BaseException], ...]:
    from ..errors import InputError
    from ..models import ConfigError
    from .onnx_graph import ExportError
    from .runtime import RuntimeMissing

    return InputError, ConfigError, ExportError, RuntimeMissing


def _size_mb(p: Path) -> str:
    return f"{p.stat().st_size / 2**20:.1f} MB"


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_files, parse_formats, resolve_source

    try:
        formats = parse_formats(args.format)
        source = resolve_source(args.target, args.rank, args.arch_id, args.storage, args.runs_dir)
        if args.num_classes is not None:
            source = dataclasses.replace(source, cfg=source.cfg.replace(num_classes=args.num_classes))
        res = export_files(source, formats, args.out, args.opset, args.input_size, args.seed)
    except _input_errors() as e:
        raise _usage_error(str(e)) from None
    print(f"{source.cfg.name or source.stem}: {source.origin}, arch_id {source.cfg.arch_id}; "
          f"weights: {res.weights}")
    if "onnx" in res.paths:
        check = f"ONNX Runtime vs PyTorch max |diff| {res.max_abs_diff:.1e}" if res.max_abs_diff is not None else \
            "not run in ONNX Runtime"
        print(f"  onnx  {res.paths['onnx']}  opset {res.opset}, input 'input' (batch x 3 x {args.input_size} x "
              f"{args.input_size}), output 'logits'; onnx.checker ok; {check}; {_size_mb(res.paths['onnx'])}")
    if "yaml" in res.paths:
        print(f"  yaml  {res.paths['yaml']}  (mfsearch info / mfsearch.create_model read it)")
    if "pt" in res.paths:
        print(f"  pt    {res.paths['pt']}  state dict: torch.load(path, weights_only=True); "
              f"{_size_mb(res.paths['pt'])}")
    return 0


def _default_table_path(args: argparse.Namespace, name: str) -> Path:
    from ..store import runs_dir

    return runs_dir(args.runs_dir) / "latency_tables" / f"{name}_onnxruntime_t{args.threads}_{args.input_size}.json"


def cmd_table_build(args: argparse.Namespace) -> int:
    from ..evaluation.latency import cpu_name
    from ..models import get_config, list_models
    from .latency_table import (
        CALIBRATION_SEED,
        RUNTIMES,
        build_table,
        sample_space_configs,
        space_unit_keys,
        unit_keys,
    )
    from .runtime import import_onnxruntime

    if args.runtime not in RUNTIMES:
        raise _usage_error(f"--runtime: a latency table is measured on {', '.join(RUNTIMES)}; got {args.runtime!r}")
    for name, v, lo, hi in (("--threads", args.threads, 1, 1024), ("--input-size", args.input_size, 32, 4096),
                            ("--calibration", args.calibration, 0, 1000), ("--max-units", args.max_units, 1, 10**6),
                            ("--rounds", args.rounds, 1, 100)):
        if not lo <= v <= hi:
            raise _usage_error(f"{name}: must be in [{lo}, {hi}], got {v}")
    try:
        import_onnxruntime()
        keys: set = set()
        name, calibration = "presets", []
        if args.space:
            from ..space import load_space

            space = load_space(args.space)
            name = space.name
            keys |= space_unit_keys(space, args.input_size)
            calibration = [c for _, c in sample_space_configs(space, args.calibration, CALIBRATION_SEED)]
        presets = [] if args.no_presets else list_models()
        for p in presets:
            keys |= set(unit_keys(get_config(p), args.input_size))
        if not args.space:  # no space: calibrate on the presets themselves
            calibration = [get_config(p) for p in presets[: args.calibration]]
    except _input_errors() as e:
        raise _usage_error(str(e)) from None
    if not keys:
        raise _usage_error("--space / --no-presets: nothing to measure; give a space file or keep the presets")
    if len(keys) > args.max_units:
        raise _usage_error(f"--space: {len(keys)} distinct units to measure (more than --max-units {args.max_units}); "
                           "narrow the space or raise --max-units")
    out = Path(args.out) if args.out else _default_table_path(args, name)
    print(f"latency table for {name}: {len(keys)} units + {len(calibration)} calibration configs on "
          f"{cpu_name()}, onnxruntime, {args.threads} thread(s), input {args.input_size}", file=sys.stderr, flush=True)
    meta = {"space": str(args.space or ""), "space_name": name, "presets": presets}
    try:
        table = build_table(keys, calibration, threads=args.threads, input_size=args.input_size,
                            rounds=args.rounds, statistic=None if args.statistic == "auto" else args.statistic,
                            log=lambda m: print(m, file=sys.stderr, flush=True), meta=meta)
        table.save(out)
    except _input_errors() as e:
        raise _usage_error(str(e)) from None
    print(f"wrote {out}: {len(table.entries)} units, correction: measured = {table.scale:.4f} x sum "
          f"{table.offset_ms:+.3f} ms {table.per_unit_ms:+.4f} ms/unit {table.per_bridge_ms:+.4f} ms per "
          f"Mobile->Former bridge; built in {table.meta['build_s']:.0f} s "
          f"(load {table.meta['load_start']} -> {table.meta['load_end']})")
    return 0


def _load(args: argparse.Namespace) -> Any:
    from .latency_table import load_table

    try:
        return load_table(args.table, threads=args.threads, input_size=args.input_size)
    except _input_errors() as e:
        raise _usage_error(str(e)) from None


def cmd_table_predict(args: argparse.Namespace) -> int:
    from ..models.commands import resolve

    table = _load(args)
    rows = []
    for spec in args.models:
        cfg = resolve(spec)
        pred = table.predict(cfg, on_missing="measure" if args.measure_missing else "estimate")
        rows.append({"model": cfg.name or spec, "arch_id": cfg.arch_id, "predicted_ms": round(pred.ms, 4),
                     "summed_ms": round(pred.summed_ms, 4), "units": len(pred.units),
                     "units_not_in_table": [{"key": list(k), "ms": round(ms, 5), "source": s}
                                            for k, ms, s in pred.units if s != "table"]})
    if args.measure_missing and any(r["units_not_in_table"] for r in rows):
        table.save(table.path)
    if args.json:
        print(json.dumps(rows if len(rows) > 1 else rows[0], indent=2))
        return 0
    print(f"{table.device}, {table.runtime_version}, input {table.input_size}: predicted batch-1 latency")
    for r in rows:
        miss = r["units_not_in_table"]
        note = f"  ({len(miss)} of {r['units']} units not in the table: " \
               f"{'measured and added' if args.measure_missing else 'estimated'})" if miss else ""
        print(f"{r['model']:<28}{r['predicted_ms']:>10.2f} ms{note}")
    return 0


def cmd_table_check(args: argparse.Namespace) -> int:
    from ..models import get_config, list_models
    from .latency_table import evaluate_table, sample_space_configs

    table = _load(args)
    configs = []
    try:
        if args.space:
            from ..space import load_space

            space = load_space(args.space)
            configs += [(f"{space.name}/seed{s}", c) for s, c in sample_space_configs(space, args.configs, args.seed)]
    except _input_errors() as e:
        raise _usage_error(str(e)) from None
    if not args.no_presets:
        configs += [(p, get_config(p)) for p in list_models()]
    if not configs:
        raise _usage_error("--space / --no-presets: no configs to check")
    try:
        res = evaluate_table(table, configs, runs=args.runs, rounds=args.rounds, log=None if args.json else print)
    except ValueError as e:
        raise _usage_error(f"--seed: {e}") from None
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    if "against_wall_clock" in res:
        w = res["against_wall_clock"]
        print(f"against the wall clock instead: RMSE {w['rmse_pct']:.1f}%, within +/-10% {w['within_10_pct']:.0f}%, "
              f"Spearman {w['spearman']:.3f}")
    print(f"{res['n']} configs ({res['statistic']} time): RMSE {res['rmse_pct']:.1f}%, "
          f"within +/-10% {res['within_10_pct']:.0f}%, "
          f"Spearman {res['spearman']:.3f}, mean error {res['mean_error_pct']:+.1f}%, "
          f"worst {res['max_abs_error_pct']:.1f}%")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    ex = sub.add_parser("export", help="write a preset, a config file or a study member as ONNX / YAML / state dict")
    ex.add_argument("target", help="a preset name, a config .yaml, or a study (space file, run directory, name)")
    ex.add_argument("--format", default="onnx", help="comma-separated: onnx, yaml, pt (default onnx)")
    ex.add_argument("--out", default="exports", help="output folder (default exports)")
    ex.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    ex.add_argument("--input-size", type=int, default=224, help="square input size of the ONNX graph (default 224)")
    ex.add_argument("--rank", type=int, default=None, help="study: the K-th member of the Pareto front (default 1)")
    ex.add_argument("--arch-id", default=None, help="study: the architecture with this arch_id")
    ex.add_argument("--storage", default=None, help="study: storage URL (default: the run directory's)")
    ex.add_argument("--runs-dir", default=None, help="where run directories live (default ./runs or $MFSEARCH_RUNS)")
    ex.add_argument("--num-classes", type=int, default=None, help="override the classifier's classes")
    ex.add_argument("--seed", type=int, default=0, help="seed of the weight initialisation (default 0)")
    ex.set_defaults(func=cmd_export)

    lt = sub.add_parser("latency-table", help="measure a latency lookup table on this machine; predict with it")
    ltsub = lt.add_subparsers(dest="table_command", metavar="ACTION", required=True)
    b = ltsub.add_parser("build", help="measure every unit a space (and the presets) can have")
    b.add_argument("--runtime", default="onnxruntime", help="onnxruntime (the only one for now)")
    b.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    b.add_argument("--input-size", type=int, default=224, help="square input size (default 224)")
    b.add_argument("--space", default=None, help="a space file: every unit its configs can have")
    b.add_argument("--out", default=None, help="table file (default runs/latency_tables/<space>_...json)")
    b.add_argument("--calibration", type=int, default=30,
                   help="seeded configs of the space measured end to end to fit the correction (default 30: "
                   "enough to judge the four-term fit out of sample)")
    b.add_argument("--no-presets", action="store_true", help="leave out the units of the seven presets")
    b.add_argument("--statistic", default="auto", choices=("auto", "cpu_min", "cpu", "wall_min", "wall"),
                   help="what an entry holds: the minimum or median CPU time per run, or of the wall clock "
                        "(auto: cpu_min with 1 thread, wall_min with more: least disturbed by other processes)")
    b.add_argument("--rounds", type=int, default=2, help="interleaved passes over the calibration configs (default 2)")
    b.add_argument("--max-units", type=int, default=20000, help="refuse spaces with more units (default 20000)")
    b.add_argument("--runs-dir", default=None,
                   help="where the default table path lives (default ./runs or $MFSEARCH_RUNS)")
    b.set_defaults(func=cmd_table_build)
    for name, helptext in (("predict", "predicted latency of presets or config files"),
                           ("check", "predicted vs measured latency: RMSE, share within 10%%, Spearman")):
        p = ltsub.add_parser(name, help=helptext)
        p.add_argument("table", help="a table file from `mfsearch latency-table build`")
        p.add_argument("--threads", type=int, default=None, help="refuse a table built for other threads")
        p.add_argument("--input-size", type=int, default=None, help="refuse a table built for another input size")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        if name == "predict":
            p.add_argument("models", nargs="+", help="preset names or config .yaml files")
            p.add_argument("--measure-missing", action="store_true",
                           help="measure units the table lacks and add them to it (instead of estimating)")
            p.set_defaults(func=cmd_table_predict)
        else:
            p.add_argument("--space", default=None, help="also check seeded configs of this space")
            p.add_argument("--configs", type=int, default=50, help="seeded space configs (default 50)")
            p.add_argument("--seed", type=int, default=0, help="first seed of the space configs (default 0)")
            p.add_argument("--runs", type=int, default=30, help="timed runs per measured config (default 30)")
            p.add_argument("--rounds", type=int, default=2, help="interleaved passes over the configs (default 2)")
            p.add_argument("--no-presets", action="store_true", help="leave out the seven presets")
            p.set_defaults(func=cmd_table_check)
