"""Supernet training: the sandwich rule with in-place distillation, checkpointed every epoch, cached by key.

Each step trains, on one batch, the largest sub-network on the labels (with label smoothing), then
the smallest and ``subnets`` random ones on the largest's detached soft labels (cross-entropy to its
softmax: the KL divergence up to a constant), and takes one AdamW step on the summed gradients
(BigNAS / Once-for-All). The random sub-networks of step ``t`` come from
``numpy.random.default_rng([seed, t])``, so a resumed run draws the same ones.

The checkpoint (weights, optimizer, scheduler, torch RNG, epoch) is written atomically after every
epoch to ``cache_dir/<key>/supernet.pt``; ``key`` hashes the supernet definition (base, space knobs,
training settings) and the evaluation settings' ``eval_id``. ``train_supernet`` resumes from it after
a crash and trains nothing when it is complete.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError
from ..evaluation.strategies import OneShotSettings, oneshot_settings
from ..evaluation.train import (
    ProxyData,
    TrialFailed,
    autocast_dtype,
    lr_lambda,
    make_optimizer,
    proxy_data,
    resolve_device,
    seed_everything,
)
from ..models import MobileFormerConfig
from ..space.spec import Dist, Space
from .skeleton import random_config
from .supernet import Supernet

FORMAT = 1  # bump when the meaning of stored weights changes (the key changes with it)
CHECKPOINT = "supernet.pt"
Report = Callable[[int, dict[str, float]], None]


@dataclass
class SupernetRun:
    """A trained (or loaded) supernet and where it lives."""

    supernet: Supernet
    key: str
    path: Path
    epochs: int
    trained_epochs: int  # by this call: 0 when the cached checkpoint was complete
    resumed_from: int | None  # the epoch of the checkpoint this call continued from
    train_s: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)


def _knob(v: Any) -> Any:
    return v.to_dict() if isinstance(v, Dist) else v


def definition(space: Space, settings: OneShotSettings) -> dict[str, Any]:
    """What determines the trained weights: the architecture part of the space, training settings, evaluation."""
    return {
        "format": FORMAT,
        "base": space.base,
        "space": {k: _knob(v) for k, v in space.knobs.items()},
        "lite": {k: _knob(v) for k, v in (space.lite or {}).items()},
        "stages": [{k: _knob(v) for k, v in st.items()} for st in (space.stages or ())],
        "oneshot": settings.training(),
        # the training data and recipe; how a search then uses the supernet (the strategy) is not part of it
        "eval_id": dataclasses.replace(space.evaluation, strategy="standalone").eval_id(),
    }


def supernet_key(space: Space, settings: OneShotSettings) -> str:
    """16 hex digits naming the supernet's cache folder."""
    canon = json.dumps(definition(space, settings), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canon.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- one step


def subnets_of_step(net: Supernet, space: Space, seed: int, step: int, n: int) -> list[MobileFormerConfig]:
    """The sandwich of step ``step``: largest, smallest, then ``n`` random sub-networks (seeded by seed, step)."""
    rng = np.random.default_rng([seed, step])
    return [net.largest, net.smallest, *(random_config(space, rng, net.num_classes) for _ in range(n))]


def sandwich_step(net: Supernet, opt: torch.optim.Optimizer, x: Tensor, y: Tensor, cfgs: list[MobileFormerConfig],
                  smoothing: float, dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
    """One update: ``cfgs[0]`` learns the labels, the others its soft labels; returns both mean losses (detached)."""
    x = x.contiguous(memory_format=torch.channels_last)
    opt.zero_grad(set_to_none=True)

    def autocast() -> Any:
        return torch.autocast(x.device.type, dtype=dtype or torch.float32, enabled=dtype is not None)

    with autocast():
        logits = net(x, cfgs[0]).float()
    loss = F.cross_entropy(logits, y, label_smoothing=smoothing)
    loss.backward()
    soft = logits.detach().softmax(dim=-1)
    distill = torch.zeros((), device=x.device)
    for cfg in cfgs[1:]:
        with autocast():
            student = net(x, cfg).float()
        d = F.cross_entropy(student, soft)
        d.backward()
        distill += d.detach()
    opt.step()
    return loss.detach(), distill / max(1, len(cfgs) - 1)


# ----------------------------------------------------------------------------- checkpoints


def _save(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, fsync, rename, fsync the folder."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _clean_stale(folder: Path) -> None:
    """Remove temporary files left by writers of this machine that are gone (a kill -9 mid-write)."""
    for tmp in folder.glob(f".{CHECKPOINT}.*.tmp"):
        try:
            pid = int(tmp.name.split(".")[-2])
            os.kill(pid, 0)
        except ProcessLookupError:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        except (ValueError, PermissionError):
            continue


def load_checkpoint(path: Path, key: str, net: Supernet) -> dict[str, Any]:
    """The checkpoint at ``path``, refused with one line naming the file if it is not this supernet's."""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same one-line answer
        raise InputError(f"{path}: not a readable supernet checkpoint ({type(e).__name__}); delete it to train "
                         "the supernet again") from None
    if not isinstance(ck, dict) or ck.get("key") != key:
        found = ck.get("key") if isinstance(ck, dict) else None
        raise InputError(f"{path}: the checkpoint of another supernet (key {found!r}, this space, oneshot and "
                         f"evaluation settings give {key!r}); delete it or use another run directory")
    want = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in ck.get("model", {}).items()}
    if got != want:
        bad = next((k for k in want if got.get(k) != want[k]), None) or next(k for k in got if k not in want)
        raise InputError(f"{path}: tensor shapes do not match this space's supernet ({bad}: {got.get(bad)} stored, "
                         f"{want.get(bad)} expected); delete it to train the supernet again")
    return ck


# ----------------------------------------------------------------------------- training


def _cpu_seconds() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def train_supernet(space: Space, cache_dir: str | Path, settings: OneShotSettings | None = None,
                   report: Report | None = None, data: ProxyData | None = None) -> SupernetRun:
    """Train the supernet of ``space`` (or resume it, or load it when complete) under ``cache_dir/<key>/``.

    ``settings`` defaults to the space file's ``oneshot`` section; data and the remaining recipe
    (batch size, weight decay, warm-up, label smoothing, precision, device, threads, seed) are the
    space's ``evaluation`` settings. ``report(epoch, metrics)`` is called after every epoch.
    """
    settings = settings or oneshot_settings(space)
    ev = space.evaluation
    if ev.threads:
        torch.set_num_threads(ev.threads)
    key = supernet_key(space, settings)
    folder = Path(cache_dir) / key
    path = folder / CHECKPOINT
    data = data or proxy_data(ev)
    device = resolve_device(ev.device)
    seed_everything(ev.seed)
    net = Supernet(space, data.num_classes).to(device=device, memory_format=torch.channels_last)
    ck = load_checkpoint(path, key, net) if path.exists() else None
    if ck is not None:
        net.load_state_dict(ck["model"])
        if int(ck["epoch"]) >= settings.epochs:  # complete: nothing to train
            return SupernetRun(net.eval(), key, path, settings.epochs, 0, None, 0.0, list(ck.get("history", [])))
    lr = settings.lr or ev.lr
    opt = make_optimizer(net, dataclasses.replace(ev, lr=lr), device)
    steps = len(data.train)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lr_lambda(steps * settings.epochs, max(1, int(round(ev.warmup_epochs * steps))), lr, ev.min_lr))
    start, history = 0, []
    if ck is not None:
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        torch.set_rng_state(ck["torch_rng"])
        start, history = int(ck["epoch"]), list(ck.get("history", []))
    run = SupernetRun(net, key, path, settings.epochs, 0, start if ck is not None else None, 0.0, history)
    folder.mkdir(parents=True, exist_ok=True)
    _clean_stale(folder)
    dtype = autocast_dtype(ev.precision, device)
    for epoch in range(start, settings.epochs):
        t0, c0 = time.perf_counter(), _cpu_seconds()
        net.train()
        data.train.set_epoch(epoch)
        loss_sum = torch.zeros((), device=device)
        distill_sum = torch.zeros((), device=device)
        for i, (x, y) in enumerate(data.train):
            step = epoch * steps + i
            cfgs = subnets_of_step(net, space, ev.seed, step, settings.subnets)
            loss, distill = sandwich_step(net, opt, x, y, cfgs, ev.label_smoothing, dtype)
            if not torch.isfinite(loss):
                raise TrialFailed(f"supernet loss became {loss.item()} at step {step} (epoch {epoch + 1})")
            sched.step()
            loss_sum += loss
            distill_sum += distill
        dt = time.perf_counter() - t0
        metrics = {"epoch": epoch + 1, "train_loss": loss_sum.item() / max(1, steps),
                   "distill_loss": distill_sum.item() / max(1, steps), "train_s": dt,
                   "cpu_s": _cpu_seconds() - c0, "threads": torch.get_num_threads(),
                   "lr": float(sched.get_last_lr()[0])}
        history.append(metrics)
        _save(path, {"format": FORMAT, "key": key, "definition": definition(space, settings), "epoch": epoch + 1,
                     "model": net.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                     "torch_rng": torch.get_rng_state(), "history": history})
        run.trained_epochs += 1
        run.train_s += dt
        if report is not None:
            report(epoch + 1, metrics)
    net.eval()
    return run


__all__ = ["CHECKPOINT", "SupernetRun", "definition", "load_checkpoint", "sandwich_step", "subnets_of_step",
           "supernet_key", "train_supernet"]
