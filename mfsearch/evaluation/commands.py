"""CLI command of the evaluation layer: ``latency`` (batch-1 latency of presets or config files on this machine)."""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import InputError
from ..models.commands import resolve


def cmd_latency(args: argparse.Namespace) -> int:
    from .latency import CPU_ONLY, DEPRECATED, RUNTIMES, LatencySettings, measure_latency
    from .settings import valid_device

    if not valid_device(args.device):
        raise InputError(f"--device: must be cpu, cuda, cuda:N or auto, got {args.device!r}")
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise InputError(f"--device {args.device}: no CUDA device is available on this machine; use --device cpu")
    for name, v, lo, hi in (("--input-size", args.input_size, 8, 4096), ("--runs", args.runs, 1, 100000),
                            ("--warmup", args.warmup, 0, 100000), ("--batch", args.batch, 1, 4096),
                            ("--threads", args.threads or 1, 1, 1024)):
        if not lo <= v <= hi:
            raise InputError(f"{name}: must be in [{lo}, {hi}], got {v}")
    if args.runtime not in (*RUNTIMES, "auto"):
        raise InputError(f"--runtime: choose one of auto, {', '.join(RUNTIMES)}")
    sizes = f"--batch {args.batch} x --input-size {args.input_size}"
    need, (free, where) = 4 * 3 * args.batch * args.input_size**2, _free_memory(args.device)
    if free is not None and need > free:
        raise InputError(f"{sizes}: the float32 input tensor alone needs {need / 2**30:.1f} GiB, more than the "
                         f"{free / 2**30:.1f} GiB of memory available ({where}); lower --batch or --input-size")
    settings = LatencySettings(device=args.device, threads=args.threads, runtime=args.runtime,
                               input_size=args.input_size, batch=args.batch, warmup=args.warmup, runs=args.runs)
    runtime = settings.resolved_runtime()
    if runtime in CPU_ONLY and args.device != "cpu":
        raise InputError(f"--runtime {runtime}: measures on the CPU; use --device cpu, or --runtime eager on "
                         f"{args.device}")
    if runtime == "onnxruntime":
        from ..deploy.runtime import RuntimeMissing, import_onnx, import_onnxruntime

        try:
            import_onnxruntime()
            import_onnx()
        except RuntimeMissing as e:
            raise InputError(f"--runtime {args.runtime}: {e}") from None
    if runtime in DEPRECATED:
        print(f"mfsearch: warning: {DEPRECATED[runtime]}", file=sys.stderr)
    from ..deploy.onnx_graph import ExportError

    rows = []
    for spec in args.models:
        cfg = resolve(spec)
        try:
            lat = measure_latency(cfg, settings, notify=lambda m: None)  # said once above
        except (MemoryError, RuntimeError) as e:
            if not _out_of_memory(e):
                raise
            raise InputError(f"{sizes}: ran out of memory measuring {cfg.name or spec} ({_oom_detail(e)}); lower "
                             "--batch or --input-size") from None
        except ExportError as e:
            raise InputError(f"{spec}: cannot export it for {runtime} ({e}); measure it with --runtime eager") from None
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
    from ..deploy.latency_table import loadavg

    return loadavg()


def _free_memory(device: str) -> tuple[int | None, str]:
    """Bytes a new tensor can take on ``device`` (``None`` where unknown), and where that figure comes from."""
    if device.startswith("cuda") or device == "auto":
        import torch

        if torch.cuda.is_available():
            index = torch.device(device if device != "auto" else "cuda").index
            free, _total = torch.cuda.mem_get_info(torch.cuda.current_device() if index is None else index)
            return free, "free GPU memory"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "MemAvailable"
    except (OSError, ValueError, IndexError):
        pass
    return None, ""


def _out_of_memory(e: BaseException) -> bool:
    """An allocator failure (CPU or GPU), as opposed to any other runtime error."""
    text = str(e).lower()
    return isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError" or "can't allocate memory" in text \
        or "out of memory" in text


def _oom_detail(e: BaseException) -> str:
    import re

    m = re.search(r"tried to allocate (\d+) bytes", str(e))
    if m:
        return f"an allocation of {int(m[1]) / 2**30:.2f} GiB failed"
    m = re.search(r"tried to allocate ([\d.]+ [KMGT]iB)", str(e))
    return f"an allocation of {m[1]} failed" if m else "the allocator refused"


def _loadavg() -> str:
    from ..deploy.latency_table import loadavg

    return loadavg()


def register(sub: argparse._SubParsersAction) -> None:
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
