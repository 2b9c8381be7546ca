"""Training and inference images/s of mfsearch's Mobile-Former against a plain eager baseline, side by side.

    python benchmarks/bench_speed.py [--device cpu|cuda|all] [--models 294m,52m] [--quick] [--threads N]
                                     [--json out.json] [--no-compile] [--compile-timeout S] [--verbose]

The baseline is ``benchmarks/baseline_mobile_former.py``: the same function and weights in plain
eager PyTorch (``tests/test_benchmark_baseline.py`` holds the two equal). For every device, model
and resolution (224 and the 32x32 proxy) it measures:

- training: the baseline's plain loop (``AdamW`` with default settings; fp32 channels-first on CPU,
  bf16 autocast + channels_last on CUDA) against mfsearch's own training step
  (:class:`mfsearch.evaluation.train.TrainStep`, no label smoothing, the same weight decay), plus
  ``torch.compile`` of that step on CUDA;
- inference: the baseline in eval mode under ``no_grad`` against
  :func:`mfsearch.models.inference_model` (BatchNorm folded, channels_last) under
  ``inference_mode``, plus frozen TorchScript on CPU when :mod:`mfsearch.evaluation.latency` provides it;
  bf16 autocast for both on CUDA;
- the peak memory of the training step.

Every (implementation, model, resolution) lives in its own fresh process (so its peak memory is
its own); the parent drives them in turn, interleaving the cells of one setting (baseline,
mfsearch, baseline, mfsearch...) and keeping the best round of each, to be fair under machine
noise. Only one process works at any time.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import multiprocessing as mp
import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F

from mfsearch.evaluation.latency import cpu_name

BASELINE_FILE = Path(__file__).resolve().parent / "baseline_mobile_former.py"
LR = 1e-3
WEIGHT_DECAY = 0.01  # torch.optim.AdamW's default, used by both sides
#: (device, resolution) -> (train batch, inference batch)
BATCHES = {("cpu", 224): (32, 32), ("cpu", 32): (128, 256), ("cuda", 224): (256, 256), ("cuda", 32): (512, 512)}
CLASSES = {224: 1000, 32: 10}  # ImageNet at 224, a 10-class proxy data set at 32x32
#: (device, resolution) -> minimal train-speed ratio mfsearch / baseline
TARGETS = {("cuda", 224): 2.0, ("cuda", 32): 4.0, ("cpu", 224): 1.3, ("cpu", 32): 1.3}
CALL_TIMEOUT_S = 1800.0
VERBOSE = [False]  # set by --verbose: one line per timed round


@dataclass(frozen=True)
class Setting:
    """One row of the table: a (device, model, resolution) with its batch sizes and threads."""

    device: str
    model: str
    size: int
    train_batch: int
    infer_batch: int
    num_classes: int
    threads: int


@dataclass(frozen=True)
class Plan:
    """How long to measure each cell.

    ``warmup`` untimed calls, then ``min_repeats``..``max_repeats`` interleaved timed rounds (as many
    single-step rounds of the slowest cell as fit in ``cell_s``), each round long enough that a cell
    gets about ``cell_s`` seconds of timing in all, and at least ``min_steps`` steps.
    """

    warmup: int
    cell_s: float
    min_repeats: int
    max_repeats: int
    min_steps: int

    def repeats(self, slowest_step_s: float) -> int:
        return min(self.max_repeats, max(self.min_repeats, int(self.cell_s // max(slowest_step_s, 1e-6))))

    def steps(self, step_s: float, repeats: int) -> int:
        return max(self.min_steps, math.ceil(self.cell_s / repeats / max(step_s, 1e-6)))


#: warm-up goes on until two steps in a row agree within this fraction (at most WARMUP_MAX steps)
SETTLED = 0.10
WARMUP_MAX = 12


def plan_for(device: str, quick: bool) -> Plan:
    """``warmup`` is the least number of warm-up steps; every implementation then warms up until settled.

    On CPU an implementation's first steps are slow (allocator, oneDNN primitive caches): the plain
    baseline at 294M@224 needs about four to settle, mfsearch two; timing either before it
    settles flatters the other.
    """
    if device == "cuda":
        return Plan(3, 1.0, 2, 3, 20) if quick else Plan(5, 3.0, 3, 5, 20)
    return Plan(2, 1.0, 2, 3, 1) if quick else Plan(3, 3.0, 3, 5, 1)


# ----------------------------------------------------------------------------- worker side


def _baseline_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("baseline_mobile_former", BASELINE_FILE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _rss_bytes() -> int:
    """Current resident set size of this process."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return _peak_rss_bytes()


def _peak_rss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # bytes on macOS, KiB on Linux


class Cell:
    """One implementation of one setting, built in a worker process: timed training and inference calls."""

    def __init__(self, impl: str, s: Setting) -> None:
        from mfsearch.evaluation.settings import Evaluation
        from mfsearch.evaluation.train import TrainStep, autocast_dtype
        from mfsearch.models import MobileFormer, get_config

        torch.set_num_threads(s.threads)
        self.impl = impl
        self.device = torch.device(s.device)
        self.cuda = self.device.type == "cuda"
        self.dtype = autocast_dtype("auto", self.device)  # bf16 on CUDA, None (fp32) on CPU
        torch.manual_seed(0)
        cfg = get_config(s.model).replace(num_classes=s.num_classes)
        model = MobileFormer(cfg)
        gen = torch.Generator().manual_seed(1)
        self.x = torch.randn(s.train_batch, 3, s.size, s.size, generator=gen).to(self.device)
        self.y = torch.randint(0, s.num_classes, (s.train_batch,), generator=gen).to(self.device)
        self.xi = torch.randn(s.infer_batch, 3, s.size, s.size, generator=gen).to(self.device)
        if impl == "baseline":
            base = _baseline_module().BaselineMobileFormer(cfg)
            base.load_state_dict(model.state_dict())
            del model
            base = base.to(self.device)
            if self.cuda:
                base = base.to(memory_format=torch.channels_last)
            self.model = base
            self.opt = torch.optim.AdamW(base.parameters(), lr=LR)
            self.step: Callable[[], None] = self._baseline_step
        else:
            ev = Evaluation(lr=LR, weight_decay=WEIGHT_DECAY, label_smoothing=0.0, precision="auto",
                            compile=impl == "mfsearch_compile", device=s.device)
            self.trainer = TrainStep(model, ev, self.device, 10**6, 1)
            self.model = self.trainer.model
            self.step = self._mfsearch_step
        self.runtimes: dict[str, tuple[Callable, bool, Callable[[], AbstractContextManager]]] = {}
        self._sync()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        self.rss_built = _rss_bytes()

    def info(self) -> dict[str, Any]:
        name = torch.cuda.get_device_name(self.device) if self.cuda else cpu_name()
        return {"device_name": name, "threads": torch.get_num_threads(), "autocast": str(self.dtype)}

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def _autocast(self) -> AbstractContextManager:
        return torch.autocast(self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None)

    def _baseline_step(self) -> None:
        x = self.x.contiguous(memory_format=torch.channels_last) if self.cuda else self.x
        with self._autocast():
            loss = F.cross_entropy(self.model(x), self.y)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()

    def _mfsearch_step(self) -> None:
        self.trainer.step(self.x, self.y)

    def train(self, steps: int) -> float:
        """Seconds for ``steps`` training steps."""
        self.model.train()
        self._sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            self.step()
        self._sync()
        return time.perf_counter() - t0

    def memory(self) -> dict[str, float]:
        """Peak memory of the training so far, in MiB."""
        if self.cuda:
            return {"peak_mb": torch.cuda.max_memory_allocated(self.device) / 2**20}
        peak = _peak_rss_bytes()
        return {"peak_mb": (peak - self.rss_built) / 2**20, "peak_rss_mb": peak / 2**20,
                "built_rss_mb": self.rss_built / 2**20}

    def setup_inference(self) -> dict[str, str]:
        """Build the inference runtimes of this implementation: name -> "ok" or why it could not be built."""
        if self.impl == "baseline":
            self.model.eval()
            self.runtimes["eager"] = (self.model, self.cuda, torch.no_grad)
            return {"eager": "ok"}
        from mfsearch.models import inference_model

        self.runtimes["folded"] = (inference_model(self.model), True, torch.inference_mode)
        out = {"folded": "ok"}
        if not self.cuda and importlib.util.find_spec("mfsearch.evaluation.latency") is not None:
            from mfsearch.evaluation.latency import compile_for_inference

            example = self.xi.contiguous(memory_format=torch.channels_last)
            try:
                self.runtimes["jit"] = (compile_for_inference(self.model, example, runtime="jit"), True,
                                        torch.inference_mode)
                out["jit"] = "ok"
            except Exception as e:  # noqa: BLE001 - the column then reads "failed"
                out["jit"] = f"{type(e).__name__}: {e}"
        return out

    def infer(self, runtime: str, steps: int) -> float:
        """Seconds for ``steps`` inference batches with one runtime."""
        fn, channels_last, grad_mode = self.runtimes[runtime]
        self._sync()
        t0 = time.perf_counter()
        with grad_mode(), self._autocast():
            for _ in range(steps):
                fn(self.xi.contiguous(memory_format=torch.channels_last) if channels_last else self.xi)
        self._sync()
        return time.perf_counter() - t0


def _worker(conn: Connection, impl: str, setting: Setting) -> None:
    """Process entry: build a :class:`Cell`, then answer ``(method, args)`` requests until ``stop``."""
    try:
        cell = Cell(impl, setting)
        conn.send(("ok", cell.info()))
    except Exception as e:  # noqa: BLE001 - reported to the parent as the cell's result
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    while True:
        method, args = conn.recv()
        if method == "stop":
            return
        try:
            conn.send(("ok", getattr(cell, method)(*args)))
        except Exception as e:  # noqa: BLE001
            conn.send(("error", f"{type(e).__name__}: {e}"))


# ----------------------------------------------------------------------------- parent side


class Worker:
    """A fresh process holding one :class:`Cell`; a failed or timed-out call marks it failed for good."""

    def __init__(self, ctx: Any, impl: str, setting: Setting) -> None:
        self.impl = impl
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, impl, setting))
        self.proc.start()
        child.close()
        self.error: str | None = None
        self.info: dict[str, Any] = {}
        self.pending = True  # the build answer has not been read yet

    def _answer(self, timeout: float) -> Any:
        if not self.conn.poll(timeout):
            self.fail(f"timeout after {timeout:.0f} s")
            return None
        try:
            status, value = self.conn.recv()
        except (EOFError, OSError):
            self.fail(f"process died (exit code {self.proc.exitcode})")
            return None
        if status == "error":
            self.fail(value)
            return None
        return value

    def ready(self, timeout: float = CALL_TIMEOUT_S) -> bool:
        if self.pending:
            self.pending = False
            self.info = self._answer(timeout) or {}
        return self.error is None

    def call(self, method: str, *args: Any, timeout: float = CALL_TIMEOUT_S) -> Any:
        if not self.ready():
            return None
        self.conn.send((method, args))
        return self._answer(timeout)

    def fail(self, why: str) -> None:
        self.error = why
        log(f"    {self.impl}: failed: {why}")
        self.close()

    def close(self) -> None:
        if self.proc.is_alive() and self.error is None:
            try:
                self.conn.send(("stop", ()))
            except OSError:
                pass
            self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(10)


@dataclass
class Job:
    """One timed quantity: a worker method (``train`` or ``infer``) with its leading arguments."""

    key: str
    worker: Worker
    method: str
    args: tuple
    batch: int
    warmup: int
    warmup_timeout: float = CALL_TIMEOUT_S


def interleaved(jobs: list[Job], plan: Plan) -> dict[str, float | str]:
    """Warm every job up, then time them in turn (A, B, A, B...); best images/s of each, or why it failed."""
    per_step: dict[str, float] = {}
    for j in jobs:  # the same rule for every implementation: at least j.warmup steps, then until settled
        times: list[float] = []
        while len(times) < WARMUP_MAX:
            t = j.worker.call(j.method, *j.args, 1, timeout=j.warmup_timeout)
            if t is None:
                break
            times.append(t)
            if len(times) >= max(1, j.warmup) and len(times) >= 2 and abs(times[-1] - times[-2]) <= SETTLED * times[-2]:
                break
        if times and not j.worker.error:
            per_step[j.key] = times[-1]
            if VERBOSE[0]:
                log(f"    warm-up {j.method} {j.key}: {len(times)} steps ({', '.join(f'{x:.2f}' for x in times)} s)")
    repeats = plan.repeats(max(per_step.values(), default=0.0))
    steps = {k: plan.steps(t, repeats) for k, t in per_step.items()}
    best: dict[str, float] = {}
    for r in range(repeats):
        for j in jobs:
            if j.key not in steps or j.worker.error:
                continue
            t = j.worker.call(j.method, *j.args, steps[j.key])
            if t is not None:
                speed = steps[j.key] * j.batch / t
                best[j.key] = max(best.get(j.key, 0.0), speed)
                if VERBOSE[0]:
                    log(f"    round {r + 1}/{repeats} {j.method} {j.key}: {steps[j.key]} x {j.batch} in {t:.2f} s "
                        f"= {speed:,.1f} img/s")
    out: dict[str, float | str] = {}
    for j in jobs:
        if j.worker.error:
            out[j.key] = "timeout" if j.worker.error.startswith("timeout") else "failed"
        else:
            out[j.key] = best.get(j.key, "failed")
    return out


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_setting(s: Setting, plan: Plan, compile_step: bool, compile_timeout: float) -> dict[str, Any]:
    """All measurements of one (device, model, resolution)."""
    ctx = mp.get_context("spawn")
    impls = ["baseline", "mfsearch"] + (["mfsearch_compile"] if compile_step else [])
    workers = {impl: Worker(ctx, impl, s) for impl in impls}  # built side by side; nothing is timed yet
    try:
        for w in workers.values():
            w.ready()
        b, m = workers["baseline"], workers["mfsearch"]
        train_jobs = [Job("baseline", b, "train", (), s.train_batch, plan.warmup),
                      Job("mfsearch", m, "train", (), s.train_batch, plan.warmup)]
        if compile_step:  # the first calls compile: warm-up gets its own limit
            train_jobs.append(Job("mfsearch_compile", workers["mfsearch_compile"], "train", (), s.train_batch,
                                  plan.warmup, compile_timeout))
        train = interleaved(train_jobs, plan)
        memory = {impl: (w.call("memory") or {}) for impl, w in workers.items()}
        if compile_step:
            workers["mfsearch_compile"].close()
        infer_jobs: list[Job] = []
        unavailable: dict[str, str] = {"baseline/eager": "failed", "mfsearch/folded": "failed"}
        for impl in ("baseline", "mfsearch"):
            for rt, state in (workers[impl].call("setup_inference") or {}).items():
                if state != "ok":
                    log(f"    {impl}/{rt}: failed: {state}")
                    unavailable[f"{impl}/{rt}"] = "failed"
                    continue
                warm = max(plan.warmup, 2) if rt == "jit" else plan.warmup  # TorchScript profiles its first call
                infer_jobs.append(Job(f"{impl}/{rt}", workers[impl], "infer", (rt,), s.infer_batch, warm))
        infer = {**unavailable, **interleaved(infer_jobs, plan)}
    finally:
        for w in workers.values():
            w.close()
    row: dict[str, Any] = {
        **asdict(s),
        "device_name": b.info.get("device_name", ""),
        "train_baseline": train.get("baseline"),
        "train_mfsearch": train.get("mfsearch"),
        "train_mfsearch_compile": train.get("mfsearch_compile"),
        "infer_baseline": infer.get("baseline/eager"),
        "infer_mfsearch_folded": infer.get("mfsearch/folded"),
        "infer_mfsearch_jit": infer.get("mfsearch/jit"),
        "peak_mb_baseline": memory["baseline"].get("peak_mb"),
        "peak_mb_mfsearch": memory["mfsearch"].get("peak_mb"),
        "peak_mb_mfsearch_compile": memory.get("mfsearch_compile", {}).get("peak_mb"),
    }
    if s.device == "cpu":
        row["peak_rss_mb_baseline"] = memory["baseline"].get("peak_rss_mb")
        row["peak_rss_mb_mfsearch"] = memory["mfsearch"].get("peak_rss_mb")
    row["train_ratio"] = _ratio(row["train_mfsearch"], row["train_baseline"])
    inf = [v for v in (row["infer_mfsearch_folded"], row["infer_mfsearch_jit"]) if isinstance(v, float)]
    row["infer_ratio"] = _ratio(max(inf) if inf else None, row["infer_baseline"])
    row["target"] = TARGETS[(s.device, s.size)]
    row["target_met"] = None if row["train_ratio"] is None else row["train_ratio"] >= row["target"]
    return row


def _ratio(a: Any, b: Any) -> float | None:
    return a / b if isinstance(a, float) and isinstance(b, float) and b > 0 else None


# ----------------------------------------------------------------------------- report


def _num(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def table(rows: list[dict[str, Any]]) -> str:
    """The markdown table; the ``torch.compile`` column appears when there are CUDA rows."""
    compiled = any(r["device"] == "cuda" for r in rows)
    head = ["device", "model", "resolution", "train img/s baseline", "mfsearch", *(["mfsearch compiled"] * compiled),
            "ratio", "inference img/s baseline", "mfsearch (folded)", "(jit)", "ratio", "peak MB baseline",
            "mfsearch", "target"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        met = "-" if r["target_met"] is None else ("PASS" if r["target_met"] else "MISS")
        comp = [_num(r["train_mfsearch_compile"]) if r["device"] == "cuda" else "skipped"] * compiled
        cells = [r["device"], r["model"].replace("mobile_former_", "MF-").upper(), f"{r['size']}x{r['size']}",
                 _num(r["train_baseline"]), _num(r["train_mfsearch"]), *comp, _x(r["train_ratio"]),
                 _num(r["infer_baseline"]), _num(r["infer_mfsearch_folded"]), _num(r["infer_mfsearch_jit"]),
                 _x(r["infer_ratio"]), _num(r["peak_mb_baseline"]), _num(r["peak_mb_mfsearch"]),
                 f"train >= {r['target']:g}x: {met}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _busy_cpu_s() -> float | None:
    """Non-idle CPU seconds of the whole machine so far (Linux ``/proc/stat``)."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait


def _own_cpu_s() -> float:
    """CPU seconds of this process and of its finished (joined) worker processes."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def others_share(busy0: float | None, own0: float, wall: float) -> float | None:
    """Fraction of the machine's CPUs that other processes used while this benchmark ran."""
    busy1 = _busy_cpu_s()
    if busy0 is None or busy1 is None or wall <= 0:
        return None
    other = (busy1 - busy0) - (_own_cpu_s() - own0)
    return max(0.0, other / (wall * (os.cpu_count() or 1)))


def header(devices: list[str], threads: int, infos: dict[str, str], quick: bool) -> str:
    descr = []
    for d in devices:
        descr.append(f"cpu: {infos.get('cpu') or cpu_name()} ({threads} thread{'s' if threads != 1 else ''})"
                     if d == "cpu" else f"cuda: {infos.get('cuda', '?')}")
    batches = ", ".join(f"{d} {r}px: train {t} / inference {i}" for (d, r), (t, i) in BATCHES.items() if d in devices)
    return "\n".join([
        "## Mobile-Former speed: mfsearch vs a plain eager baseline (benchmarks/baseline_mobile_former.py)",
        f"torch {torch.__version__} | {' | '.join(descr)} | python {platform.python_version()}"
        + (" | --quick" if quick else ""),
        f"batches: {batches}; 1000 classes at 224, 10 at 32; random data; AdamW lr {LR:g}, weight decay "
        f"{WEIGHT_DECAY:g}, no label smoothing",
        "train: baseline = plain eager loop (fp32 channels-first on CPU; bf16 autocast + channels_last on CUDA); "
        "mfsearch = mfsearch.evaluation.train.TrainStep.step (precision auto: fp32 on CPU, bf16 on CUDA; on CUDA "
        "the whole step replayed as one CUDA graph); compiled = the same with compile=True, no graph (CUDA only)",
        "inference: baseline eval() under no_grad; mfsearch = inference_model (BatchNorm folded, channels_last) under "
        "inference_mode; jit = mfsearch.evaluation.latency frozen TorchScript (CPU); bf16 autocast on CUDA; "
        "inference ratio = best mfsearch runtime / baseline",
        "peak MB (training): CPU = peak RSS of the cell's fresh process (ru_maxrss) minus its RSS after building "
        "model, optimizer and data; CUDA = torch.cuda.max_memory_allocated in the cell's fresh process",
        "targets (train img/s mfsearch eager / baseline): GPU at 224 >= 2x, GPU at the 32x32 proxy resolution >= 4x, "
        "CPU >= 1.3x; best of interleaved repeats",
    ])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=("cpu", "cuda", "all"), default=None,
                    help="default: cpu, plus cuda when available")
    ap.add_argument("--models", default="294m,52m", help="comma-separated sizes or preset names")
    ap.add_argument("--quick", action="store_true", help="fewer warm-up steps and shorter rounds")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads per process (default: torch's default)")
    ap.add_argument("--json", type=Path, default=None, help="write the rows here")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile column on CUDA")
    ap.add_argument("--compile-timeout", type=float, default=600.0,
                    help="seconds allowed for compiling and warming up the compiled step")
    ap.add_argument("--verbose", action="store_true", help="print every timed round")
    args = ap.parse_args(argv)
    VERBOSE[0] = args.verbose
    cuda_ok = torch.cuda.is_available()
    if args.device in (None, "all"):
        devices = ["cpu"] + (["cuda"] if cuda_ok else [])
    else:
        devices = [args.device]
    if "cuda" in devices and not cuda_ok:
        ap.error("--device cuda: no CUDA device is available here")
    models = [m if m.startswith("mobile_former_") else f"mobile_former_{m.lower()}" for m in args.models.split(",")]
    from mfsearch.models import list_models

    unknown = [m for m in models if m not in list_models()]
    if unknown:
        ap.error(f"unknown model {unknown[0]!r}; known models: {', '.join(list_models())}")
    threads = args.threads or torch.get_num_threads()
    rows: list[dict[str, Any]] = []
    infos: dict[str, str] = {}
    busy0, own0 = _busy_cpu_s(), _own_cpu_s()
    t0 = time.perf_counter()
    for dev in devices:
        plan = plan_for(dev, args.quick)
        for model in models:
            for size in (224, 32):
                tb, ib = BATCHES[(dev, size)]
                s = Setting(dev, model, size, tb, ib, CLASSES[size], threads)
                log(f"[{time.perf_counter() - t0:6.0f} s] {dev} {model} {size}x{size} (train batch {tb}, "
                    f"inference batch {ib})")
                row = run_setting(s, plan, dev == "cuda" and not args.no_compile, args.compile_timeout)
                if row["device_name"]:
                    infos.setdefault(dev, row["device_name"])
                rows.append(row)
                log(f"    train {_num(row['train_baseline'])} -> {_num(row['train_mfsearch'])} img/s "
                    f"({_x(row['train_ratio'])}); inference {_num(row['infer_baseline'])} -> "
                    f"{_num(row['infer_mfsearch_folded'])} / {_num(row['infer_mfsearch_jit'])} img/s")
    wall = time.perf_counter() - t0
    print(header(devices, threads, infos, args.quick))
    share = others_share(busy0, own0, wall)
    if share is not None:
        print(f"other processes used {100 * share:.0f}% of the {os.cpu_count()} CPUs during the run"
              + (": CPU timings are disturbed, trust the interleaved ratios more than absolute numbers"
                 if share > 0.05 else ""))
    print()
    print(table(rows))
    print(f"\n{len(rows)} settings in {wall:.0f} s")
    if args.json:
        meta = {"torch": torch.__version__, "threads": threads, "devices": infos, "quick": args.quick,
                "others_cpu_share": share,
                "batches": {f"{d}/{r}": list(v) for (d, r), v in BATCHES.items()}}
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
        print(f"rows written to {args.json}")


if __name__ == "__main__":
    main()
