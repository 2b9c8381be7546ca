"""A weight-sharing Mobile-Former supernet: one module whose weights hold every architecture of a space.

``Supernet(space)`` builds the largest shapes of the space (:mod:`mfsearch.oneshot.skeleton`) from
dynamic layers; ``supernet(x, cfg)`` computes the sub-network ``cfg`` with the active parts of the
weights (leading token rows / columns, leading channels, leading blocks of each stage, the head
split of the bridges), and ``extract(cfg)`` returns an ordinary :class:`~mfsearch.models.MobileFormer`
with those weights and BatchNorm statistics. Blocks mirror :mod:`mfsearch.models.mobile_former`
module by module, under the same names, so ``extract`` is a ``load_state_dict`` and the tests hold
the two forwards equal in float64.

Active channel sets are computed once per config (a small cache) and shared by ``forward`` and
``extract``, so the two cannot disagree.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models import MobileFormer, MobileFormerConfig
from ..models.mobile_former import dyrelu, fast_paths, hsigmoid, hswish
from ..space.spec import Space
from .layers import DynamicBN, DynamicConv, DynamicConvBN, DynamicLayerNorm, DynamicLinear, Idx, multiplier_set, take
from .skeleton import Skeleton, Slot, assign_slots, check_fits, skeleton

Sets = dict[str, tuple]  # submodule name -> arguments of its forward / export
PLAN_CACHE = 64


def _prefixed(prefix: str, state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {f"{prefix}.{k}": v for k, v in state.items()}


# ---------------------------------------------------------------------------- activations, bridges, Former


class SuperAct(nn.Module):
    """The Mobile sub-block activation (DY-ReLU, or a static one) over an active channel set."""

    def __init__(self, cfg: MobileFormerConfig, channels: int, token_dim: int) -> None:
        super().__init__()
        self.name, self.channels, self.reduction = cfg.activation, channels, cfg.dyrelu_reduction
        if self.name == "dyrelu":
            self.fc1 = DynamicLinear(token_dim, token_dim // self.reduction)
            self.fc2 = DynamicLinear(token_dim // self.reduction, 2 * channels)
        elif self.name == "prelu":
            self.prelu = nn.PReLU(channels, init=0.25)
        self._pairs: dict[tuple, Tensor] = {}

    def _pair(self, idx: Idx, device: torch.device) -> Tensor:
        """Rows ``[h1 (C), h2 (C)]`` of ``fc2``: the channel set in each half."""
        if not isinstance(idx, int):
            return torch.cat((idx, idx + self.channels))
        key = (idx, str(device))
        if key not in self._pairs:
            with torch.inference_mode(False):  # cached: must stay usable by autograd after an inference call
                a = torch.arange(idx, device=device)
                self._pairs[key] = torch.cat((a, a + self.channels))
        return self._pairs[key]

    def forward(self, x: Tensor, z0: Tensor | None, idx: Idx) -> Tensor:
        if self.name == "dyrelu":
            r = z0.shape[-1] // self.reduction
            h = hsigmoid(self.fc2(F.relu(self.fc1(z0, r)), self._pair(idx, x.device)))
            h = h.view(h.shape[0], 2, x.shape[1], 1, 1)
            return dyrelu(x, 2.0 * (h[:, 0] - 0.5) + 1.0, 2.0 * (h[:, 1] - 0.5))
        if self.name == "relu":
            return F.relu(x)
        if self.name == "relu6":
            return F.relu6(x)
        if self.name == "hswish":
            return hswish(x)
        return F.prelu(x, take(self.prelu.weight, 0, idx))

    def export(self, idx: Idx, d: int) -> dict[str, Tensor]:
        if self.name == "dyrelu":
            r = d // self.reduction
            return {**_prefixed("fc1", self.fc1.export(r, d)),
                    **_prefixed("fc2", self.fc2.export(self._pair(idx, self.fc2.weight.device), r))}
        if self.name == "prelu":
            return {"prelu.weight": take(self.prelu.weight, 0, idx)}
        return {}


class SuperMobileToFormer(nn.Module):
    """:class:`~mfsearch.models.mobile_former.MobileToFormer` at the input's width and the tokens' width."""

    def __init__(self, channels: int, token_dim: int, gate: bool, full: bool) -> None:
        super().__init__()
        self.q = DynamicLinear(token_dim, channels)
        self.gate = DynamicLinear(token_dim, channels) if gate else None
        self.k = DynamicConv(channels, channels, 1) if full else None
        self.v = DynamicConv(channels, channels, 1) if full else None
        self.proj = DynamicLinear(channels, token_dim)
        self.norm = DynamicLayerNorm(token_dim)

    def forward(self, x: Tensor, z: Tensor, heads: int) -> Tensor:
        b, c, h, w = x.shape
        m, d = z.shape[1], z.shape[2]
        nh, scale = heads, (c // heads) ** -0.5
        k = (self.k(x, c) if self.k is not None else x).reshape(b, nh, c // nh, h * w)
        v = (self.v(x, c) if self.v is not None else x).reshape(b, nh, c // nh, h * w)
        q = self.q(z, c).view(b, m, nh, c // nh).transpose(1, 2)
        if x.is_cuda and fast_paths():
            out = F.scaled_dot_product_attention(q, k.transpose(-1, -2), v.transpose(-1, -2), scale=scale)
        else:
            out = ((q @ k) * scale).softmax(dim=-1) @ v.transpose(-1, -2)
        out = out.transpose(1, 2).reshape(b, m, c)
        if self.gate is not None:
            out = out * (2.0 * hsigmoid(self.gate(z, c)))
        return self.norm(z + self.proj(out, d))

    def export(self, c: int, d: int) -> dict[str, Tensor]:
        out = {**_prefixed("q", self.q.export(c, d)), **_prefixed("proj", self.proj.export(d, c)),
               **_prefixed("norm", self.norm.export(d))}
        if self.gate is not None:
            out.update(_prefixed("gate", self.gate.export(c, d)))
        if self.k is not None:
            out.update(_prefixed("k", self.k.export(c, c)))
            out.update(_prefixed("v", self.v.export(c, c)))
        return out


class SuperFormer(nn.Module):
    """:class:`~mfsearch.models.mobile_former.Former` at the tokens' width."""

    def __init__(self, token_dim: int, heads: int, ffn: bool, expansion: int) -> None:
        super().__init__()
        self.heads, self.expansion, self.ffn = heads, expansion, ffn
        self.q = DynamicLinear(token_dim, token_dim)
        self.proj = DynamicLinear(token_dim, token_dim)
        self.norm1 = DynamicLayerNorm(token_dim)
        if ffn:
            self.fc1 = DynamicLinear(token_dim, token_dim * expansion)
            self.fc2 = DynamicLinear(token_dim * expansion, token_dim)
            self.norm2 = DynamicLayerNorm(token_dim)

    def forward(self, z: Tensor) -> Tensor:
        b, m, d = z.shape
        nh, scale = self.heads, (d // self.heads) ** -0.5
        kv = z.view(b, m, nh, d // nh).transpose(1, 2)
        q = self.q(z, d).view(b, m, nh, d // nh).transpose(1, 2)
        if z.is_cuda and fast_paths():
            out = F.scaled_dot_product_attention(q, kv, kv, scale=scale)
        else:
            out = ((q @ kv.transpose(-1, -2)) * scale).softmax(dim=-1) @ kv
        z = self.norm1(z + self.proj(out.transpose(1, 2).reshape(b, m, d), d))
        if self.ffn:
            z = self.norm2(z + self.fc2(F.gelu(self.fc1(z, d * self.expansion)), d))
        return z

    def export(self, d: int) -> dict[str, Tensor]:
        out = {**_prefixed("q", self.q.export(d, d)), **_prefixed("proj", self.proj.export(d, d)),
               **_prefixed("norm1", self.norm1.export(d))}
        if self.ffn:
            e = d * self.expansion
            out.update({**_prefixed("fc1", self.fc1.export(e, d)), **_prefixed("fc2", self.fc2.export(d, e)),
                        **_prefixed("norm2", self.norm2.export(d))})
        return out


class SuperFormerToMobile(nn.Module):
    """:class:`~mfsearch.models.mobile_former.FormerToMobile` at the map's width and the tokens' width."""

    def __init__(self, channels: int, token_dim: int, full: bool) -> None:
        super().__init__()
        self.k = DynamicLinear(token_dim, channels)
        self.v = DynamicLinear(token_dim, channels)
        self.q = DynamicConv(channels, channels, 1) if full else None
        self.proj = DynamicConv(channels, channels, 1) if full else None

    def forward(self, x: Tensor, z: Tensor, heads: int) -> Tensor:
        b, c, h, w = x.shape
        m = z.shape[1]
        nh, scale = heads, (c // heads) ** -0.5
        q = (self.q(x, c) if self.q is not None else x).reshape(b, nh, c // nh, h * w)
        k = self.k(z, c).view(b, m, nh, c // nh).transpose(1, 2)
        if x.is_cuda and fast_paths():
            v = self.v(z, c).view(b, m, nh, c // nh).transpose(1, 2)
            out = F.scaled_dot_product_attention(q.transpose(-1, -2), k, v, scale=scale)
            out = out.transpose(-1, -2).reshape(b, c, h, w)
        else:
            v = self.v(z, c).view(b, m, nh, c // nh).permute(0, 2, 3, 1)
            out = (v @ ((k @ q) * scale).softmax(dim=-2)).reshape(b, c, h, w)
        return self.proj(out, c) if self.proj is not None else out

    def export(self, c: int, d: int) -> dict[str, Tensor]:
        out = {**_prefixed("k", self.k.export(c, d)), **_prefixed("v", self.v.export(c, d))}
        if self.q is not None:
            out.update({**_prefixed("q", self.q.export(c, c)), **_prefixed("proj", self.proj.export(c, c))})
        return out


# ---------------------------------------------------------------------------- blocks, head


def _export_sets(module: nn.Module, sets: Sets, d: int) -> dict[str, Tensor]:
    """The state of every submodule named in ``sets`` (activations also need the token width)."""
    out: dict[str, Tensor] = {}
    for name, args in sets.items():
        sub = getattr(module, name)
        out.update(_prefixed(name, sub.export(*args, d) if isinstance(sub, SuperAct) else sub.export(*args)))
    return out


class SuperLite(nn.Module):
    """:class:`~mfsearch.models.mobile_former.LiteBlock`: depthwise (multiplier e1) + ReLU6, pointwise."""

    def __init__(self, slot: Slot) -> None:
        super().__init__()
        self.e1 = slot.e1
        self.conv1 = DynamicConvBN(slot.cin, slot.cin * slot.e1, 3, slot.stride, depthwise=True)
        self.conv2 = DynamicConvBN(slot.cin * slot.e1, slot.cout, 1)

    def sets(self, cin: int, cout: int, e1: int, device: torch.device) -> Sets:
        h = multiplier_set(cin, e1, self.e1, device)
        return {"conv1": (h, cin), "conv2": (cout, h)}

    def forward(self, x: Tensor, s: Sets, residual: bool) -> Tensor:
        y = self.conv2(F.relu6(self.conv1(x, *s["conv1"])), *s["conv2"])
        return y + x if residual else y


class SuperMobile(nn.Module):
    """:class:`~mfsearch.models.mobile_former.MobileSubBlock` (groups 1): inverted bottleneck or down block."""

    def __init__(self, cfg: MobileFormerConfig, slot: Slot, token_dim: int) -> None:
        super().__init__()
        self.down = slot.kind == "down"
        cin, cout = slot.cin, slot.cout
        if self.down:
            self.e1, self.e2 = slot.e1, slot.e2
            h1, h2 = cin * slot.e1, cout * slot.e2
            self.conv1 = DynamicConvBN(cin, h1, 3, 2, depthwise=True)
            self.act1 = SuperAct(cfg, h1, token_dim)
            self.conv2 = DynamicConvBN(h1, cout, 1)
            self.conv3 = DynamicConvBN(cout, h2, 3, 1, depthwise=True)
            self.act2 = SuperAct(cfg, h2, token_dim)
            self.conv4 = DynamicConvBN(h2, cout, 1)
        else:
            hid = slot.hidden
            self.conv1 = DynamicConvBN(cin, hid, 1)
            self.act1 = SuperAct(cfg, hid, token_dim)
            self.conv2 = DynamicConvBN(hid, hid, 3, 1, depthwise=True)
            self.act2 = SuperAct(cfg, hid, token_dim)
            self.conv3 = DynamicConvBN(hid, cout, 1)

    def sets(self, cin: int, cout: int, e1: float, e2: int, device: torch.device) -> Sets:
        if self.down:
            h1 = multiplier_set(cin, int(e1), self.e1, device)
            h2 = multiplier_set(cout, e2, self.e2, device)
            return {"conv1": (h1, cin), "act1": (h1,), "conv2": (cout, h1), "conv3": (h2, cout), "act2": (h2,),
                    "conv4": (cout, h2)}
        hid = round(cin * e1)
        return {"conv1": (hid, cin), "act1": (hid,), "conv2": (hid, hid), "act2": (hid,), "conv3": (cout, hid)}

    def forward(self, x: Tensor, z0: Tensor | None, s: Sets) -> Tensor:
        if self.down:
            u = self.conv2(self.act1(self.conv1(x, *s["conv1"]), z0, *s["act1"]), *s["conv2"])
            y = self.conv3(u, *s["conv3"])
            return self.conv4(self.act2(y, z0, *s["act2"]), *s["conv4"]) + u
        y = self.conv1(x, *s["conv1"])
        y = self.act2(self.conv2(self.act1(y, z0, *s["act1"]), *s["conv2"]), z0, *s["act2"])
        return self.conv3(y, *s["conv3"])


class SuperBlock(nn.Module):
    """:class:`~mfsearch.models.mobile_former.MobileFormerBlock`: Mobile sub-block, Former and two bridges."""

    def __init__(self, cfg: MobileFormerConfig, slot: Slot, token_dim: int) -> None:
        super().__init__()
        full = cfg.projections == "full"
        self.serial = cfg.arrangement == "serial"
        self.mobile = SuperMobile(cfg, slot, token_dim)
        c_m2f = slot.cout if self.serial else slot.cin
        self.m2f = SuperMobileToFormer(c_m2f, token_dim, cfg.gate, full) if cfg.m2f else None
        self.former = SuperFormer(token_dim, cfg.former_heads, cfg.ffn, cfg.ffn_expansion) if cfg.former else None
        self.f2m = SuperFormerToMobile(slot.cout, token_dim, full) if cfg.f2m else None

    def _tokens(self, x: Tensor, z: Tensor, heads: int) -> Tensor:
        if self.m2f is not None:
            z = self.m2f(x, z, heads)
        if self.former is not None:
            z = self.former(z)
        return z

    def forward(self, x: Tensor, z: Tensor | None, e: Entry, heads: int) -> tuple[Tensor, Tensor | None]:
        if self.serial:
            y = self.mobile(x, None if z is None else z[:, 0], e.sets)
            if e.residual:
                y = y + x
            z = self._tokens(y, z, heads) if z is not None else z
        else:
            z = self._tokens(x, z, heads) if z is not None else z
            y = self.mobile(x, None if z is None else z[:, 0], e.sets)
            if e.residual:
                y = y + x
        if self.f2m is not None:
            y = y + self.f2m(y, z, heads)
        return y, z

    def export(self, e: Entry, d: int) -> dict[str, Tensor]:
        out = _prefixed("mobile", _export_sets(self.mobile, e.sets, d))
        if self.m2f is not None:
            out.update(_prefixed("m2f", self.m2f.export(e.cout if self.serial else e.cin, d)))
        if self.former is not None:
            out.update(_prefixed("former", self.former.export(d)))
        if self.f2m is not None:
            out.update(_prefixed("f2m", self.f2m.export(e.cout, d)))
        return out


class SuperHead(nn.Module):
    """:class:`~mfsearch.models.mobile_former.Head`; the FC input is ``[pooled 6C, token 0 (d)]``."""

    def __init__(self, cfg: MobileFormerConfig, cin: int, token_dim: int, head: int, num_classes: int) -> None:
        super().__init__()
        self.expansion, self.cin = cfg.head_expansion, cin
        hid = cin * cfg.head_expansion
        self.conv = DynamicConvBN(cin, hid, 1)
        self.fc = DynamicLinear(hid + token_dim, head)
        self.bn = DynamicBN(head)
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = DynamicLinear(head, num_classes)

    def sets(self, c: int, d: int, head: int, device: torch.device) -> Sets:
        hid = c * self.expansion
        fc_in: Idx = hid
        if d:
            fc_in = torch.cat((torch.arange(hid, device=device), self.cin * self.expansion
                               + torch.arange(d, device=device)))
        return {"conv": (hid, c), "fc": (head, fc_in), "bn": (head,),
                "classifier": (self.classifier.out_features, head)}

    def forward(self, x: Tensor, z: Tensor | None, s: Sets) -> Tensor:
        x = F.relu6(self.conv(x, *s["conv"]))
        x = hswish(F.adaptive_avg_pool2d(x, 1).flatten(1))
        if z is not None:
            x = torch.cat((x, z[:, 0]), dim=1)
        x = hswish(self.bn(self.fc(x, *s["fc"]), *s["bn"]))
        return self.classifier(self.dropout(x), *s["classifier"])


# ---------------------------------------------------------------------------- the supernet


@dataclass
class Entry:
    """One block of a sub-network: its slot, widths, residual and active channel sets."""

    slot: int
    cin: int
    cout: int
    residual: bool
    sets: Sets


@dataclass
class Plan:
    """Everything ``forward`` and ``extract`` need to run one sub-network."""

    cfg: MobileFormerConfig
    stem: int
    lite: Entry
    blocks: list[Entry]
    head: Sets = field(default_factory=dict)


class Supernet(nn.Module):
    """Every architecture of ``space`` in one set of weights; ``forward(x, cfg)`` runs the sub-network ``cfg``.

    Raises :class:`~mfsearch.errors.InputError` when the space varies a field that cannot share weights.
    """

    def __init__(self, space: Space, num_classes: int = 1000) -> None:
        super().__init__()
        sk = skeleton(space, num_classes)
        self.skeleton: Skeleton = sk
        self.num_classes = num_classes
        cfg = sk.largest
        m, d = sk.num_tokens, sk.token_dim
        self.tokens = nn.Parameter(torch.randn(m, d)) if m else None
        self.stem = DynamicConvBN(3, sk.stem, 3, 2)
        self.blocks = nn.ModuleList([SuperLite(sk.lite), *(SuperBlock(cfg, s, d) for s in sk.slots)])
        final_full = cfg.final_bridge_projections == "full"
        self.final_m2f = SuperMobileToFormer(sk.last_width, d, cfg.gate, final_full) if cfg.m2f else None
        self.head = SuperHead(cfg, sk.last_width, d if m else 0, sk.head, num_classes)
        self._plans: OrderedDict[tuple, Plan] = OrderedDict()
        MobileFormer.reset_parameters(self)  # type: ignore[arg-type] - the model's initialisation, largest shapes

    @property
    def largest(self) -> MobileFormerConfig:
        return self.skeleton.largest

    @property
    def smallest(self) -> MobileFormerConfig:
        return self.skeleton.smallest

    def _config(self, cfg: MobileFormerConfig) -> MobileFormerConfig:
        return cfg if cfg.num_classes == self.num_classes else cfg.replace(num_classes=self.num_classes)

    def plan(self, cfg: MobileFormerConfig) -> Plan:
        """Slots and active channel sets of ``cfg`` (cached); ``ValueError`` if it is not a sub-network."""
        cfg = self._config(cfg)
        device = self.stem.conv.weight.device
        key = (cfg, str(device))
        if key in self._plans:
            self._plans.move_to_end(key)
            return self._plans[key]
        with torch.inference_mode(False):  # cached index sets must stay usable by autograd after an inference call
            p = self._make_plan(cfg, device)
        self._plans[key] = p
        if len(self._plans) > PLAN_CACHE:
            self._plans.popitem(last=False)
        return p

    def _make_plan(self, cfg: MobileFormerConfig, device: torch.device) -> Plan:
        check_fits(self.skeleton, cfg)
        slots = assign_slots(self.skeleton, cfg)
        widths = cfg.channels()
        b0, (ci, co) = cfg.blocks[0], widths[0]
        lite = Entry(-1, ci, co, b0.stride == 1 and ci == co, self.blocks[0].sets(ci, co, int(b0.e1), device))
        entries = []
        for s, b, (ci, co) in zip(slots, cfg.blocks[1:], widths[1:]):
            sets = self.blocks[1 + s].mobile.sets(ci, co, b.e1, b.e2, device)
            entries.append(Entry(s, ci, co, b.stride == 1 and ci == co, sets))
        head = self.head.sets(widths[-1][1], cfg.token_dim if cfg.num_tokens else 0, cfg.head, device)
        return Plan(cfg, widths[0][0], lite, entries, head)

    def forward(self, x: Tensor, cfg: MobileFormerConfig) -> Tensor:
        """Logits of the sub-network ``cfg``."""
        p = self.plan(cfg)
        c = p.cfg
        z = None
        if c.num_tokens:
            z = self.tokens[:c.num_tokens, :c.token_dim].unsqueeze(0).expand(x.shape[0], -1, -1)
        x = F.relu6(self.stem(x, p.stem, 3))
        x = self.blocks[0](x, p.lite.sets, p.lite.residual)
        for e in p.blocks:
            x, z = self.blocks[1 + e.slot](x, z, e, c.bridge_heads)
        if self.final_m2f is not None:
            z = self.final_m2f(x, z, c.bridge_heads)
        return self.head(x, z, p.head)

    def state_of(self, cfg: MobileFormerConfig) -> dict[str, Tensor]:
        """The sub-network's weights and BatchNorm statistics under :class:`MobileFormer`'s names (views)."""
        p = self.plan(cfg)
        c = p.cfg
        d = c.token_dim
        out: dict[str, Tensor] = {}
        if c.num_tokens:
            out["tokens"] = self.tokens[:c.num_tokens, :d]
        out.update(_prefixed("stem", self.stem.export(p.stem, 3)))
        out.update(_prefixed("blocks.0", _export_sets(self.blocks[0], p.lite.sets, d)))
        for i, e in enumerate(p.blocks):
            out.update(_prefixed(f"blocks.{i + 1}", self.blocks[1 + e.slot].export(e, d)))
        if self.final_m2f is not None:
            out.update(_prefixed("final_m2f", self.final_m2f.export(p.cfg.channels()[-1][1], d)))
        out.update(_prefixed("head", _export_sets(self.head, p.head, d)))
        return out

    @torch.no_grad()
    def extract(self, cfg: MobileFormerConfig) -> MobileFormer:
        """An ordinary :class:`MobileFormer` of ``cfg`` carrying a copy of the sliced weights and BN statistics."""
        cfg = self._config(cfg)
        state = {k: v.detach().clone(memory_format=torch.contiguous_format) for k, v in self.state_of(cfg).items()}
        with torch.device("meta"):
            model = MobileFormer(cfg)
        model.load_state_dict(state, strict=True, assign=True)
        return model.train(self.training)


__all__ = ["Plan", "Supernet"]
