"""The ``mfsearch`` command line. Each command imports what it needs when it runs."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

EXIT_USAGE = 2


# A user-facing error: printed as one line, exit code 2 (shared with the library's input errors,
# so the class is the same whether this module runs as ``__main__`` or is imported).
from .yamlio import InputError as UsageError  # noqa: E402


def _fmt_m(n: int) -> str:
    return f"{n / 1e6:,.2f}M"


def _resolve(spec: str, num_classes: int | None = None) -> Any:
    from .models import ConfigError, resolve_config
    from .yamlio import InputError

    try:
        cfg = resolve_config(spec)
        return cfg.replace(num_classes=num_classes) if num_classes is not None else cfg
    except ConfigError as e:
        raise UsageError(str(e)) from None
    except KeyError as e:
        raise UsageError(e.args[0]) from None
    except InputError as e:
        raise UsageError(str(e)) from None


def cmd_info(args: argparse.Namespace) -> int:
    from .models import PAPER, complexity

    cfg = _resolve(args.model, args.num_classes)
    if args.input_size < 8 or args.input_size > 4096:
        raise UsageError(f"--input-size: must be in [8, 4096], got {args.input_size}")
    cx = complexity(cfg, args.input_size, per_block=True)
    paper = PAPER.get(cfg.name) if args.input_size == 224 and cfg.num_classes == 1000 else None
    if args.json:
        out = {
            "name": cfg.name, "arch_id": cfg.arch_id, "input_size": args.input_size,
            "num_classes": cfg.num_classes, "params": cx.params, "macs": cx.macs,
            "blocks": [
                {"name": b.name, "c_in": b.c_in, "c_out": b.c_out, "size_in": list(b.size_in),
                 "size_out": list(b.size_out), "macs": b.macs, "params": b.params}
                for b in cx.blocks
            ],
            "config": cfg.to_dict(),
        }
        if paper:
            out["paper"] = {"params_m": paper.params_m, "macs_m": paper.macs_m, "top1": paper.top1}
        print(json.dumps(out, indent=2))
        return 0
    print(f"{cfg.name or 'config'}  arch_id {cfg.arch_id}  input {args.input_size}x{args.input_size}  "
          f"classes {cfg.num_classes}")
    print(cfg.summary())
    hdr = f"{'part':<14}{'resolution':>14}{'channels':>14}{'MACs':>14}{'params':>14}{'MACs %':>9}{'params %':>10}"
    print(hdr)
    print("-" * len(hdr))
    for b in cx.blocks:
        res = f"{b.size_in[0]}->{b.size_out[0]}"
        ch = f"{b.c_in}->{b.c_out}"
        print(f"{b.name:<14}{res:>14}{ch:>14}{b.macs:>14,}{b.params:>14,}"
              f"{100 * b.macs / cx.macs:>8.1f}%{100 * b.params / cx.params:>9.1f}%")
    print("-" * len(hdr))
    print(f"{'total':<42}{cx.macs:>14,}{cx.params:>14,}")
    print(f"MACs {_fmt_m(cx.macs)}  params {_fmt_m(cx.params)}")
    if paper:
        print(f"paper: MACs {paper.macs_m}M  params {paper.params_m}M  ImageNet top-1 {paper.top1}")
    return 0


def build_parser(extra: Sequence[Callable[[argparse._SubParsersAction], None]] = ()) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mfsearch",
        description="Architecture search and ablation studies around Mobile-Former.",
    )
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    info = sub.add_parser("info", help="per-block MACs/params table of a preset or config file")
    info.add_argument("model", help="a preset name (e.g. mobile_former_294m) or a config .yaml")
    info.add_argument("--input-size", type=int, default=224, help="square input size (default 224)")
    info.add_argument("--num-classes", type=int, default=None, help="classifier classes (default 1000)")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.set_defaults(func=cmd_info)
    lat = sub.add_parser("latency", help="batch-1 latency of presets or config files on this machine")
    lat.add_argument("models", nargs="+", help="preset names or config .yaml files")
    lat.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    lat.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    lat.add_argument("--runtime", default="auto",
                     help="auto (onnxruntime on CPU, eager on CUDA), onnxruntime, eager, compile, jit (deprecated)")
    lat.add_argument("--input-size", type=int, default=224, help="square input size (default 224)")
    lat.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    lat.add_argument("--warmup", type=int, default=5, help="untimed runs first (default 5)")
    lat.add_argument("--runs", type=int, default=30, help="timed runs; the median is reported (default 30)")
    lat.add_argument("--json", action="store_true", help="machine-readable output")
    lat.set_defaults(func=cmd_latency)
    info_models = sub.add_parser("models", help="list the registered presets")
    info_models.set_defaults(func=cmd_models)
    for add in extra:
        add(sub)
    return p


def cmd_models(args: argparse.Namespace) -> int:
    from .models import PAPER, complexity, get_config, list_models

    for name in list_models():
        cx = complexity(get_config(name))
        paper = PAPER[name]
        print(f"{name:<20} MACs {_fmt_m(cx.macs):>9}  params {_fmt_m(cx.params):>7}  paper top-1 {paper.top1}")
    return 0


def cmd_latency(args: argparse.Namespace) -> int:
    import re

    from .latency import CPU_ONLY, DEPRECATED, RUNTIMES, LatencySettings, measure_latency

    if not re.fullmatch(r"cpu|cuda(:\d+)?|auto", args.device):
        raise UsageError(f"--device: must be cpu, cuda, cuda:N or auto, got {args.device!r}")
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UsageError(f"--device {args.device}: no CUDA device is available on this machine; use --device cpu")
    for name, v, lo, hi in (("--input-size", args.input_size, 8, 4096), ("--runs", args.runs, 1, 100000),
                            ("--warmup", args.warmup, 0, 100000), ("--batch", args.batch, 1, 4096),
                            ("--threads", args.threads or 1, 1, 1024)):
        if not lo <= v <= hi:
            raise UsageError(f"{name}: must be in [{lo}, {hi}], got {v}")
    if args.runtime not in (*RUNTIMES, "auto"):
        raise UsageError(f"--runtime: choose one of auto, {', '.join(RUNTIMES)}")
    settings = LatencySettings(device=args.device, threads=args.threads, runtime=args.runtime,
                               input_size=args.input_size, batch=args.batch, warmup=args.warmup, runs=args.runs)
    runtime = settings.resolved_runtime()
    if runtime in CPU_ONLY and args.device != "cpu":
        raise UsageError(f"--runtime {runtime}: measures on the CPU; use --device cpu, or --runtime eager on "
                         f"{args.device}")
    if runtime == "onnxruntime":
        from .deploy.runtime import RuntimeMissing, import_onnx, import_onnxruntime

        try:
            import_onnxruntime()
            import_onnx()
        except RuntimeMissing as e:
            raise UsageError(f"--runtime {args.runtime}: {e}") from None
    if runtime in DEPRECATED:
        print(f"mfsearch: warning: {DEPRECATED[runtime]}", file=sys.stderr)
    from .deploy.onnx_graph import ExportError

    rows = []
    for spec in args.models:
        cfg = _resolve(spec)
        try:
            lat = measure_latency(cfg, settings, notify=lambda m: None)  # said once above
        except ExportError as e:
            raise UsageError(f"{spec}: cannot export it for {runtime} ({e}); measure it with --runtime eager") from None
        rows.append({"model": cfg.name or spec, "arch_id": cfg.arch_id, **lat.to_dict()})
        if not args.json:
            if len(rows) == 1:
                print(f"{lat.device}, runtime {lat.runtime} ({lat.runtime_version}), batch {lat.batch}, "
                      f"{lat.input_size}x{lat.input_size}, median of {lat.runs} runs after {settings.warmup} warm-up, "
                      f"load {_loadavg()}")
                print(f"{'model':<28}{'median ms':>11}{'p10':>9}{'p90':>9}{'build s':>9}{'cpu ms':>9}")
            cpu = f"{lat.cpu_median_ms:>9.2f}" if lat.cpu_median_ms is not None else f"{'-':>9}"
            print(f"{rows[-1]['model']:<28}{lat.median_ms:>11.2f}{lat.p10_ms:>9.2f}{lat.p90_ms:>9.2f}{lat.build_s:>9.2f}"
                  f"{cpu}", flush=True)
    if args.json:
        print(json.dumps(rows if len(rows) > 1 else rows[0], indent=2))
    return 0


def _loadavg() -> str:
    from .deploy.latency_table import loadavg

    return loadavg()


def _search_commands() -> list[Callable[[argparse._SubParsersAction], None]]:
    from .ablation.commands import register as ablation
    from .deploy.commands import register as deploy
    from .proxycheck_commands import register as proxy_check
    from .search.commands import register as search

    return [search, ablation, proxy_check, deploy]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(_search_commands())
    args = parser.parse_args(argv)
    if args.version:
        from . import __version__

        print(__version__)
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except UsageError as e:
        print(f"mfsearch: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("mfsearch: interrupted; stored results are kept", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (``mfsearch info ... | head``): a normal end
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0


if __name__ == "__main__":
    sys.exit(main())
