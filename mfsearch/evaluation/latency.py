"""Batch-1 latency of a config on a device: warm-up, then the median of many timed runs.

The model is measured in its inference form (:func:`mfsearch.models.inference_model`: eval
mode, BatchNorm folded) under one of four runtimes:

- ``onnxruntime``: the ONNX graph of :mod:`mfsearch.deploy.onnx_graph` in ONNX Runtime (CPU
  execution provider, intra-op threads = ``threads``, inter-op 1, all graph optimisations): what
  a CPU deployment runs, built from memory in well under a second; the default on CPU,
- ``eager``: the PyTorch module as it is, channels_last (the default on CUDA, with bf16 autocast),
- ``compile``: ``torch.compile`` (slow to build on CPU: minutes for the larger models),
- ``jit``: frozen TorchScript with ``optimize_for_inference``; deprecated (torch 2.13 deprecates
  ``torch.jit``), kept for comparison with earlier figures; using it says so once.

Every result carries the device description (CPU model and threads, or GPU name), the
runtime and its version, and the PyTorch version, so numbers from different machines or
runtimes are never mixed up.
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

RUNTIMES = ("onnxruntime", "eager", "compile", "jit")
#: runtimes that still work but are on their way out: runtime -> the one line that says so
DEPRECATED = {"jit": "runtime jit (frozen TorchScript) is deprecated, as torch.jit is in torch 2.13, and will be "
                     "removed; use onnxruntime (the CPU default) or eager"}
CPU_ONLY = ("onnxruntime",)
#: where a search's latency comes from: timed per sample, or predicted from a latency table (no model built)
SOURCES = ("measured", "predicted")
#: which figure of a measurement counts (budgets, objectives, table entries) -> the :class:`Latency` field
#: holding it. ``wall``: the median wall clock (what a user waits; disturbed by every neighbour of a shared
#: machine); ``cpu_min``: the minimum CPU time per run (with one thread, the latency of an idle core, and the
#: figure neighbours disturb least); ``wall_min`` and ``cpu`` (median CPU time) in between.
STATISTICS = {"cpu_min": "cpu_min_ms", "cpu": "cpu_median_ms", "wall_min": "min_ms", "wall": "median_ms"}


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
    #: ``measured`` (each sample is timed) or ``predicted`` (summed from ``table``; the front is timed afterwards)
    source: str = "measured"
    table: str | None = None  # a latency table file, as written in the space file (relative to it)
    statistic: str = "wall"  # a key of STATISTICS: the figure budgets and objectives use

    def resolved_runtime(self) -> str:
        if self.runtime != "auto":
            return self.runtime
        return "eager" if self.device.startswith("cuda") else "onnxruntime"


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
    runtime_version: str  # "onnxruntime 1.32.0", "torch 2.13.0+cpu"
    threads: int | None
    input_size: int
    batch: int
    torch: str
    #: CPU time of the process per run (CPU only), median and minimum, and the wall clock's minimum: on a
    #: shared machine the wall clock also counts the time other processes hold the core; with one thread the
    #: CPU time is the latency of an idle core, and its minimum the figure least disturbed by neighbours
    cpu_median_ms: float | None = None
    cpu_min_ms: float | None = None
    min_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def value(self, statistic: str) -> float:
        """The figure ``statistic`` (a key of :data:`STATISTICS`); ValueError where it was not measured."""
        v = getattr(self, STATISTICS[statistic])
        if v is None:
            raise ValueError(f"statistic {statistic} is not measured on {self.device} (CPU time is measured on the "
                             "CPU only); use wall or wall_min")
        return float(v)


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


def runtime_version(runtime: str) -> str:
    """The software that runs ``runtime``, with its version (stored beside every measurement)."""
    if runtime == "onnxruntime":
        from ..deploy.runtime import ort_version

        return ort_version()
    return f"torch {torch.__version__}"


class _OrtCallable:
    """An ONNX Runtime session called like a module: torch tensor in, torch tensor out."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.input = session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {self.input: x.detach().cpu().contiguous().numpy()})[0])


def _warn_deprecated(runtime: str, notify: Callable[[str], None] | None) -> None:
    if runtime in DEPRECATED:
        if notify is not None:
            notify(DEPRECATED[runtime])
        else:
            warnings.warn(DEPRECATED[runtime], FutureWarning, stacklevel=3)


def compile_for_inference(model: MobileFormer, example: torch.Tensor, runtime: str = "onnxruntime",
                          threads: int | None = None, notify: Callable[[str], None] | None = None) -> Callable:
    """A callable computing ``model`` in inference form with the chosen runtime.

    ``threads`` sets ONNX Runtime's intra-op threads (the torch runtimes use torch's setting).
    ``notify`` receives the one-line notice of a deprecated runtime (default: a ``FutureWarning``).
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    if runtime in CPU_ONLY and example.device.type != "cpu":
        raise ValueError(f"runtime {runtime} measures on the CPU; use device cpu, or runtime eager on {example.device}")
    _warn_deprecated(runtime, notify)
    if runtime == "onnxruntime":
        from ..deploy.onnx_graph import model_proto
        from ..deploy.runtime import make_session

        proto = model_proto(model, example.shape[-1], batch=example.shape[0])
        return _OrtCallable(make_session(proto, threads or torch.get_num_threads()))
    fused = inference_model(model).to(example.device)
    if runtime == "eager":
        return fused
    if runtime == "compile":
        return torch.compile(fused)
    with torch.inference_mode():
        traced = torch.jit.trace(fused, example)
        return torch.jit.optimize_for_inference(torch.jit.freeze(traced))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_latency(cfg: MobileFormerConfig, settings: LatencySettings | None = None, seed: int = 0,
                    notify: Callable[[str], None] | None = None) -> Latency:
    """Median batch-``settings.batch`` latency of ``cfg`` (random weights: latency does not depend on them).

    ``build_s`` is the time from the built PyTorch model to the end of the warm-up (export and
    session, trace and freeze, or compile); ``notify`` as in :func:`compile_for_inference`.
    """
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
        if runtime != "onnxruntime":
            x = x.contiguous(memory_format=torch.channels_last)
        t0 = time.perf_counter()
        fn = compile_for_inference(model.to(device), x, runtime, threads=s.threads, notify=notify)
        if isinstance(fn, _OrtCallable):  # time the session alone, as a deployment calls it
            sess, feeds = fn.session, {fn.input: x.numpy()}
            call: Callable[[], Any] = lambda: sess.run(None, feeds)
        else:
            call = lambda: fn(x)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
        times, cpu = [], []
        with torch.inference_mode(), autocast:
            for _ in range(max(1, s.warmup)):
                call()
            _sync(device)
            build_s = time.perf_counter() - t0
            for _ in range(s.runs):
                t, c = time.perf_counter(), time.process_time()
                call()
                _sync(device)
                times.append((time.perf_counter() - t) * 1e3)
                cpu.append((time.process_time() - c) * 1e3)
        q = statistics.quantiles(times, n=10) if len(times) >= 2 else [times[0]] * 9
        return Latency(median_ms=round(statistics.median(times), 4), p10_ms=round(q[0], 4), p90_ms=round(q[-1], 4),
                       mean_ms=round(statistics.fmean(times), 4), runs=s.runs, build_s=round(build_s, 3),
                       device=device_description(device, s.threads), runtime=runtime,
                       runtime_version=runtime_version(runtime),
                       threads=s.threads if device.type == "cpu" else None, input_size=s.input_size, batch=s.batch,
                       torch=torch.__version__,
                       cpu_median_ms=round(statistics.median(cpu), 4) if device.type == "cpu" else None,
                       cpu_min_ms=round(min(cpu), 4) if device.type == "cpu" else None, min_ms=round(min(times), 4))
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
    if "source" in d:
        kw["source"] = choice_field(ctx, d["source"], "latency.source", SOURCES)
    if "statistic" in d:
        kw["statistic"] = choice_field(ctx, d["statistic"], "latency.statistic", tuple(STATISTICS))
    if "table" in d and d["table"] is not None:
        if not isinstance(d["table"], str) or not d["table"].strip():
            raise ctx.err("latency.table", "must be the path of a latency table file (relative to this file)")
        kw["table"] = d["table"]
    s = LatencySettings(**kw)
    if s.statistic.startswith("cpu") and s.device != "cpu":
        raise ctx.err("latency.statistic", f"{s.statistic} is CPU time, measured on device cpu only; use wall or "
                      "wall_min")
    if s.source == "predicted":
        if s.table is None:
            raise ctx.err("latency.table", "source predicted needs a table: build one with `mfsearch latency-table "
                          "build --space <this file>` and name it here")
        for fld, ok, rule in (("device", s.device == "cpu", "must be cpu"),
                              ("runtime", s.resolved_runtime() == "onnxruntime", "must be onnxruntime or auto"),
                              ("batch", s.batch == 1, "must be 1"), ("threads", s.threads is not None, "must be set")):
            if not ok:
                raise ctx.err(f"latency.{fld}", f"{rule}: a latency table holds batch-1 ONNX Runtime CPU times")
        if "statistic" not in d:
            raise ctx.err("latency.statistic", "source predicted needs the statistic said explicitly (the one the "
                          "table was built with, e.g. cpu_min): a study never mixes two")
    elif s.table is not None:
        raise ctx.err("latency.table", "is read with source: predicted only")
    return s
