"""A plain eager Mobile-Former, the yardstick of ``bench_speed.py``.

Written the way a typical research repository writes the model: one ``nn.Module`` per part,
``torch.einsum`` attention, DY-ReLU as ``torch.max(x * a1, x * a2)``, a ``Conv2d`` followed by a
``BatchNorm2d`` for every convolution, channels-first tensors, no fused or special kernels.

It computes the same function as :class:`mfsearch.models.MobileFormer` and has the same
``state_dict`` keys and shapes, so ``BaselineMobileFormer(cfg).load_state_dict(model.state_dict())``
works with ``strict=True``. Only the options the paper models use are supported (DY-ReLU, both
light bridges, parallel arrangement, the Former, no groups); others raise ``NotImplementedError``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:
    from mfsearch.models.config import BlockConfig, MobileFormerConfig


def h_sigmoid(x: Tensor) -> Tensor:
    return F.relu6(x + 3.0) / 6.0


def h_swish(x: Tensor) -> Tensor:
    return x * h_sigmoid(x)


class ConvBN(nn.Module):
    """Conv2d (no bias, padding k // 2) + BatchNorm2d."""

    def __init__(self, inp: int, oup: int, k: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(inp, oup, k, stride, k // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(oup)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(x))


class DyReLU(nn.Module):
    """Dynamic ReLU: two slopes per channel computed from the first token."""

    def __init__(self, channels: int, token_dim: int, reduction: int = 4) -> None:
        super().__init__()
        self.channels = channels
        self.fc1 = nn.Linear(token_dim, token_dim // reduction)
        self.fc2 = nn.Linear(token_dim // reduction, 2 * channels)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        b = x.shape[0]
        coef = h_sigmoid(self.fc2(F.relu(self.fc1(t))))
        coef = coef.view(b, 2, self.channels, 1, 1)
        a1 = 2.0 * (coef[:, 0] - 0.5) + 1.0
        a2 = 2.0 * (coef[:, 1] - 0.5)
        return torch.max(x * a1, x * a2)


class Mobile2Former(nn.Module):
    """Tokens attend over the pixels of the feature map (which is key and value as it is)."""

    def __init__(self, dim: int, token_dim: int, heads: int = 2, gate: bool = True) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.q = nn.Linear(token_dim, dim)
        self.gate = nn.Linear(token_dim, dim) if gate else None
        self.proj = nn.Linear(dim, token_dim)
        self.norm = nn.LayerNorm(token_dim)

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        b, c, h, w = x.shape
        _, m, _ = z.shape
        x = x.reshape(b, self.heads, c // self.heads, h * w)
        q = self.q(z).reshape(b, m, self.heads, c // self.heads)
        dots = torch.einsum("bmhc,bhcn->bhmn", q, x) * self.scale
        attn = dots.softmax(dim=-1)
        out = torch.einsum("bhmn,bhcn->bmhc", attn, x).reshape(b, m, c)
        if self.gate is not None:
            out = out * (2.0 * h_sigmoid(self.gate(z)))
        return self.norm(z + self.proj(out))


class Former(nn.Module):
    """One post-norm transformer layer over the tokens; keys and values are the tokens themselves."""

    def __init__(self, dim: int, heads: int = 4, expansion: int = 2, ffn: bool = True) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.q = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = ffn
        if ffn:
            self.fc1 = nn.Linear(dim, dim * expansion)
            self.fc2 = nn.Linear(dim * expansion, dim)
            self.norm2 = nn.LayerNorm(dim)

    def forward(self, z: Tensor) -> Tensor:
        b, m, d = z.shape
        q = self.q(z).reshape(b, m, self.heads, d // self.heads)
        kv = z.reshape(b, m, self.heads, d // self.heads)
        dots = torch.einsum("bmhc,bnhc->bhmn", q, kv) * self.scale
        attn = dots.softmax(dim=-1)
        out = torch.einsum("bhmn,bnhc->bmhc", attn, kv).reshape(b, m, d)
        z = self.norm1(z + self.proj(out))
        if self.ffn:
            z = self.norm2(z + self.fc2(F.gelu(self.fc1(z))))
        return z


class Former2Mobile(nn.Module):
    """Every pixel attends over the tokens (the feature map is the query as it is)."""

    def __init__(self, dim: int, token_dim: int, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.k = nn.Linear(token_dim, dim)
        self.v = nn.Linear(token_dim, dim)

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        b, c, h, w = x.shape
        _, m, _ = z.shape
        q = x.reshape(b, self.heads, c // self.heads, h * w)
        k = self.k(z).reshape(b, m, self.heads, c // self.heads)
        v = self.v(z).reshape(b, m, self.heads, c // self.heads)
        dots = torch.einsum("bmhc,bhcn->bhmn", k, q) * self.scale
        attn = dots.softmax(dim=2)  # over the tokens
        out = torch.einsum("bhmn,bmhc->bhcn", attn, v)
        return out.reshape(b, c, h, w)


class LiteBlock(nn.Module):
    """Depthwise 3x3 (channel multiplier e1) + BN + ReLU6, then pointwise + BN."""

    def __init__(self, inp: int, oup: int, expand: int, stride: int) -> None:
        super().__init__()
        self.conv1 = ConvBN(inp, inp * expand, 3, stride, groups=inp)
        self.conv2 = ConvBN(inp * expand, oup, 1)
        self.identity = stride == 1 and inp == oup

    def forward(self, x: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        out = self.conv2(F.relu6(self.conv1(x)))
        if self.identity:
            out = out + x
        return out, z


class Mobile(nn.Module):
    """Inverted bottleneck with DY-ReLU (stride 1) or the "down" block (stride 2)."""

    def __init__(self, inp: int, oup: int, b: BlockConfig, token_dim: int, reduction: int) -> None:
        super().__init__()
        self.stride = b.stride
        if b.stride == 2:
            hid1, hid2 = inp * int(b.e1), oup * b.e2
            self.conv1 = ConvBN(inp, hid1, 3, 2, groups=inp)
            self.act1 = DyReLU(hid1, token_dim, reduction)
            self.conv2 = ConvBN(hid1, oup, 1)
            self.conv3 = ConvBN(oup, hid2, 3, 1, groups=oup)
            self.act2 = DyReLU(hid2, token_dim, reduction)
            self.conv4 = ConvBN(hid2, oup, 1)
        else:
            hid = round(inp * b.e1)
            self.conv1 = ConvBN(inp, hid, 1)
            self.act1 = DyReLU(hid, token_dim, reduction)
            self.conv2 = ConvBN(hid, hid, 3, 1, groups=hid)
            self.act2 = DyReLU(hid, token_dim, reduction)
            self.conv3 = ConvBN(hid, oup, 1)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        if self.stride == 2:
            out = self.act1(self.conv1(x), t)
            shortcut = self.conv2(out)
            out = self.act2(self.conv3(shortcut), t)
            return self.conv4(out) + shortcut
        out = self.act1(self.conv1(x), t)
        out = self.act2(self.conv2(out), t)
        return self.conv3(out)


class MobileFormerBlock(nn.Module):
    """Mobile->Former bridge, Former, Mobile sub-block, Former->Mobile bridge (parallel arrangement)."""

    def __init__(self, cfg: MobileFormerConfig, inp: int, oup: int, b: BlockConfig) -> None:
        super().__init__()
        d = cfg.token_dim
        self.mobile = Mobile(inp, oup, b, d, cfg.dyrelu_reduction)
        self.m2f = Mobile2Former(inp, d, cfg.bridge_heads, cfg.gate)
        self.former = Former(d, cfg.former_heads, cfg.ffn_expansion, cfg.ffn)
        self.f2m = Former2Mobile(oup, d, cfg.bridge_heads)
        self.identity = b.stride == 1 and inp == oup

    def forward(self, x: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        z = self.former(self.m2f(x, z))
        out = self.mobile(x, z[:, 0])
        if self.identity:
            out = out + x
        out = out + self.f2m(out, z)
        return out, z


class Head(nn.Module):
    """1x1 conv + BN + ReLU6, global pool, h-swish, concat token 0, FC + BN + h-swish, classifier."""

    def __init__(self, inp: int, cfg: MobileFormerConfig) -> None:
        super().__init__()
        hid = inp * cfg.head_expansion
        self.conv = ConvBN(inp, hid, 1)
        self.fc = nn.Linear(hid + cfg.token_dim, cfg.head)
        self.bn = nn.BatchNorm1d(cfg.head)
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(cfg.head, cfg.num_classes)

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        x = F.relu6(self.conv(x))
        x = h_swish(F.adaptive_avg_pool2d(x, 1).flatten(1))
        x = torch.cat([x, z[:, 0]], dim=1)
        x = h_swish(self.bn(self.fc(x)))
        return self.classifier(self.dropout(x))


def check_supported(cfg: MobileFormerConfig) -> None:
    """Raise ``NotImplementedError`` for options the paper models do not use."""
    wanted = {"activation": "dyrelu", "bridges": "both", "projections": "light", "arrangement": "parallel",
              "groups": 1, "former": True, "former_gate": False, "f2m_gate": False,
              "final_bridge_projections": "light"}
    for name, value in wanted.items():
        if getattr(cfg, name) != value:
            raise NotImplementedError(f"the baseline supports only {name}={value!r}, got {getattr(cfg, name)!r}")
    if cfg.num_tokens < 1:
        raise NotImplementedError("the baseline needs at least one token")


class BaselineMobileFormer(nn.Module):
    """Mobile-Former from a :class:`MobileFormerConfig`, in plain eager PyTorch."""

    def __init__(self, cfg: MobileFormerConfig) -> None:
        super().__init__()
        check_supported(cfg)
        self.tokens = nn.Parameter(torch.randn(cfg.num_tokens, cfg.token_dim))
        self.stem = ConvBN(3, cfg.width(cfg.stem), 3, 2)
        blocks = []
        for b, (inp, oup) in zip(cfg.blocks, cfg.channels()):
            if b.kind == "lite":
                blocks.append(LiteBlock(inp, oup, int(b.e1), b.stride))
            else:
                blocks.append(MobileFormerBlock(cfg, inp, oup, b))
        self.blocks = nn.ModuleList(blocks)
        last = cfg.channels()[-1][1]
        self.final_m2f = Mobile2Former(last, cfg.token_dim, cfg.bridge_heads, cfg.gate)
        self.head = Head(last, cfg)
        for mod in self.modules():
            if isinstance(mod, nn.Conv2d):
                nn.init.kaiming_normal_(mod.weight, mode="fan_out")
            elif isinstance(mod, nn.Linear):
                nn.init.trunc_normal_(mod.weight, std=0.02)
                nn.init.zeros_(mod.bias)

    def forward(self, x: Tensor) -> Tensor:
        z = self.tokens.unsqueeze(0).repeat(x.shape[0], 1, 1)
        x = F.relu6(self.stem(x))
        for blk in self.blocks:
            x, z = blk(x, z)
        z = self.final_m2f(x, z)
        return self.head(x, z)
