"""Inference form of a model: BatchNorm folded into the convolutions, eval mode, channels_last.

``inference_model(model)`` returns a copy that computes the same function as ``model.eval()``
(to float rounding) with one kernel fewer per convolution; the original is left untouched.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .mobile_former import ConvBN, MobileFormer


@torch.no_grad()
def fold_batchnorm(cb: ConvBN) -> None:
    """Fold ``cb.bn`` (its running statistics) into ``cb.conv``, in place; the BN becomes the identity."""
    conv, bn = cb.conv, cb.bn
    if not isinstance(bn, nn.BatchNorm2d):
        return
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      groups=conv.groups, bias=True).to(conv.weight)
    fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
    cb.conv = fused
    cb.bn = nn.Identity()


def inference_model(model: MobileFormer, channels_last: bool = True) -> MobileFormer:
    """A copy of ``model`` for inference: eval mode, BatchNorm folded, no gradients, channels_last."""
    out = copy.deepcopy(model).eval()
    for mod in out.modules():
        if isinstance(mod, ConvBN):
            fold_batchnorm(mod)
    for p in out.parameters():
        p.requires_grad_(False)
    if channels_last:
        out = out.to(memory_format=torch.channels_last)
    return out
