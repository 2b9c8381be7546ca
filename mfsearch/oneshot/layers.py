"""Dynamic layers: one weight tensor of the largest shape, an active part chosen per call (OFA / timm style).

Every layer takes the active output (and input) channels as an *index set*: an ``int`` ``n`` for the
leading ``n`` channels (a view of the weight, the common case), or a 1-D ``LongTensor`` of channel
indices where the active channels are not a prefix (a depthwise conv with channel multiplier whose
multiplier shrinks, DY-ReLU's two concatenated halves, the head's ``[pooled, token 0]`` input).
``export`` returns the active part under the parameter names of the matching
:mod:`mfsearch.models.mobile_former` module, so an ordinary model can load it.

The kernels are the model's own: depthwise and pointwise convs on maps of a few pixels take the
direct paths of :mod:`mfsearch.models.mobile_former` (outside tracing), everything runs channels_last.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.mobile_former import SMALL_MAP, depthwise_small_weight, fast_paths, pointwise_small_weight

Idx = int | Tensor  # leading count, or explicit channel indices


def take(t: Tensor, dim: int, idx: Idx) -> Tensor:
    """The active part of ``t`` along ``dim``: a view for a leading count, a copy for an index set."""
    return t.narrow(dim, 0, idx) if isinstance(idx, int) else t.index_select(dim, idx)


def count(idx: Idx) -> int:
    return idx if isinstance(idx, int) else int(idx.numel())


def multiplier_set(c: int, e: int, e_max: int, device: torch.device) -> Idx:
    """Channels ``c' * e_max + j`` (``c' < c``, ``j < e``) of a depthwise conv with multiplier ``e_max``."""
    if e == e_max:
        return c * e
    return (torch.arange(c, device=device).unsqueeze(1) * e_max + torch.arange(e, device=device)).flatten()


class DynamicConv(nn.Conv2d):
    """Bias-free ``k x k`` conv (padding ``k // 2``), dense or depthwise (with a channel multiplier)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, depthwise: bool = False) -> None:
        super().__init__(cin, cout, k, stride, k // 2, groups=cin if depthwise else 1, bias=False)
        self.depthwise = depthwise

    def active_weight(self, out: Idx, inp: Idx | None = None) -> Tensor:
        w = take(self.weight, 0, out)
        return w if self.depthwise or inp is None else take(w, 1, inp)

    def forward(self, x: Tensor, out: Idx, inp: Idx | None = None) -> Tensor:  # type: ignore[override]
        """``inp``: the input's channels among this conv's (default: leading, as many as ``x`` has)."""
        w = self.active_weight(out, x.shape[1] if inp is None else inp)
        k, s = self.kernel_size[0], self.stride[0]
        small = x.shape[-1] * x.shape[-2] <= SMALL_MAP and fast_paths()
        if self.depthwise:
            if small:
                return depthwise_small_weight(x, w, s)
            return F.conv2d(x, w, None, s, k // 2, 1, x.shape[1])
        if small and k == 1 and s == 1:
            return pointwise_small_weight(x, w)
        return F.conv2d(x, w, None, s, k // 2)

    def export(self, out: Idx, inp: Idx | None = None) -> dict[str, Tensor]:
        return {"weight": self.active_weight(out, inp)}


class DynamicBN(nn.modules.batchnorm._BatchNorm):
    """BatchNorm (1d or 2d input) over the active channels; running statistics update in place.

    For an index set the statistics are gathered, updated, and scattered back, so every channel of
    the supernet keeps its own statistics whichever sub-network last used it.
    """

    def __init__(self, channels: int) -> None:
        super().__init__(channels)

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() not in (2, 4):
            raise ValueError(f"expected a 2-D or 4-D input, got {x.dim()}-D")

    def forward(self, x: Tensor, idx: Idx) -> Tensor:  # type: ignore[override]
        factor = 0.0
        if self.training:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        mean, var = take(self.running_mean, 0, idx), take(self.running_var, 0, idx)
        y = F.batch_norm(x, mean, var, take(self.weight, 0, idx), take(self.bias, 0, idx), self.training, factor,
                         self.eps)
        if self.training and not isinstance(idx, int):
            with torch.no_grad():
                self.running_mean.index_copy_(0, idx, mean)
                self.running_var.index_copy_(0, idx, var)
        return y

    def export(self, idx: Idx) -> dict[str, Tensor]:
        return {"weight": take(self.weight, 0, idx), "bias": take(self.bias, 0, idx),
                "running_mean": take(self.running_mean, 0, idx), "running_var": take(self.running_var, 0, idx),
                "num_batches_tracked": self.num_batches_tracked}


class DynamicConvBN(nn.Module):
    """:class:`~mfsearch.models.mobile_former.ConvBN` over the active channels."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, depthwise: bool = False) -> None:
        super().__init__()
        self.conv = DynamicConv(cin, cout, k, stride, depthwise)
        self.bn = DynamicBN(cout)

    def forward(self, x: Tensor, out: Idx, inp: Idx | None = None) -> Tensor:
        return self.bn(self.conv(x, out, inp), out)

    def export(self, out: Idx, inp: Idx | None = None) -> dict[str, Tensor]:
        return {**_prefixed("conv", self.conv.export(out, inp)), **_prefixed("bn", self.bn.export(out))}


class DynamicLinear(nn.Linear):
    """Linear layer (with bias) over the active output rows and input columns."""

    def active(self, out: Idx, inp: Idx) -> tuple[Tensor, Tensor]:
        return take(take(self.weight, 0, out), 1, inp), take(self.bias, 0, out)

    def forward(self, x: Tensor, out: Idx, inp: Idx | None = None) -> Tensor:  # type: ignore[override]
        w, b = self.active(out, x.shape[-1] if inp is None else inp)
        return F.linear(x, w, b)

    def export(self, out: Idx, inp: Idx) -> dict[str, Tensor]:
        w, b = self.active(out, inp)
        return {"weight": w, "bias": b}


class DynamicLayerNorm(nn.LayerNorm):
    """LayerNorm over the leading ``d`` features, ``d`` being the input's width."""

    def forward(self, x: Tensor) -> Tensor:
        d = x.shape[-1]
        return F.layer_norm(x, (d,), self.weight[:d], self.bias[:d], self.eps)

    def export(self, d: int) -> dict[str, Tensor]:
        return {"weight": self.weight[:d], "bias": self.bias[:d]}


def _prefixed(prefix: str, state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {f"{prefix}.{k}": v for k, v in state.items()}


__all__ = ["DynamicBN", "DynamicConv", "DynamicConvBN", "DynamicLayerNorm", "DynamicLinear", "Idx", "count",
           "multiplier_set", "take"]
