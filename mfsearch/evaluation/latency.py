"""Batch-1 latency of a config on a device: warm-up, then the median of many timed runs.

The model is measured in its inference form (:func:`mfsearch.models.inference_model`: eval
mode, BatchNorm folded, channels_last) under one of three runtimes:

- ``jit``: frozen TorchScript with ``optimize_for_inference`` (what a CPU deployment runs;
  building it takes a few seconds; the default on CPU),
- ``eager``: the PyTorch module as it is (the default on CUDA, with bf16 autocast),
- ``compile``: ``torch.compile`` (slow to build on CPU: minutes for the larger models).

Every result carries the device description (CPU model and threads, or GPU name), the
runtime and the PyTorch version, so numbers from different machines are never mixed up.
"""

from __future__ import annotations

import dataclasses
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..fields import Ctx, choice_field, int_field, mapping_field, no_unknown
from ..models import MobileFormer, MobileFormerConfig, inference_model
from .settings import valid_device

RUNTIMES = ("jit", "eager", "compile")


@dataclass(frozen=True)
class LatencySettings:
    """How latency is measured (the ``latency:`` section of a space file)."""

    device: str = "cpu"
    threads: int | None = 1
    runtime: str = "auto"
    input_size: int = 224
    batch: int = 1
    warmup: int = 5
    runs: int = 30

    def resolved_runtime(self) -> str:
        if self.runtime != "auto":
            return self.runtime
        return "eager" if self.device.startswith("cuda") else "jit"


@dataclass(frozen=True)
class Latency:
    """A latency measurement: median and spread in milliseconds, with where it was measured."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    runs: int
    build_s: float
    device: str
    runtime: str
    threads: int | None
    input_size: int
    batch: int
    torch: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_description(device: str | torch.device, threads: int | None = None) -> str:
    """A one-line description of a device: ``"cpu: AMD EPYC (2 threads)"`` or the GPU's name."""
    dev = torch.device(device)
    if dev.type == "cuda":
        idx = dev.index if dev.index is not None else torch.cuda.current_device()
        return f"cuda: {torch.cuda.get_device_name(idx)}"
    n = threads or torch.get_num_threads()
    return f"cpu: {cpu_name()} ({n} thread{'s' if n != 1 else ''})"


def compile_for_inference(model: MobileFormer, example: torch.Tensor, runtime: str = "jit") -> Callable:
    """A callable computing ``model`` in inference form with the chosen runtime."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    fused = inference_model(model).to(example.device)
    if runtime == "eager":
        return fused
    if runtime == "compile":
        return torch.compile(fused)
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notice
        traced = torch.jit.trace(fused, example)
        return torch.jit.optimize_for_inference(torch.jit.freeze(traced))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_latency(cfg: MobileFormerConfig, settings: LatencySettings | None = None, seed: int = 0) -> Latency:
    """Median batch-``settings.batch`` latency of ``cfg`` (random weights: latency does not depend on them)."""
    s = settings or LatencySettings()
    device = torch.device(s.device if s.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"latency device {s.device}: no CUDA device is available here")
    saved_threads = torch.get_num_threads()
    if s.threads:
        torch.set_num_threads(s.threads)
    try:
        runtime = s.resolved_runtime()
        gen = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = MobileFormer(cfg).eval()
        x = torch.randn(s.batch, 3, s.input_size, s.input_size, generator=gen).to(device)
        x = x.contiguous(memory_format=torch.channels_last)
        t0 = time.perf_counter()
        fn = compile_for_inference(model.to(device), x, runtime)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
        times = []
        with torch.inference_mode(), autocast:
            for _ in range(max(1, s.warmup)):
                fn(x)
            _sync(device)
            build_s = time.perf_counter() - t0
            for _ in range(s.runs):
                t = time.perf_counter()
                fn(x)
                _sync(device)
                times.append((time.perf_counter() - t) * 1e3)
        q = statistics.quantiles(times, n=10) if len(times) >= 2 else [times[0]] * 9
        return Latency(median_ms=round(statistics.median(times), 4), p10_ms=round(q[0], 4), p90_ms=round(q[-1], 4),
                       mean_ms=round(statistics.fmean(times), 4), runs=s.runs, build_s=round(build_s, 3),
                       device=device_description(device, s.threads), runtime=runtime,
                       threads=s.threads if device.type == "cpu" else None, input_size=s.input_size, batch=s.batch,
                       torch=torch.__version__)
    finally:
        torch.set_num_threads(saved_threads)


def parse_latency(ctx: Ctx, raw: Any) -> LatencySettings:
    d = mapping_field(ctx, raw, "latency")
    no_unknown(ctx, d, {f.name for f in dataclasses.fields(LatencySettings)}, "latency")
    kw: dict[str, Any] = {}
    if "device" in d:
        dev = d["device"]
        if not valid_device(dev):
            raise ctx.err("latency.device", f"must be cpu, cuda, cuda:N or auto, got {dev!r}")
        kw["device"] = dev
    if "threads" in d:
        kw["threads"] = int_field(ctx, d["threads"], "latency.threads", 1, 1024, optional=True)
    if "runtime" in d:
        kw["runtime"] = choice_field(ctx, d["runtime"], "latency.runtime", ("auto", *RUNTIMES))
    for k, (lo, hi) in {"input_size": (8, 4096), "batch": (1, 4096), "warmup": (0, 10000),
                        "runs": (1, 100000)}.items():
        if k in d:
            kw[k] = int_field(ctx, d[k], f"latency.{k}", lo, hi)
    return LatencySettings(**kw)
