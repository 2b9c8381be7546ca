"""The ``oneshot`` evaluation strategy: a search scores each architecture as a sub-network of one supernet.

The supernet is trained once per definition and kept in a cache shared by every study of a runs
directory (``<runs>/supernets/<key>/``): searches at other budgets on the same supernet, and a second
run of a search, train nothing. :func:`prepare` trains it (or waits for it, or loads it) before the
first trial, with a line per epoch; :func:`evaluate` then scores one sub-network (BatchNorm
recalibration + top-1 on fixed validation images, about a second on a CPU).

Concurrency: whoever trains a supernet holds an exclusive file lock on ``<key>/.lock`` and writes who
it is and how far it got to ``<key>/trainer.json`` (every epoch, and a heartbeat every
:data:`HEARTBEAT_S` seconds). Another process (a second worker, a second command) that needs the same
supernet waits on that lock, saying for whom and which epoch, and loads the checkpoint once it is
complete; a supernet is never trained twice. The kernel releases the lock of a process that dies, so
a waiter then resumes the training from the last epoch's checkpoint. A holder that stops beating (hung,
or on another host of a shared file system) ends the wait after :data:`STALE_S` seconds with one line.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError, RunError
from ..evaluation.cost import cpu_seconds
from ..evaluation.strategies import OneShotSettings, oneshot_settings
from ..evaluation.train import ProxyData, Report, proxy_data
from ..models import MobileFormerConfig
from ..space.spec import Space
from ..store.liveness import HEARTBEAT_S, STALE_S
from .score import ScoreData, score, score_data
from .train import CHECKPOINT, SupernetRun, supernet_key, train_supernet

Log = Callable[[str], None]
SUPERNETS = "supernets"  # the cache folder beside the run directories
LOCK = ".lock"
TRAINER = "trainer.json"
SAY_EVERY_S = 30.0


def _stderr(msg: str) -> None:
    print(f"mfsearch: {msg}", file=sys.stderr, flush=True)


def cache_dir(run_dir: str | Path | None = None) -> Path:
    """Where supernets live: ``supernets/`` beside the study's run directory (default: under the runs directory)."""
    if run_dir is not None:
        return Path(run_dir).absolute().parent / SUPERNETS
    from ..store import runs_dir

    return runs_dir().absolute() / SUPERNETS


@dataclass
class Loaded:
    """A supernet ready to score in this process."""

    run: SupernetRun
    settings: OneShotSettings
    data: ScoreData
    space: Space  # kept so that the id of the space this was prepared for is never reused

    @property
    def key(self) -> str:
        return self.run.key


_LOADED: dict[int, Loaded] = {}  # id(space) -> its supernet (one or two spaces per process)
_BY_KEY: dict[str, Loaded] = {}


# ----------------------------------------------------------------------------- the lock


def _read_trainer(folder: Path) -> dict[str, Any]:
    try:
        info = json.loads((folder / TRAINER).read_text())
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_trainer(folder: Path, info: dict[str, Any]) -> None:
    tmp = folder / f".{TRAINER}.{os.getpid()}"
    tmp.write_text(json.dumps(info))
    os.replace(tmp, folder / TRAINER)


class _TrainerBeat:
    """While training: ``trainer.json`` says who trains, the epochs done, and a heartbeat every few seconds."""

    def __init__(self, folder: Path, key: str, epochs: int, done: int) -> None:
        self.folder = folder
        self.info = {"pid": os.getpid(), "host": socket.gethostname(), "key": key, "epochs": epochs,
                     "epochs_done": done, "started": time.time(), "heartbeat": time.time()}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="mfsearch-supernet-heartbeat", daemon=True)

    def epoch(self, done: int) -> None:
        self.info["epochs_done"] = done
        self.info["heartbeat"] = time.time()
        _write_trainer(self.folder, self.info)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            self.info["heartbeat"] = time.time()
            with contextlib.suppress(OSError):
                _write_trainer(self.folder, self.info)

    def __enter__(self) -> _TrainerBeat:
        _write_trainer(self.folder, self.info)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=HEARTBEAT_S + 5)
        with contextlib.suppress(OSError):
            (self.folder / TRAINER).unlink()


def stored_epochs(path: Path) -> int:
    """Epochs in the checkpoint at ``path`` (0 when there is none), read without loading the weights."""
    if not path.is_file():
        return 0
    try:
        ck = torch.load(path, map_location="meta", weights_only=True)
        return int(ck.get("epoch", 0)) if isinstance(ck, dict) else 0
    except Exception:  # noqa: BLE001 - train_supernet names the problem when it reads the file for real
        return 0


def _who(info: dict[str, Any], now: float) -> str:
    if not info:
        return "another process that holds its lock (loading it, or starting to train it)"
    beat = now - float(info.get("heartbeat", now))
    return (f"pid {info.get('pid', '?')} on {info.get('host', '?')} (epoch {info.get('epochs_done', '?')}/"
            f"{info.get('epochs', '?')} done, last sign of life {beat:.0f} s ago)")


def obtain(space: Space, cache: Path, settings: OneShotSettings | None = None, data: ProxyData | None = None,
           log: Log | None = None, stale_s: float = STALE_S) -> tuple[SupernetRun, float]:
    """The supernet of ``space`` from ``cache``: loaded when complete, else trained here under the lock, or
    waited for while another process trains it. Returns the run and this process's CPU seconds spent."""
    log = log or _stderr
    settings = settings or oneshot_settings(space)
    key = supernet_key(space, settings)
    folder = Path(cache) / key
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{folder}: cannot create the supernet cache here ({e.strerror or e}); choose another "
                         "runs directory (--runs-dir) or fix its permissions") from None
    c0 = cpu_seconds()
    said = 0.0
    t_wait = time.monotonic()
    with open(folder / LOCK, "a+") as fh:
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                now = time.time()
                info = _read_trainer(folder)
                if info and now - float(info.get("heartbeat", now)) > stale_s:
                    raise RunError(f"{folder}: the process training supernet {key}, {_who(info, now)}, gave no sign "
                                   f"of life for over {stale_s:.0f} s; stop it (or, if it is gone, delete "
                                   f"{folder / LOCK}), then run again") from None
                if time.monotonic() - said > SAY_EVERY_S:
                    doing = ", which is training it" if info else ""
                    log(f"supernet {key}: waiting for {_who(info, now)}{doing}; it is loaded here when complete "
                        f"(waited {time.monotonic() - t_wait:.0f} s so far)")
                    said = time.monotonic()
                time.sleep(1.0)
                continue
            try:
                return _train_or_load(space, folder, settings, data, log), cpu_seconds() - c0
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


def _train_or_load(space: Space, folder: Path, settings: OneShotSettings, data: ProxyData | None,
                   log: Log) -> SupernetRun:
    """Under the lock: resume / train to the last epoch, or load a complete checkpoint."""
    key = folder.name
    path = folder / CHECKPOINT
    start = stored_epochs(path)
    if start < settings.epochs:
        log(f"supernet {key}: {'resuming at epoch ' + str(start + 1) if start else 'training'} "
            f"({settings.epochs} epochs, largest + smallest + {settings.subnets} random sub-networks per step) "
            f"in {folder}")

    beat: _TrainerBeat | None = None

    def report(epoch: int, m: dict[str, float]) -> None:
        if beat is not None:
            beat.epoch(epoch)
        log(f"supernet {key}: epoch {epoch}/{settings.epochs}: loss {m['train_loss']:.4f}, distillation "
            f"{m['distill_loss']:.4f}, {m['train_s']:.0f} s" + (f" ({m['cpu_s']:.0f} CPU-s)" if "cpu_s" in m else ""))

    if start < settings.epochs:
        with _TrainerBeat(folder, key, settings.epochs, start) as beat:
            return train_supernet(space, folder.parent, settings, report=report, data=data)
    return train_supernet(space, folder.parent, settings, data=data)


# ----------------------------------------------------------------------------- the strategy's hooks


def load(space: Space, run_dir: str | Path | None = None, log: Log | None = None) -> Loaded:
    """Train, wait for or load the supernet of ``space`` and the scoring batches, once per process."""
    got = _LOADED.get(id(space))
    if got is not None and got.space is space:
        return got
    log = log or _stderr
    settings = oneshot_settings(space)
    key = supernet_key(space, settings)
    if key in _BY_KEY and _BY_KEY[key].settings == settings:
        loaded = Loaded(_BY_KEY[key].run, settings, _BY_KEY[key].data, space)
    else:
        data = proxy_data(space.evaluation)
        run, cpu = obtain(space, cache_dir(run_dir), settings, data, log)
        if run.trained_epochs == 0:
            total = sum(float(h.get("train_s", 0.0)) for h in run.history)
            log(f"supernet {key}: loaded from {run.path} ({run.epochs} epochs, trained in {total / 60:.1f} min); "
                "training nothing")
        else:
            log(f"supernet {key}: trained {run.trained_epochs} epoch(s) in {run.train_s / 60:.1f} min "
                f"({cpu / 60:.1f} CPU-min in this process)")
        loaded = Loaded(run, settings, score_data(data, settings), space)
    _LOADED[id(space)] = loaded
    _BY_KEY[key] = loaded
    return loaded


def prepare(space: Space, run_dir: str | Path | None = None, log: Log | None = None) -> dict[str, Any]:
    """The strategy's ``prepare`` hook: :func:`load` the supernet before the first trial; what the study records."""
    return summary(load(space, run_dir, log))


def summary(loaded: Loaded) -> dict[str, Any]:
    """What a study records about its supernet (key, where, epochs, training time)."""
    h = loaded.run.history
    return {"key": loaded.key, "path": str(loaded.run.path), "epochs": loaded.run.epochs,
            "train_s": round(sum(float(m.get("train_s", 0.0)) for m in h), 1),
            "train_cpu_s": round(sum(float(m.get("cpu_s", 0.0)) for m in h), 1),
            "subnets": loaded.settings.subnets, "recalibration_batches": loaded.settings.recalibration_batches,
            "val_images": loaded.data.val_images}


def unsupported(space: Space, cfg: MobileFormerConfig) -> str | None:
    """Why ``cfg`` is not a sub-network of the space's supernet (None when it is); nothing is trained."""
    from .skeleton import assign_slots, check_fits, skeleton

    sk = _SKELETONS.get(id(space))
    if sk is None or sk[0] is not space:
        sk = (space, skeleton(space, cfg.num_classes))
        _SKELETONS[id(space)] = sk
    try:
        check_fits(sk[1], cfg.replace(num_classes=sk[1].largest.num_classes))
        assign_slots(sk[1], cfg)
    except ValueError as e:
        return str(e)
    return None


_SKELETONS: dict[int, tuple[Space, Any]] = {}


def evaluate(cfg: MobileFormerConfig, space: Space, report: Report | None, every_epoch: bool) -> dict[str, Any]:
    """The ``oneshot`` strategy: the top-1 of ``cfg`` as a sub-network of the space's supernet."""
    loaded = load(space)
    if space.evaluation.threads and torch.get_num_threads() != space.evaluation.threads:
        torch.set_num_threads(space.evaluation.threads)  # as stand-alone training does
    t0, c0 = time.perf_counter(), time.process_time()
    acc = score(loaded.run.supernet, cfg, loaded.data)
    return {"accuracy": acc, "fidelity": "oneshot", "supernet": loaded.key,
            "score_s": round(time.perf_counter() - t0, 4), "score_cpu_s": round(time.process_time() - c0, 4)}


__all__ = ["SUPERNETS", "Loaded", "cache_dir", "evaluate", "load", "obtain", "prepare", "summary", "unsupported"]
