"""The ``evaluation:`` settings of a space or experiment file: what proxy training does, and its ``eval_id``.

Results are comparable only under the same evaluation; :meth:`Evaluation.eval_id` hashes the
settings that change results, and a study or a check keys its records by it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from dataclasses import dataclass
from typing import Any

from ..errors import InputError
from ..fields import Ctx, bool_field, choice_field, file_field, float_field, int_field, mapping_field, no_unknown
from .data import DATASET_NAMES, TRAIN_SPLIT_SIZES

PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # auto: bf16 autocast on CUDA, fp32 elsewhere

#: a training or latency device: cpu, cuda, cuda:N (training also mps), auto
DEVICE_PATTERN = r"cpu|cuda(:\d+)?|auto"


def valid_device(name: object, mps: bool = False) -> bool:
    """Whether ``name`` is a device a setting may give (``mps`` too where training allows it)."""
    return isinstance(name, str) and re.fullmatch(DEVICE_PATTERN + (r"|mps" if mps else ""), name) is not None


def threads_per_worker(threads: int | None, workers: int) -> int:
    """CPU threads of each of ``workers`` processes: ``evaluation.threads`` when set, else the cores shared out."""
    if threads:
        return threads
    return max(1, (os.cpu_count() or 1) // max(1, workers))


#: Evaluation fields the ``eval_id`` hash has covered from the start: always hashed.
EVAL_ID_FIELDS = ("dataset", "image_size", "channels", "epochs", "train_size", "val_size", "batch_size",
                  "eval_batch_size", "lr", "min_lr", "warmup_epochs", "weight_decay", "label_smoothing", "augment",
                  "bn_recalibration", "seed")
#: How a result is computed rather than what is measured (where the data lies, threads, device, compiler,
#: graphs, deterministic kernels): never hashed; records carry what they depend on (threads, deterministic).
EVAL_ID_IGNORED = ("data_root", "threads", "device", "compile", "cuda_graphs", "deterministic")


@dataclass(frozen=True)
class Evaluation:
    """Proxy-training settings (see :mod:`mfsearch.evaluation.train`)."""

    dataset: str = "fashion_mnist"
    data_root: str | None = None
    image_size: int = 32
    channels: int = 3
    epochs: int = 2
    train_size: int | None = 5000
    val_size: int = 2000
    batch_size: int = 128
    eval_batch_size: int = 512
    lr: float = 2e-3
    min_lr: float = 1e-5
    warmup_epochs: float = 0.3
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    augment: bool = True
    bn_recalibration: int = 8
    seed: int = 0
    threads: int | None = None
    device: str = "cpu"
    precision: str = "auto"
    compile: bool = False
    cuda_graphs: bool = True  # on CUDA, replay each full training step as one captured graph
    deterministic: bool = False  # train under torch.use_deterministic_algorithms(True)
    strategy: str = "standalone"  # how an architecture is evaluated (mfsearch.evaluation.strategies)

    def eval_id(self) -> str:
        """Hash of the settings that change results (see :data:`EVAL_ID_FIELDS`, :data:`EVAL_ID_IGNORED`).

        A field added after the first ids were stored (``precision``, ...) is hashed only when it is
        not at its default, so every id stored before it existed stays valid.
        """
        d = dataclasses.asdict(self)
        for f in dataclasses.fields(self):
            if f.name in EVAL_ID_IGNORED or (f.name not in EVAL_ID_FIELDS and d[f.name] == f.default):
                d.pop(f.name)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def _inherited(ctx: Ctx, d: dict) -> dict:
    """``evaluation: {from: other.yaml, ...}``: the other file's evaluation section (validated there), with this
    file's keys on top. One file's settings then serve several (a proxy chosen once, for every space that
    trains with it); a study pins the values it was created with, not the name of the file."""
    from ..space.parse import read_space_data

    path = file_field(ctx, d["from"], "evaluation.from", "a file with an evaluation: section",
                      "../spaces/macs300.yaml")

    try:
        data, lines = read_space_data(path)  # a space file that extends another has that one's evaluation
    except InputError as e:
        raise ctx.err("evaluation.from", str(e)) from None
    base = data.get("evaluation") if isinstance(data, dict) else None
    if not isinstance(base, dict):
        raise ctx.err("evaluation.from", f"{path} has no evaluation: section")
    if "from" in base:
        raise ctx.err("evaluation.from", f"{path} takes its evaluation from another file too; name that file here "
                      "(one level only)")
    parse_evaluation(Ctx(path, lines), base)  # its own mistakes are reported against its own lines
    return {**base, **{k: v for k, v in d.items() if k != "from"}}


def parse_evaluation(ctx: Ctx, raw: Any) -> Evaluation:
    d = mapping_field(ctx, raw, "evaluation")
    if "from" in d:
        d = _inherited(ctx, d)
    known = {f.name for f in dataclasses.fields(Evaluation)}
    no_unknown(ctx, d, known, "evaluation")
    e = Evaluation()
    f = "evaluation."
    kw: dict[str, Any] = {}
    if "dataset" in d:
        kw["dataset"] = choice_field(ctx, d["dataset"], f + "dataset", DATASET_NAMES)
    if "data_root" in d:
        if d["data_root"] is not None and not isinstance(d["data_root"], str):
            raise ctx.err(f + "data_root", "must be a path string")
        kw["data_root"] = d["data_root"]
    ints = {"image_size": (8, 512), "channels": (1, 3), "epochs": (1, 1000), "val_size": (10, 10**7),
            "batch_size": (2, 65536), "eval_batch_size": (1, 65536), "seed": (0, 2**31 - 1),
            "bn_recalibration": (0, 10000)}
    for k, (lo, hi) in ints.items():
        if k in d:
            kw[k] = int_field(ctx, d[k], f + k, lo, hi)
    if kw.get("channels", e.channels) != 3:
        raise ctx.err(f + "channels", "must be 3: the models take RGB input (grey images are replicated)")
    if "train_size" in d:
        kw["train_size"] = int_field(ctx, d["train_size"], f + "train_size", 10, 10**8, optional=True)
    if "threads" in d:
        kw["threads"] = int_field(ctx, d["threads"], f + "threads", 1, 1024, optional=True)
    floats = {"lr": (1e-7, 1e6), "min_lr": (0.0, 10.0), "warmup_epochs": (0.0, 1000.0),
              "weight_decay": (0.0, 10.0), "label_smoothing": (0.0, 0.99)}
    for k, (lo, hi) in floats.items():
        if k in d:
            kw[k] = float_field(ctx, d[k], f + k, lo, hi)
    if "augment" in d:
        kw["augment"] = bool_field(ctx, d["augment"], f + "augment")
    if "device" in d:
        dev = d["device"]
        if not valid_device(dev, mps=True):
            raise ctx.err(f + "device", f"must be cpu, cuda, cuda:N, mps or auto, got {dev!r}")
        kw["device"] = dev
    if "precision" in d:
        kw["precision"] = choice_field(ctx, d["precision"], f + "precision", PRECISIONS)
    if "compile" in d:
        kw["compile"] = bool_field(ctx, d["compile"], f + "compile")
    if "cuda_graphs" in d:
        kw["cuda_graphs"] = bool_field(ctx, d["cuda_graphs"], f + "cuda_graphs")
    if "strategy" in d:
        from .strategies import STRATEGIES

        kw["strategy"] = choice_field(ctx, d["strategy"], f + "strategy", tuple(STRATEGIES))
    if "deterministic" in d:
        kw["deterministic"] = bool_field(ctx, d["deterministic"], f + "deterministic")
    e = dataclasses.replace(e, **kw)
    _check_sizes(ctx, e)
    return e


def _check_sizes(ctx: Ctx, e: Evaluation) -> None:
    """Subsets must fit in the training split, and one full batch in the training subset.

    The split sizes of the fixed data sets are known here; an image folder's is checked when it is read.
    """
    n, f = TRAIN_SPLIT_SIZES.get(e.dataset), "evaluation."
    split = f"the {n} images of {e.dataset}'s training split (validation is drawn from it)"
    if n is not None and e.val_size >= n:
        raise ctx.err(f + "val_size", f"{e.val_size} leaves no training images: {split}; lower it")
    if n is not None and e.train_size is not None and e.train_size + e.val_size > n:
        raise ctx.err(f + "train_size", f"train_size + val_size = {e.train_size + e.val_size} is more than {split}; "
                      "lower train_size or val_size")
    if e.train_size is not None and e.batch_size > e.train_size:
        raise ctx.err(f + "batch_size", f"{e.batch_size} is more than train_size ({e.train_size}): the last partial "
                      "batch is dropped, so no step would train; lower batch_size or raise train_size")
    if n is not None and e.train_size is None and e.batch_size > n - e.val_size:
        raise ctx.err(f + "batch_size", f"{e.batch_size} is more than the {n - e.val_size} training images left "
                      f"({split}, minus val_size {e.val_size}): no step would train; lower batch_size")
