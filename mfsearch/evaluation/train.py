"""Proxy training: real training on real data, seeded, with a per-epoch ``report`` callback.

The objective is engine-agnostic (Optuna, Ray, ablations all call :func:`train_and_evaluate`):
it takes a config, the evaluation settings and ``report(step, metrics)``; it returns the
final metrics. A loss that becomes NaN/inf raises :class:`TrialFailed` with the step.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models import MobileFormer, MobileFormerConfig
from .data import TensorLoader, load_dataset, split_indices
from .memory import retain_freed_cpu_memory
from .settings import Evaluation

Report = Callable[[int, dict[str, float]], None]


class TrialFailed(RuntimeError):
    """A trial that cannot finish (diverged loss, out of memory...); the message is the reason."""


class StopTrial(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised by a ``report`` callback to stop a trial early (pruning / early stopping)."""


@dataclass
class EvalResult:
    accuracy: float
    history: list[dict[str, float]] = field(default_factory=list)
    train_s: float = 0.0
    eval_s: float = 0.0
    steps: int = 0
    stopped_early: bool = False


@dataclass
class ProxyData:
    """Train and validation loaders of one evaluation setting (built once per process)."""

    train: TensorLoader
    val: TensorLoader
    num_classes: int


_DATA_CACHE: dict[tuple, ProxyData] = {}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def proxy_data(ev: Evaluation, only: bool = False) -> ProxyData:
    """Loaders for ``ev`` (cached: every trial of a study trains on the same tensors).

    ``only``: drop the other settings' cached tensors first (a process that goes through many
    settings and seeds, like a proxy sweep, would otherwise keep all of them).
    """
    device = resolve_device(ev.device)
    key = (ev.dataset, ev.data_root, ev.image_size, ev.channels, ev.train_size, ev.val_size, ev.batch_size,
           ev.eval_batch_size, ev.seed, ev.augment, str(device))
    if only:
        for k in [k for k in _DATA_CACHE if k != key]:
            del _DATA_CACHE[k]
    if key not in _DATA_CACHE:
        ds = load_dataset(ev.dataset, ev.data_root, "train", **({"image_size": ev.image_size}
                                                                 if ev.dataset == "imagefolder" else {}))
        tr_idx, va_idx = split_indices(len(ds.labels), ev.train_size, ev.val_size, ev.seed, labels=ds.labels)
        train = TensorLoader(ds, tr_idx, image_size=ev.image_size, channels=ev.channels, batch_size=ev.batch_size,
                             train=True, seed=ev.seed, device=device, augment=ev.augment)
        val = TensorLoader(ds, va_idx, image_size=ev.image_size, channels=ev.channels,
                           batch_size=ev.eval_batch_size, train=False, seed=ev.seed, device=device,
                           mean=train.mean, std=train.std)
        _DATA_CACHE[key] = ProxyData(train, val, ds.num_classes)
    return _DATA_CACHE[key]


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on biases, norm parameters and the token table (paper recipe)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.ndim <= 1 or name == "tokens":
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_lambda(total: int, warmup: int, lr: float, min_lr: float) -> Callable[[int], float]:
    """Linear warm-up then cosine decay to ``min_lr`` (as a multiplier of ``lr``)."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, total - warmup)
        return (min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * min(1.0, t)))) / lr

    return f


def _autocast(x: Tensor, dtype: torch.dtype | None) -> Any:
    return torch.autocast(x.device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, loader: TensorLoader, batches: int, dtype: torch.dtype | None = None) -> None:
    """Re-estimate BatchNorm statistics as exact averages over ``batches`` training batches.

    Short proxy runs leave running statistics far from the final weights' (momentum 0.1 over
    a few dozen steps): evaluated as they are, good networks can score at chance.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns or batches <= 0:
        return
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    model.train()
    for i, (x, _) in enumerate(loader):
        if i >= batches:
            break
        with _autocast(x, dtype):
            model(x.contiguous(memory_format=torch.channels_last))
    for m, mom in zip(bns, saved):
        m.momentum = mom


@torch.no_grad()
def accuracy(model: nn.Module, loader: TensorLoader, dtype: torch.dtype | None = None) -> float:
    """Top-1 accuracy in percent."""
    model.eval()
    correct = total = 0
    for x, y in loader:
        with _autocast(x, dtype):
            logits = model(x.contiguous(memory_format=torch.channels_last))
        correct += (logits.argmax(1) == y).sum().item()
        total += y.numel()
    return 100.0 * correct / max(1, total)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a precision setting on a device (None: plain fp32)."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def make_optimizer(model: nn.Module, ev: Evaluation, device: torch.device,
                   capturable: bool = False) -> torch.optim.Optimizer:
    """AdamW with the fused kernel where the device has one (one update for all parameters).

    ``capturable``: the learning rate is a tensor the scheduler updates in place and the step
    count stays on the device, so the update can be captured in a CUDA graph.
    """
    groups = param_groups(model, ev.weight_decay)
    if capturable:
        return torch.optim.AdamW(groups, lr=torch.tensor(ev.lr, device=device), fused=True, capturable=True)
    try:
        return torch.optim.AdamW(groups, lr=ev.lr, fused=device.type in ("cpu", "cuda"))
    except (RuntimeError, ValueError):  # a device without the fused kernel
        return torch.optim.AdamW(groups, lr=ev.lr, foreach=True)


GRAPH_WARMUP_STEPS = 3  # eager steps on a side stream before the capture (lazy state, cuDNN / cuBLAS handles)


class TrainStep:
    """One optimisation step: channels_last, autocast, fused AdamW, optional ``torch.compile``.

    On CUDA (``evaluation.cuda_graphs``, not with ``compile`` or fp16's loss scaling) :meth:`step`
    captures forward, backward and the optimizer update of a full batch as one CUDA graph after
    :data:`GRAPH_WARMUP_STEPS` eager steps and replays it for every batch of the same shape: a
    proxy step is hundreds of small kernels, and replaying them costs one launch. Batches of
    another shape, or a capture that fails (warned once), run eagerly with the same optimizer.
    On CPU the process keeps freed memory for reuse (:mod:`mfsearch.evaluation.memory`).
    """

    def __init__(self, model: nn.Module, ev: Evaluation, device: torch.device, total: int, warmup: int) -> None:
        if device.type == "cpu":
            retain_freed_cpu_memory()
        self.dtype = autocast_dtype(ev.precision, device)
        self.device = device
        self.scaler = torch.amp.GradScaler(device.type) if self.dtype == torch.float16 else None
        self.graphs = device.type == "cuda" and ev.cuda_graphs and not ev.compile and self.scaler is None
        self.model = model.to(device=device, memory_format=torch.channels_last)
        self.opt = make_optimizer(self.model, ev, device, capturable=self.graphs)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_lambda(total, max(1, warmup), ev.lr, ev.min_lr))
        self.forward = torch.compile(self.model) if ev.compile else self.model
        self.smoothing = ev.label_smoothing
        self._graph: torch.cuda.CUDAGraph | None = None
        self._static: tuple[Tensor, Tensor, Tensor] | None = None  # input, target, loss of the captured step
        self._side: torch.cuda.Stream | None = None

    def loss(self, x: Tensor, y: Tensor, in_graph: bool = False) -> Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None,
                            cache_enabled=not in_graph):  # no autocast cache in a graph
            return F.cross_entropy(self.forward(x).float(), y, label_smoothing=self.smoothing)

    def backward_step(self, loss: Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            loss.backward()
            self.opt.step()
        self.sched.step()

    def step(self, x: Tensor, y: Tensor) -> Tensor:
        """Train on one batch; returns the (detached) loss of the batch before the update."""
        if self.graphs and self._static is None and self.sched.last_epoch >= GRAPH_WARMUP_STEPS:
            self._capture(x, y)  # turns graphs off if it fails
        if self._static is not None and self._static[0].shape == x.shape and self._static[1].shape == y.shape:
            return self._replay(x, y)
        warming_up = self.graphs and self._static is None  # steps before the capture run on a side stream
        if warming_up:
            self._side = self._side or torch.cuda.Stream(self.device)
            self._side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self._side) if warming_up else contextlib.nullcontext():
            loss = self.loss(x, y)
            self.backward_step(loss)
        if warming_up:
            torch.cuda.current_stream(self.device).wait_stream(self._side)
        return loss.detach()

    def _capture(self, x: Tensor, y: Tensor) -> None:
        static_x = torch.empty_like(x, memory_format=torch.channels_last).copy_(x)
        static_y = y.clone()
        graph = torch.cuda.CUDAGraph()
        self.opt.zero_grad(set_to_none=True)
        try:
            with torch.cuda.graph(graph):
                static_loss = self.loss(static_x, static_y, in_graph=True)
                static_loss.backward()
                self.opt.step()
        except Exception as e:  # noqa: BLE001 - an op that cannot be captured: stay eager for this trainer
            self.graphs = False
            self.opt.zero_grad(set_to_none=True)
            warnings.warn(f"CUDA graph capture of the training step failed ({type(e).__name__}: {str(e)[:200]}); "
                          "training eagerly (evaluation.cuda_graphs: false skips the attempt)", RuntimeWarning,
                          stacklevel=3)
            return
        self._graph, self._static = graph, (static_x, static_y, static_loss)

    def _replay(self, x: Tensor, y: Tensor) -> Tensor:
        static_x, static_y, static_loss = self._static  # type: ignore[misc]
        static_x.copy_(x)
        static_y.copy_(y)
        self._graph.replay()  # type: ignore[union-attr]
        self.sched.step()  # fills the learning-rate tensor the graph reads
        return static_loss.detach().clone()


def _fork_rng(device: torch.device) -> contextlib.AbstractContextManager:
    """Fork the global RNG of the CPU and, on an accelerator, of ``device`` (both restored on exit)."""
    if device.type == "cpu":
        return torch.random.fork_rng(devices=[])
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return torch.random.fork_rng(devices=[index], device_type="cuda")
    return torch.random.fork_rng(device_type=device.type)


def evaluate_now(model: nn.Module, data: ProxyData, ev: Evaluation, device: torch.device,
                 dtype: torch.dtype | None) -> float:
    """Validation top-1 after re-estimating BatchNorm statistics, without touching the training RNG.

    Recalibration runs the model in train mode, where dropout draws from the global RNG; forking it
    keeps the following epochs the same whether and how often the model is evaluated.
    """
    with _fork_rng(device):
        recalibrate_bn(model, data.train, ev.bn_recalibration, dtype)
        return accuracy(model, data.val, dtype)


@contextlib.contextmanager
def deterministic_algorithms(on: bool) -> Any:
    """``torch.use_deterministic_algorithms(True)`` inside the block when ``on``; the previous mode after."""
    if not on:
        yield
        return
    before = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn_only)


#: a diverged loss is looked for every this many steps (and at the end of each epoch): reading a value
#: from an accelerator waits for it, and one wait per step would undo a captured (CUDA graph) step
FINITE_CHECK_STEPS = 32


def _check_finite(recent: list[Tensor], step: int, epoch: int) -> None:
    """Raise :class:`TrialFailed` naming the first non-finite loss of ``recent`` (the steps before ``step``)."""
    if not recent:
        return
    losses = torch.stack(recent)
    if not bool(torch.isfinite(losses).all()):
        i = int((~torch.isfinite(losses)).nonzero()[0, 0])
        raise TrialFailed(f"loss became {losses[i].item()} at step {step - len(recent) + i} (epoch {epoch + 1})")
    recent.clear()


def train_and_evaluate(
    cfg: MobileFormerConfig, ev: Evaluation, report: Report | None = None, data: ProxyData | None = None,
    evaluate_every_epoch: bool = True,
) -> EvalResult:
    """Train ``cfg`` from scratch with ``ev`` and return the validation top-1 (per epoch, or at the end).

    ``evaluate_every_epoch=False`` validates only after the last epoch (``report`` is then called
    once, with that epoch's metrics): the result is the same, the intermediate evaluations are not
    paid for. ``ev.deterministic`` trains under ``torch.use_deterministic_algorithms(True)``.
    """
    if ev.threads:
        torch.set_num_threads(ev.threads)
    device = resolve_device(ev.device)
    if ev.deterministic and device.type == "cuda" and not os.environ.get("CUBLAS_WORKSPACE_CONFIG"):
        raise TrialFailed("evaluation.deterministic on CUDA needs CUBLAS_WORKSPACE_CONFIG=:4096:8 in the environment "
                          "(set it before starting)")
    data = data or proxy_data(ev)
    with deterministic_algorithms(ev.deterministic):
        return _train(cfg, ev, report, data, device, evaluate_every_epoch)


def _train(cfg: MobileFormerConfig, ev: Evaluation, report: Report | None, data: ProxyData, device: torch.device,
           evaluate_every_epoch: bool) -> EvalResult:
    seed_everything(ev.seed)
    model = MobileFormer(cfg.replace(num_classes=data.num_classes))
    steps_per_epoch = len(data.train)
    total = steps_per_epoch * ev.epochs
    warmup = int(round(ev.warmup_epochs * steps_per_epoch))
    trainer = TrainStep(model, ev, device, total, warmup)
    model, sched = trainer.model, trainer.sched
    res = EvalResult(accuracy=0.0)
    step = 0
    for epoch in range(ev.epochs):
        t0 = time.perf_counter()
        model.train()
        data.train.set_epoch(epoch)
        loss_sum = torch.zeros((), device=device)
        recent: list[Tensor] = []  # losses since the last check, kept on the device
        for x, y in data.train:
            loss = trainer.step(x, y)
            recent.append(loss)
            loss_sum += loss
            step += 1
            if len(recent) == FINITE_CHECK_STEPS:
                _check_finite(recent, step, epoch)
        _check_finite(recent, step, epoch)
        t1 = time.perf_counter()
        res.train_s += t1 - t0
        res.steps = step
        metrics = {"epoch": epoch + 1, "train_loss": loss_sum.item() / max(1, steps_per_epoch),
                   "train_s": t1 - t0, "lr": float(sched.get_last_lr()[0])}
        if evaluate_every_epoch or epoch + 1 == ev.epochs:
            metrics["val_acc"] = res.accuracy = evaluate_now(model, data, ev, device, trainer.dtype)
            res.eval_s += time.perf_counter() - t1
        res.history.append(metrics)
        if report is not None and "val_acc" in metrics:
            try:
                report(epoch + 1, metrics)
            except StopTrial:
                res.stopped_early = True
                break
    return res
