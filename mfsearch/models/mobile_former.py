"""The Mobile-Former family (Chen et al., CVPR 2022): layers, blocks, model, complexity.

Layout follows timm: building blocks first, then the model class with ``forward_features`` /
``forward_head``, then the builder. Every module with weights has a static
``complexity(cx, ...)`` mirroring its ``__init__`` (pycls style), so MACs and parameters of a
config are known without building it; ``tests/test_complexity.py`` holds the two equal to
fvcore and to the built model.

Attention products are written as ``@`` matmuls (what fvcore counts). Channel-first layouts are
kept throughout: the bridges contract over channels or tokens without transposing the map.

Fast paths (same function, different kernels; all off while ``torch.jit`` traces, so fvcore
counts the plain ops): on maps of at most 4 pixels, depthwise convolutions run as a direct
per-channel product (oneDNN's depthwise backward is 10-30x slower there, and a 32x32 proxy
input shrinks to 1x1 and 2x2 maps) and dense 1x1 convolutions as one matmul; DY-ReLU runs as
one autograd function that keeps no full-size intermediates, with compiled fused kernels for
large CPU maps; and attention on CUDA uses ``scaled_dot_product_attention``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._utils import switched_on
from .config import BlockConfig, MobileFormerConfig
from .cx import Cx

# ---------------------------------------------------------------------------- small layers


def hsigmoid(x: Tensor) -> Tensor:
    """``ReLU6(x + 3) / 6``."""
    return F.relu6(x + 3.0) / 6.0


def hswish(x: Tensor) -> Tensor:
    return x * hsigmoid(x)


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """View (B, G, C/G, H, W), swap dims 1 and 2, flatten back to C channels."""
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


_FAST = [True]


def fast_paths() -> bool:
    """Whether the fast kernels may run (not while ``torch.jit`` traces: fvcore counts the plain ops)."""
    return _FAST[0] and not torch.jit.is_tracing() and not torch.jit.is_scripting()


@contextmanager
def plain_kernels() -> Iterator[None]:
    """Run every module on its plain ops (for comparisons and debugging); the function is the same."""
    saved, _FAST[0] = _FAST[0], False
    try:
        yield
    finally:
        _FAST[0] = saved


SMALL_MAP = 4  # pixels: depthwise convs on maps this small take the direct path
_TAPS: dict[tuple, tuple[Tensor, Tensor]] = {}


def _taps(h: int, w: int, k: int, stride: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """For a ``k x k`` conv with padding ``k // 2``: kernel tap index and validity, (out pixels, in pixels)."""
    key = (h, w, k, stride, str(device))
    if key not in _TAPS:
        with torch.inference_mode(False):  # cached: must stay usable by autograd after an inference call
            _TAPS[key] = _build_taps(h, w, k, stride, device)
    return _TAPS[key]


def _build_taps(h: int, w: int, k: int, stride: int, device: torch.device) -> tuple[Tensor, Tensor]:
    p = k // 2
    ho, wo = (h + 2 * p - k) // stride + 1, (w + 2 * p - k) // stride + 1
    oy, ox = torch.meshgrid(torch.arange(ho), torch.arange(wo), indexing="ij")
    iy, ix = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    dy = iy.reshape(1, -1) - oy.reshape(-1, 1) * stride + p
    dx = ix.reshape(1, -1) - ox.reshape(-1, 1) * stride + p
    valid = (dy >= 0) & (dy < k) & (dx >= 0) & (dx < k)
    idx = torch.where(valid, dy * k + dx, 0)
    return idx.to(device), valid.to(device)


def depthwise_small(x: Tensor, conv: nn.Conv2d) -> Tensor:
    """``conv(x)`` for a depthwise conv (``groups == cin``) on a map of a few pixels, as a direct product."""
    return depthwise_small_weight(x, conv.weight, conv.stride[0], conv.bias)


def depthwise_small_weight(x: Tensor, weight: Tensor, stride: int, bias: Tensor | None = None) -> Tensor:
    """:func:`depthwise_small` from the weight (C_out, 1, k, k) itself (weight-sharing supernets slice it)."""
    b, c, h, w = x.shape
    k, s = weight.shape[-1], stride
    cout = weight.shape[0]
    idx, valid = _taps(h, w, k, s, x.device)
    ho, wo = (h + 2 * (k // 2) - k) // s + 1, (w + 2 * (k // 2) - k) // s + 1
    wmat = weight.reshape(cout, k * k)[:, idx] * valid  # cout, out pixels, in pixels
    xs = x.reshape(b, c, 1, h * w)
    if cout != c:  # depth multiplier: output channel o reads input channel o // (cout / c)
        xs = xs.repeat_interleave(cout // c, dim=1)
    y = (xs * wmat).sum(-1).view(b, cout, ho, wo)
    if bias is not None:
        y = y + bias.view(1, -1, 1, 1)
    return y


def pointwise_small(x: Tensor, conv: nn.Conv2d) -> Tensor:
    """``conv(x)`` for a dense 1x1 conv as one matmul over the pixels (NHWC view: no copy for channels_last)."""
    return pointwise_small_weight(x, conv.weight, conv.bias)


def pointwise_small_weight(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """:func:`pointwise_small` from the weight (C_out, C_in, 1, 1) itself."""
    y = F.linear(x.permute(0, 2, 3, 1), weight.flatten(1), bias)
    return y.permute(0, 3, 1, 2)


class ConvBN(nn.Module):
    """Bias-free conv (padding ``k // 2``) followed by BatchNorm2d."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.depthwise = groups == cin and k > 1 and cout % cin == 0
        self.pointwise = groups == 1 and k == 1 and stride == 1

    def forward(self, x: Tensor) -> Tensor:
        if fast_paths() and x.shape[-1] * x.shape[-2] <= SMALL_MAP:  # fast_paths() first: no size test in a trace
            if self.depthwise:
                return self.bn(depthwise_small(x, self.conv))
            if self.pointwise:
                return self.bn(pointwise_small(x, self.conv))
        return self.bn(self.conv(x))

    @staticmethod
    def complexity(cx: Cx, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> Cx:
        cx.conv(cin, cout, k, stride, groups)
        cx.bn(cout)
        return cx


def _dyrelu(x: Tensor, a1: Tensor, a2: Tensor) -> Tensor:
    return torch.maximum(x * a1, x * a2)


def _dyrelu_backward(g: Tensor, x: Tensor, a1: Tensor, a2: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    # max(x a1, x a2) = x a2 + relu(x d) with d = a1 - a2; float masks only (bool ops are slow in eager on CPU)
    d = a1 - a2
    gd = torch.ops.aten.threshold_backward(g, x * d, 0)  # g where x d > 0 (slope a1), else 0
    gx = torch.addcmul(g * a2, gd, d)
    ga1 = (gd * x).sum((2, 3), keepdim=True)
    return gx, ga1, (g * x).sum((2, 3), keepdim=True) - ga1


def _dyrelu_backward_fusable(g: Tensor, x: Tensor, a1: Tensor, a2: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    # the same gradients, written for a code generator: one pass for gx, one for the two sums
    first = x * (a1 - a2) > 0
    gxx = g * x
    ga1 = torch.where(first, gxx, 0.0).sum((2, 3), keepdim=True)
    return g * torch.where(first, a1, a2), ga1, gxx.sum((2, 3), keepdim=True) - ga1


FUSED_MIN_NUMEL = 1 << 22  # DY-ReLU inputs this large (16 MB in fp32) take the compiled kernels on CPU
FUSED_ENV = "MFSEARCH_FUSED_DYRELU"
_FUSED: dict[str, object] = {}


def _fused_kernels() -> tuple | None:
    """Compiled (forward, backward) DY-ReLU kernels for CPU, or None where they cannot be had.

    Eager DY-ReLU is memory-bound: forward and backward pass over a large map about 25 times, the
    compiled kernels 5 times (Mobile-Former-294M, 224x224, batch 32: about 20% of a training step).
    Built on first use (one compile with dynamic shapes, cached on disk by torch across processes);
    if compiling fails (no C++ compiler...) the reason is warned once and the eager ops are used.
    """
    if "kernels" not in _FUSED:
        if not switched_on(FUSED_ENV):
            _FUSED["kernels"] = None
        else:
            _FUSED["kernels"] = (torch.compile(_dyrelu, dynamic=True),
                                 torch.compile(_dyrelu_backward_fusable, dynamic=True))
    return _FUSED["kernels"]  # type: ignore[return-value]


def _use_fused(x: Tensor) -> bool:
    return (x.device.type == "cpu" and x.numel() >= FUSED_MIN_NUMEL and x.dim() == 4
            and not torch.compiler.is_compiling() and _fused_kernels() is not None)


def _run_fused(i: int, *args: Tensor) -> object:
    """Kernel ``i`` (0: forward, 1: backward) of :func:`_fused_kernels`; the eager ops if it cannot be compiled."""
    kernels = _fused_kernels()
    try:
        return kernels[i](*args)  # type: ignore[index]
    except Exception as e:  # noqa: BLE001 - any compiler failure: warn once, then eager for good
        _FUSED["kernels"] = None
        warnings.warn(f"DY-ReLU: compiled CPU kernels unavailable ({type(e).__name__}: {str(e)[:200]}); "
                      f"using eager ops (set {FUSED_ENV}=0 to skip the attempt)", RuntimeWarning, stacklevel=2)
        return (_dyrelu, _dyrelu_backward)[i](*args)


class _DyReLUFn(torch.autograd.Function):
    """``max(x * a1, x * a2)`` with per-(sample, channel) slopes; saves only ``x`` and the slopes."""

    @staticmethod
    def forward(ctx, x: Tensor, a1: Tensor, a2: Tensor) -> Tensor:  # noqa: ANN001 - autograd signature
        ctx.save_for_backward(x, a1, a2)
        return _run_fused(0, x, a1, a2) if _use_fused(x) else _dyrelu(x, a1, a2)

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor, Tensor, Tensor]:  # noqa: ANN001
        x, a1, a2 = ctx.saved_tensors
        return _run_fused(1, g, x, a1, a2) if _use_fused(x) else _dyrelu_backward(g, x, a1, a2)


def dyrelu(x: Tensor, a1: Tensor, a2: Tensor) -> Tensor:
    """``max(x * a1, x * a2)`` with per-(sample, channel) slopes: the fused function where it may run."""
    if fast_paths() and x.dim() == 4:
        return _DyReLUFn.apply(x, a1, a2)
    return torch.maximum(x * a1, x * a2)


class DyReLU(nn.Module):
    """Dynamic ReLU with two slopes per channel and no intercepts (docs/architecture.md §2.5).

    Coefficients come from token 0 through its own two-layer MLP: at ``h = 0.5`` it is ReLU.
    """

    def __init__(self, channels: int, token_dim: int, reduction: int = 4) -> None:
        super().__init__()
        self.channels = channels
        self.fc1 = nn.Linear(token_dim, token_dim // reduction)
        self.fc2 = nn.Linear(token_dim // reduction, 2 * channels)

    def forward(self, x: Tensor, z0: Tensor | None) -> Tensor:
        h = hsigmoid(self.fc2(F.relu(self.fc1(z0))))
        h = h.view(h.shape[0], 2, self.channels, 1, 1)
        a1 = 2.0 * (h[:, 0] - 0.5) + 1.0
        a2 = 2.0 * (h[:, 1] - 0.5)
        return dyrelu(x, a1, a2)

    @staticmethod
    def complexity(cx: Cx, channels: int, token_dim: int, reduction: int = 4) -> Cx:
        cx.linear(1, token_dim, token_dim // reduction)
        cx.linear(1, token_dim // reduction, 2 * channels)
        return cx


class StaticAct(nn.Module):
    """A token-independent activation with the ``act(x, z0)`` signature of :class:`DyReLU`."""

    def __init__(self, name: str, channels: int) -> None:
        super().__init__()
        self.name = name
        if name == "prelu":
            self.prelu = nn.PReLU(channels, init=0.25)

    def forward(self, x: Tensor, z0: Tensor | None = None) -> Tensor:
        if self.name == "relu":
            return F.relu(x)
        if self.name == "relu6":
            return F.relu6(x)
        if self.name == "hswish":
            return hswish(x)
        return self.prelu(x)

    @staticmethod
    def complexity(cx: Cx, name: str, channels: int) -> Cx:
        if name == "prelu":
            cx.params += channels
        return cx


def make_act(cfg: MobileFormerConfig, channels: int) -> nn.Module:
    """The Mobile sub-block activation named by ``cfg.activation`` (a registry lookup)."""
    if cfg.activation == "dyrelu":
        return DyReLU(channels, cfg.token_dim, cfg.dyrelu_reduction)
    return StaticAct(cfg.activation, channels)


def act_complexity(cx: Cx, cfg: MobileFormerConfig, channels: int) -> Cx:
    if cfg.activation == "dyrelu":
        return DyReLU.complexity(cx, channels, cfg.token_dim, cfg.dyrelu_reduction)
    return StaticAct.complexity(cx, cfg.activation, channels)


# ---------------------------------------------------------------------------- bridges, Former


class MobileToFormer(nn.Module):
    """Tokens attend over all pixels (docs/architecture.md §2.1); light: the map is key and value as it is."""

    def __init__(self, channels: int, token_dim: int, heads: int, gate: bool, full: bool) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (channels // heads) ** -0.5
        self.q = nn.Linear(token_dim, channels)
        self.gate = nn.Linear(token_dim, channels) if gate else None
        self.k = nn.Conv2d(channels, channels, 1, bias=False) if full else None
        self.v = nn.Conv2d(channels, channels, 1, bias=False) if full else None
        self.proj = nn.Linear(channels, token_dim)
        self.norm = nn.LayerNorm(token_dim)

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        b, c, h, w = x.shape
        m = z.shape[1]
        nh = self.heads
        k = (self.k(x) if self.k is not None else x).reshape(b, nh, c // nh, h * w)
        v = (self.v(x) if self.v is not None else x).reshape(b, nh, c // nh, h * w)
        q = self.q(z).view(b, m, nh, c // nh).transpose(1, 2)  # b, nh, m, c/nh
        if x.is_cuda and fast_paths():
            out = F.scaled_dot_product_attention(q, k.transpose(-1, -2), v.transpose(-1, -2), scale=self.scale)
        else:
            attn = ((q @ k) * self.scale).softmax(dim=-1)  # b, nh, m, hw
            out = attn @ v.transpose(-1, -2)
        out = out.transpose(1, 2).reshape(b, m, c)
        if self.gate is not None:
            out = out * (2.0 * hsigmoid(self.gate(z)))
        return self.norm(z + self.proj(out))

    @staticmethod
    def complexity(cx: Cx, channels: int, token_dim: int, m: int, heads: int, gate: bool, full: bool) -> Cx:
        hw = cx.h * cx.w
        if full:
            cx.conv(channels, channels, 1)
            cx.conv(channels, channels, 1)
        cx.linear(m, token_dim, channels)
        cx.matmul(m * channels, hw)
        cx.matmul(m * hw, channels)
        if gate:
            cx.linear(m, token_dim, channels)
        cx.linear(m, channels, token_dim)
        cx.layernorm(m, token_dim)
        return cx


class Former(nn.Module):
    """One post-norm transformer layer over the tokens; keys = values = the tokens (docs/architecture.md §2.2).

    ``gate``: the merged attention output is multiplied by ``2 * hsigmoid(Linear(d -> d)(z))`` of the
    layer's input tokens before the output projection (the authors' Former gate; off in the paper models).
    """

    def __init__(self, token_dim: int, heads: int, ffn: bool, expansion: int, gate: bool = False) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (token_dim // heads) ** -0.5
        self.q = nn.Linear(token_dim, token_dim)
        self.gate = nn.Linear(token_dim, token_dim) if gate else None
        self.proj = nn.Linear(token_dim, token_dim)
        self.norm1 = nn.LayerNorm(token_dim)
        if ffn:
            self.fc1 = nn.Linear(token_dim, token_dim * expansion)
            self.fc2 = nn.Linear(token_dim * expansion, token_dim)
            self.norm2 = nn.LayerNorm(token_dim)
        self.ffn = ffn

    def forward(self, z: Tensor) -> Tensor:
        b, m, d = z.shape
        nh = self.heads
        kv = z.view(b, m, nh, d // nh).transpose(1, 2)  # b, nh, m, d/nh
        q = self.q(z).view(b, m, nh, d // nh).transpose(1, 2)
        if z.is_cuda and fast_paths():
            out = F.scaled_dot_product_attention(q, kv, kv, scale=self.scale)
        else:
            out = ((q @ kv.transpose(-1, -2)) * self.scale).softmax(dim=-1) @ kv
        out = out.transpose(1, 2).reshape(b, m, d)
        if self.gate is not None:
            out = out * (2.0 * hsigmoid(self.gate(z)))
        z = self.norm1(z + self.proj(out))
        if self.ffn:
            z = self.norm2(z + self.fc2(F.gelu(self.fc1(z))))
        return z

    @staticmethod
    def complexity(cx: Cx, token_dim: int, m: int, ffn: bool, expansion: int, gate: bool = False) -> Cx:
        d = token_dim
        cx.linear(m, d, d)
        cx.matmul(m * d, m)
        cx.matmul(m * m, d)
        if gate:
            cx.linear(m, d, d)
        cx.linear(m, d, d)
        cx.layernorm(m, d)
        if ffn:
            cx.linear(m, d, d * expansion)
            cx.linear(m, d * expansion, d)
            cx.layernorm(m, d)
        return cx


class FormerToMobile(nn.Module):
    """Every pixel attends over the tokens (docs/architecture.md §2.6); light: the map is the query as it is.

    ``gate``: the token values are multiplied by ``2 * hsigmoid(Linear(d -> C)(z))`` before the pixels
    attend over them (the authors' Former->Mobile gate; off in the paper models).
    """

    def __init__(self, channels: int, token_dim: int, heads: int, full: bool, gate: bool = False) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (channels // heads) ** -0.5
        self.gate = nn.Linear(token_dim, channels) if gate else None
        self.k = nn.Linear(token_dim, channels)
        self.v = nn.Linear(token_dim, channels)
        self.q = nn.Conv2d(channels, channels, 1, bias=False) if full else None
        self.proj = nn.Conv2d(channels, channels, 1, bias=False) if full else None

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        b, c, h, w = x.shape
        m = z.shape[1]
        nh = self.heads
        q = (self.q(x) if self.q is not None else x).reshape(b, nh, c // nh, h * w)
        k = self.k(z).view(b, m, nh, c // nh).transpose(1, 2)  # b, nh, m, c/nh
        v = self.v(z)
        if self.gate is not None:
            v = v * (2.0 * hsigmoid(self.gate(z)))
        if x.is_cuda and fast_paths():  # pixels are the queries: b, nh, hw, c/nh
            v = v.view(b, m, nh, c // nh).transpose(1, 2)
            out = F.scaled_dot_product_attention(q.transpose(-1, -2), k, v, scale=self.scale)
            out = out.transpose(-1, -2).reshape(b, c, h, w)
        else:
            v = v.view(b, m, nh, c // nh).permute(0, 2, 3, 1)  # b, nh, c/nh, m
            attn = ((k @ q) * self.scale).softmax(dim=-2)  # b, nh, m, hw (softmax over tokens)
            out = (v @ attn).reshape(b, c, h, w)
        return self.proj(out) if self.proj is not None else out

    @staticmethod
    def complexity(cx: Cx, channels: int, token_dim: int, m: int, heads: int, full: bool, gate: bool = False) -> Cx:
        hw = cx.h * cx.w
        if full:
            cx.conv(channels, channels, 1)
        if gate:
            cx.linear(m, token_dim, channels)
        cx.linear(m, token_dim, channels)
        cx.linear(m, token_dim, channels)
        cx.matmul(m * channels, hw)
        cx.matmul(channels * m, hw)
        if full:
            cx.conv(channels, channels, 1)
        return cx


# ---------------------------------------------------------------------------- blocks


class LiteBlock(nn.Module):
    """First block: depthwise (multiplier e1) + BN + ReLU6, then pointwise + BN (docs/architecture.md §2.7)."""

    def __init__(self, cin: int, cout: int, e1: int, stride: int, groups: int) -> None:
        super().__init__()
        self.conv1 = ConvBN(cin, cin * e1, 3, stride, groups=cin)
        self.shuffle = cin if groups > 1 else 0
        self.conv2 = ConvBN(cin * e1, cout, 1, groups=groups)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        y = F.relu6(self.conv1(x))
        if self.shuffle:
            y = channel_shuffle(y, self.shuffle)
        y = self.conv2(y)
        return (y + x if self.residual else y), z

    @staticmethod
    def complexity(cx: Cx, cin: int, cout: int, e1: int, stride: int, groups: int) -> Cx:
        ConvBN.complexity(cx, cin, cin * e1, 3, stride, cin)
        return ConvBN.complexity(cx, cin * e1, cout, 1, 1, groups)


class MobileSubBlock(nn.Module):
    """The convolution stream of a block: inverted bottleneck (stride 1) or "down" (stride 2)."""

    def __init__(self, cfg: MobileFormerConfig, cin: int, cout: int, b: BlockConfig) -> None:
        super().__init__()
        g = cfg.groups
        self.down = b.stride == 2
        self.groups = g
        if self.down:
            h1, h2 = cin * int(b.e1), cout * b.e2
            self.conv1 = ConvBN(cin, h1, 3, 2, groups=cin)
            self.act1 = make_act(cfg, h1)
            self.conv2 = ConvBN(h1, cout, 1, groups=g)
            self.conv3 = ConvBN(cout, h2, 3, 1, groups=cout)
            self.act2 = make_act(cfg, h2)
            self.conv4 = ConvBN(h2, cout, 1, groups=g)
            self.shuffles = (cin, cout) if g > 1 else (0, 0)
        else:
            hid = round(cin * b.e1)
            self.conv1 = ConvBN(cin, hid, 1, groups=g)
            self.act1 = make_act(cfg, hid)
            self.conv2 = ConvBN(hid, hid, 3, 1, groups=hid)
            self.act2 = make_act(cfg, hid)
            self.conv3 = ConvBN(hid, cout, 1, groups=g)
            self.shuffles = (g, g) if g > 1 else (0, 0)

    def forward(self, x: Tensor, z0: Tensor | None) -> Tensor:
        s1, s2 = self.shuffles
        if self.down:
            y = self.conv1(x)
            if s1:
                y = channel_shuffle(y, s1)
            u = self.conv2(self.act1(y, z0))
            y = self.conv3(u)
            if s2:
                y = channel_shuffle(y, s2)
            return self.conv4(self.act2(y, z0)) + u
        y = self.conv1(x)
        if s1:
            y = channel_shuffle(y, s1)
        y = self.act2(self.conv2(self.act1(y, z0)), z0)
        y = self.conv3(y)
        if s2:
            y = channel_shuffle(y, s2)
        return y

    @staticmethod
    def complexity(cx: Cx, cfg: MobileFormerConfig, cin: int, cout: int, b: BlockConfig) -> Cx:
        g = cfg.groups
        if b.stride == 2:
            h1, h2 = cin * int(b.e1), cout * b.e2
            ConvBN.complexity(cx, cin, h1, 3, 2, cin)
            act_complexity(cx, cfg, h1)
            ConvBN.complexity(cx, h1, cout, 1, 1, g)
            ConvBN.complexity(cx, cout, h2, 3, 1, cout)
            act_complexity(cx, cfg, h2)
            return ConvBN.complexity(cx, h2, cout, 1, 1, g)
        hid = round(cin * b.e1)
        ConvBN.complexity(cx, cin, hid, 1, 1, g)
        act_complexity(cx, cfg, hid)
        ConvBN.complexity(cx, hid, hid, 3, 1, hid)
        act_complexity(cx, cfg, hid)
        return ConvBN.complexity(cx, hid, cout, 1, 1, g)


class MobileFormerBlock(nn.Module):
    """Mobile sub-block + Former + two bridges, arranged in parallel (paper) or in series."""

    def __init__(self, cfg: MobileFormerConfig, cin: int, cout: int, b: BlockConfig) -> None:
        super().__init__()
        full = cfg.projections == "full"
        self.serial = cfg.arrangement == "serial"
        self.residual = b.stride == 1 and cin == cout
        self.uses_tokens = cfg.num_tokens > 0
        c_m2f = cout if self.serial else cin
        d = cfg.token_dim
        self.mobile = MobileSubBlock(cfg, cin, cout, b)
        self.m2f = MobileToFormer(c_m2f, d, cfg.bridge_heads, cfg.gate, full) if cfg.m2f else None
        self.former = Former(d, cfg.former_heads, cfg.ffn, cfg.ffn_expansion, cfg.former_gate) if cfg.former else None
        self.f2m = FormerToMobile(cout, d, cfg.bridge_heads, full, cfg.f2m_gate) if cfg.f2m else None

    def _tokens(self, x: Tensor, z: Tensor) -> Tensor:
        if self.m2f is not None:
            z = self.m2f(x, z)
        if self.former is not None:
            z = self.former(z)
        return z

    def forward(self, x: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        if self.serial:
            y = self.mobile(x, z[:, 0] if self.uses_tokens else None)
            if self.residual:
                y = y + x
            z = self._tokens(y, z)
        else:
            z = self._tokens(x, z)
            y = self.mobile(x, z[:, 0] if self.uses_tokens else None)
            if self.residual:
                y = y + x
        if self.f2m is not None:
            y = y + self.f2m(y, z)
        return y, z

    @staticmethod
    def complexity(cx: Cx, cfg: MobileFormerConfig, cin: int, cout: int, b: BlockConfig) -> Cx:
        m, d = cfg.num_tokens, cfg.token_dim
        full = cfg.projections == "full"
        h0, w0 = cx.h, cx.w
        serial = cfg.arrangement == "serial"
        if serial:
            MobileSubBlock.complexity(cx, cfg, cin, cout, b)
        if cfg.m2f:
            MobileToFormer.complexity(cx, cout if serial else cin, d, m, cfg.bridge_heads, cfg.gate, full)
        if cfg.former:
            Former.complexity(cx, d, m, cfg.ffn, cfg.ffn_expansion, cfg.former_gate)
        if not serial:
            cx.h, cx.w = h0, w0
            MobileSubBlock.complexity(cx, cfg, cin, cout, b)
        if cfg.f2m:
            FormerToMobile.complexity(cx, cout, d, m, cfg.bridge_heads, full, cfg.f2m_gate)
        return cx


class Head(nn.Module):
    """1x1 conv (6C) + BN + ReLU6, pool, hswish, concat token 0, FC + BN1d + hswish, classifier."""

    def __init__(self, cfg: MobileFormerConfig, cin: int) -> None:
        super().__init__()
        g = cfg.groups
        hid = cin * cfg.head_expansion
        self.shuffle = g if g > 1 else 0
        self.conv = ConvBN(cin, hid, 1, groups=g)
        self.fc = nn.Linear(hid + (cfg.token_dim if cfg.num_tokens else 0), cfg.head)
        self.bn = nn.BatchNorm1d(cfg.head)
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(cfg.head, cfg.num_classes)

    def forward(self, x: Tensor, z: Tensor | None, pre_logits: bool = False) -> Tensor:
        if self.shuffle:
            x = channel_shuffle(x, self.shuffle)
        x = F.relu6(self.conv(x))
        x = hswish(F.adaptive_avg_pool2d(x, 1).flatten(1))
        if z is not None:
            x = torch.cat((x, z[:, 0]), dim=1)
        x = hswish(self.bn(self.fc(x)))
        if pre_logits:
            return x
        return self.classifier(self.dropout(x))

    @staticmethod
    def complexity(cx: Cx, cfg: MobileFormerConfig, cin: int) -> Cx:
        hid = cin * cfg.head_expansion
        ConvBN.complexity(cx, cin, hid, 1, 1, cfg.groups)
        cx.macs += hid * cx.h * cx.w  # adaptive average pool
        cx.linear(1, hid + (cfg.token_dim if cfg.num_tokens else 0), cfg.head)
        cx.macs += 2 * cfg.head  # BatchNorm1d
        cx.params += 2 * cfg.head
        cx.linear(1, cfg.head, cfg.num_classes)
        return cx


# ---------------------------------------------------------------------------- the model


class MobileFormer(nn.Module):
    """A Mobile-Former built from a :class:`MobileFormerConfig`.

    ``features_only=True`` builds no head and ``forward`` returns the stride 4/8/16/32 feature
    maps plus the tokens (a detection backbone).
    """

    def __init__(self, cfg: MobileFormerConfig, features_only: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        self.features_only = features_only
        m, d = cfg.num_tokens, cfg.token_dim
        self.tokens = nn.Parameter(torch.randn(m, d)) if m else None
        c = cfg.width(cfg.stem)
        self.stem = ConvBN(3, c, 3, 2)
        blocks: list[nn.Module] = []
        self.reductions: list[int] = []
        red = 2
        for b, (ci, co) in zip(cfg.blocks, cfg.channels()):
            red *= b.stride
            self.reductions.append(red)
            if b.kind == "lite":
                blocks.append(LiteBlock(ci, co, int(b.e1), b.stride, cfg.groups))
            else:
                blocks.append(MobileFormerBlock(cfg, ci, co, b))
        self.blocks = nn.ModuleList(blocks)
        self.num_features = cfg.channels()[-1][1]
        # the bridge after the last block has its own projections knob (light in the authors' models,
        # whatever the blocks use)
        full = cfg.final_bridge_projections == "full"
        self.final_m2f = (
            MobileToFormer(self.num_features, d, cfg.bridge_heads, cfg.gate, full) if cfg.m2f else None
        )
        self.head = None if features_only else Head(cfg, self.num_features)
        self.feature_info = [
            {"reduction": r, "num_chs": co, "index": i}
            for i, (r, (_, co)) in enumerate(zip(self.reductions, cfg.channels()))
            if r in (4, 8, 16, 32) and (i + 1 == len(self.reductions) or self.reductions[i + 1] != r)
        ]
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming (fan-out) convs, truncated-normal linears, unit norms, N(0,1) tokens."""
        for mod in self.modules():
            if isinstance(mod, nn.Conv2d):
                nn.init.kaiming_normal_(mod.weight, mode="fan_out")
            elif isinstance(mod, nn.Linear):
                nn.init.trunc_normal_(mod.weight, std=0.02)
                nn.init.zeros_(mod.bias)
            elif isinstance(mod, (nn.BatchNorm2d, nn.BatchNorm1d, nn.LayerNorm)):
                nn.init.ones_(mod.weight)
                nn.init.zeros_(mod.bias)
        if self.tokens is not None:
            nn.init.normal_(self.tokens)

    def init_tokens(self, batch: int) -> Tensor | None:
        return None if self.tokens is None else self.tokens.unsqueeze(0).expand(batch, -1, -1)

    def forward_features(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Final feature map and tokens (after the last Mobile->Former bridge)."""
        z = self.init_tokens(x.shape[0])
        x = F.relu6(self.stem(x))
        for blk in self.blocks:
            x, z = blk(x, z)
        if self.final_m2f is not None:
            z = self.final_m2f(x, z)
        return x, z

    def forward_pyramid(self, x: Tensor) -> tuple[list[Tensor], Tensor | None]:
        """Feature maps at strides 4, 8, 16, 32 (those the input size reaches) and the tokens."""
        want = {f["index"] for f in self.feature_info}
        z = self.init_tokens(x.shape[0])
        x = F.relu6(self.stem(x))
        feats = []
        for i, blk in enumerate(self.blocks):
            x, z = blk(x, z)
            if i in want:
                feats.append(x)
        if self.final_m2f is not None:
            z = self.final_m2f(x, z)
        return feats, z

    def forward_head(self, x: Tensor, z: Tensor | None, pre_logits: bool = False) -> Tensor:
        if self.head is None:
            raise RuntimeError("this model was built with features_only=True and has no head")
        return self.head(x, z, pre_logits)

    def forward(self, x: Tensor):  # noqa: ANN201 - logits, or (features, tokens) when features_only
        if self.features_only:
            return self.forward_pyramid(x)
        x, z = self.forward_features(x)
        return self.forward_head(x, z)

    @staticmethod
    def complexity(cx: Cx, cfg: MobileFormerConfig, per_block: list | None = None) -> Cx:
        """Adds the whole model to ``cx``; ``per_block`` (a list) receives one row per stage."""
        m, d = cfg.num_tokens, cfg.token_dim
        c = cfg.width(cfg.stem)
        rows = per_block

        def mark(name: str, ci: int, co: int, h: int, w: int, macs: int, params: int) -> None:
            if rows is not None:
                rows.append(BlockCost(name, ci, co, (h, w), (cx.h, cx.w), cx.macs - macs, cx.params - params))

        h, w, mc, pc = cx.h, cx.w, cx.macs, cx.params
        cx.params += m * d  # the token table
        ConvBN.complexity(cx, 3, c, 3, 2)
        mark("stem+tokens", 3, c, h, w, mc, pc)
        for i, (b, (ci, co)) in enumerate(zip(cfg.blocks, cfg.channels())):
            h, w, mc, pc = cx.h, cx.w, cx.macs, cx.params
            if b.kind == "lite":
                LiteBlock.complexity(cx, ci, co, int(b.e1), b.stride, cfg.groups)
            else:
                MobileFormerBlock.complexity(cx, cfg, ci, co, b)
            mark(f"block{i + 1}", ci, co, h, w, mc, pc)
        c = cfg.channels()[-1][1]
        h, w, mc, pc = cx.h, cx.w, cx.macs, cx.params
        if cfg.m2f:
            MobileToFormer.complexity(cx, c, d, m, cfg.bridge_heads, cfg.gate, cfg.final_bridge_projections == "full")
        Head.complexity(cx, cfg, c)
        mark("head", c, cfg.num_classes, h, w, mc, pc)
        return cx


@dataclass(frozen=True)
class BlockCost:
    """MACs and parameters of one part of the model (``info`` table rows)."""

    name: str
    c_in: int
    c_out: int
    size_in: tuple[int, int]
    size_out: tuple[int, int]
    macs: int
    params: int


@dataclass(frozen=True)
class Complexity:
    """Analytic cost of a config at one input size (batch 1)."""

    macs: int
    params: int
    input_size: int
    blocks: tuple[BlockCost, ...] = ()


def complexity(cfg: MobileFormerConfig, input_size: int = 224, per_block: bool = False) -> Complexity:
    """Exact MACs (fvcore's convention) and parameter count of ``cfg``, without building it."""
    rows: list | None = [] if per_block else None
    cx = MobileFormer.complexity(Cx(input_size, input_size), cfg, rows)
    return Complexity(cx.macs, cx.params, input_size, tuple(rows) if rows else ())


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
