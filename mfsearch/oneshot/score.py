"""Scoring a sub-network of a trained supernet: re-estimate its BatchNorm statistics, then validation top-1.

Statistics left by supernet training belong to no sub-network in particular, so each scored
sub-network first re-estimates them as exact averages over a few fixed training batches (as
:func:`mfsearch.evaluation.train.recalibrate_bn` does for stand-alone models), then reads its
top-1 on a fixed validation subset: every sub-network sees the same images, so two scores compare
paired. Nothing random is drawn: the same sub-network always gets the same score.

Speed (the point of one-shot search): the batches are built once (:func:`score_data`, channels_last),
validation runs under ``inference_mode`` in training-sized batches (on a CPU, 128 images at 32x32 run
faster per image than 512: the activations stay in cache), and the supernet's forward reuses the
model's fast kernels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from ..evaluation.strategies import OneShotSettings
from ..evaluation.train import ProxyData
from ..models import MobileFormerConfig
from .supernet import Supernet


@dataclass(frozen=True)
class ScoreData:
    """Fixed recalibration batches and validation batches (the same for every scored sub-network)."""

    calibration: tuple[Tensor, ...]
    images: tuple[Tensor, ...]
    labels: tuple[Tensor, ...]

    @property
    def val_images(self) -> int:
        return sum(int(y.numel()) for y in self.labels)


def score_data(data: ProxyData, settings: OneShotSettings) -> ScoreData:
    """The first ``recalibration_batches`` training batches (epoch 0) and the first ``val_images`` validation images."""
    train, val = data.train, data.val
    saved = train.epoch
    train.set_epoch(0)
    calib = []
    for x, _ in train:
        if len(calib) >= settings.recalibration_batches:
            break
        calib.append(x.contiguous(memory_format=torch.channels_last))
    train.set_epoch(saved)
    n = min(settings.val_images or val.num_samples, val.num_samples)
    bs = train.batch_size  # training-sized batches: on CPU, larger ones fall out of cache and run slower per image
    starts = range(0, n, bs)
    images = tuple(val.images[i:min(i + bs, n)].contiguous(memory_format=torch.channels_last) for i in starts)
    labels = tuple(val.labels[i:min(i + bs, n)] for i in starts)
    return ScoreData(tuple(calib), images, labels)


@torch.no_grad()
def recalibrate(net: Supernet, cfg: MobileFormerConfig, batches: tuple[Tensor, ...]) -> None:
    """Exact-average BatchNorm statistics of sub-network ``cfg`` over ``batches`` (dropout stays off)."""
    bns = [m for m in net.modules() if isinstance(m, _BatchNorm)]
    saved = [m.momentum for m in bns]
    net.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
        m.train()
    try:
        for x in batches:
            net(x, cfg)
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom
        net.eval()


def score(net: Supernet, cfg: MobileFormerConfig, data: ScoreData) -> float:
    """Validation top-1 (percent) of sub-network ``cfg`` after re-estimating its BatchNorm statistics."""
    recalibrate(net, cfg, data.calibration)
    correct = 0
    with torch.inference_mode():
        for x, y in zip(data.images, data.labels):
            correct += int((net(x, cfg).argmax(1) == y).sum())
    return 100.0 * correct / max(1, data.val_images)


__all__ = ["ScoreData", "recalibrate", "score", "score_data"]
