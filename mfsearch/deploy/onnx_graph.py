"""ONNX graphs of Mobile-Former models and of their parts, written directly from the modules.

Why not ``torch.onnx.export``: torch 2.13 offers two exporters. The TorchScript-based one
(``dynamo=False``) is deprecated and warns on every call. The ``torch.export``-based one (the
default, needs ``onnxscript``) traces, decomposes and translates the whole program: 8-25 s for
Mobile-Former-294M on this 2-core CPU, against 2-2.5 s for the frozen TorchScript it would replace
in latency measurement, and a latency table needs hundreds of small graphs. This module emits
the graph from the module tree instead (one ONNX node per plain op, in the order of each module's
``forward``): 294M takes about 0.1 s. What guards it is a test holding ONNX Runtime's output equal
to eager PyTorch within 1e-4 for the seven presets and a seeded sample covering every config knob.

The graph is the inference form: eval mode, BatchNorm folded into the convolutions (and the
head's BatchNorm1d into its Linear), dropout gone, plain ops only (none of the fast paths of
:mod:`mfsearch.models.mobile_former`), default ONNX domain only, NCHW. Opsets 17 (the first
with ``LayerNormalization``) to the newest the installed ``onnx`` knows; GELU is the ``Gelu``
op from opset 20 and ``x * 0.5 * (1 + erf(x / sqrt 2))`` before.

A module type the emitter does not know raises :class:`ExportError` naming it: a new layer in
the model family needs its emitter here (and the equality test shows whether it is right).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..models.config import MobileFormerConfig
from ..models.mobile_former import (
    ConvBN,
    DyReLU,
    Former,
    FormerToMobile,
    Head,
    LiteBlock,
    MobileFormer,
    MobileFormerBlock,
    MobileSubBlock,
    MobileToFormer,
    StaticAct,
)

MIN_OPSET = 17  # LayerNormalization
DEFAULT_OPSET = 17
INPUT, OUTPUT = "input", "logits"


class ExportError(ValueError):
    """A model or setting that cannot be written as ONNX; the message names the field and what to do."""


def max_opset() -> int:
    import onnx

    return int(onnx.defs.onnx_opset_version())


def check_opset(opset: int) -> int:
    """``opset`` if this exporter can write it, else :class:`ExportError` naming ``--opset``."""
    hi = max_opset()
    if not isinstance(opset, int) or isinstance(opset, bool) or not MIN_OPSET <= opset <= hi:
        raise ExportError(f"--opset: must be an integer in [{MIN_OPSET}, {hi}] (the installed onnx), got {opset!r}")
    return opset


def _f32(t: torch.Tensor | np.ndarray) -> np.ndarray:
    a = t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else t
    return np.ascontiguousarray(a, dtype=np.float32)


class Graph:
    """A growing ONNX graph: nodes in order, initializers, scalar constants shared by value."""

    def __init__(self, opset: int) -> None:
        from onnx import TensorProto, helper

        self.opset = opset
        self.helper, self.TensorProto = helper, TensorProto
        self.nodes: list = []
        self.inits: list = []
        self._consts: dict[tuple, str] = {}
        self._n = 0

    def _name(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def init(self, array: np.ndarray, hint: str) -> str:
        """An initializer (float32 or int64) holding ``array``; returns its name."""
        name = self._name(hint)
        a = np.asarray(array)  # (not ascontiguousarray: it makes a 0-d index 1-d)
        dtype = self.TensorProto.INT64 if a.dtype == np.int64 else self.TensorProto.FLOAT
        if dtype == self.TensorProto.FLOAT:
            a = a.astype(np.float32, copy=False)
        t = self.TensorProto()
        t.name, t.data_type = name, dtype
        t.dims.extend(a.shape)
        t.raw_data = a.tobytes(order="C")
        self.inits.append(t)
        return name

    def const(self, value: float | Sequence[int]) -> str:
        """A float scalar or an int64 vector (shapes, indices), shared by every node that uses it."""
        if isinstance(value, (list, tuple)):
            key: tuple = ("i", tuple(int(v) for v in value))
            if key not in self._consts:
                self._consts[key] = self.init(np.array(key[1], dtype=np.int64), "shape")
        else:
            key = ("f", float(value))
            if key not in self._consts:
                self._consts[key] = self.init(np.array(value, dtype=np.float32), "c")
        return self._consts[key]

    def index(self, i: int) -> str:
        """An int64 scalar index (``Gather`` with a scalar index drops the axis, like ``t[:, i]``)."""
        key = ("s", i)
        if key not in self._consts:
            self._consts[key] = self.init(np.array(i, dtype=np.int64), "idx")
        return self._consts[key]

    def op(self, op_type: str, inputs: Sequence[str], out: str | None = None, **attrs: object) -> str:
        out = out or self._name(op_type.lower())
        self.nodes.append(self.helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out

    # ------------------------------------------------------------------ small layers
    def conv(self, conv: nn.Conv2d, x: str, scale: np.ndarray | None = None, shift: np.ndarray | None = None) -> str:
        """``conv(x)``; ``scale``/``shift`` fold a following per-channel affine (BatchNorm) into it."""
        w = _f32(conv.weight)
        b = _f32(conv.bias) if conv.bias is not None else None
        if scale is not None:
            w = w * scale.reshape(-1, 1, 1, 1)
            b = (b if b is not None else np.zeros_like(scale)) * scale + shift
        ins = [x, self.init(w, "conv_w")] + ([self.init(b, "conv_b")] if b is not None else [])
        k, s, p = conv.kernel_size, conv.stride, conv.padding
        return self.op("Conv", ins, kernel_shape=list(k), strides=list(s), pads=[p[0], p[1], p[0], p[1]],
                       group=conv.groups, dilations=list(conv.dilation))

    def conv_bn(self, cb: ConvBN, x: str) -> str:
        bn = cb.bn
        if isinstance(bn, nn.BatchNorm2d):  # eval-mode statistics, as ``fold_batchnorm`` does
            scale = _f32(bn.weight) / np.sqrt(_f32(bn.running_var) + np.float32(bn.eps))
            return self.conv(cb.conv, x, scale, _f32(bn.bias) - _f32(bn.running_mean) * scale)
        if not isinstance(bn, nn.Identity):
            raise ExportError(f"ConvBN.bn: cannot export a {type(bn).__name__}; expected BatchNorm2d or Identity")
        return self.conv(cb.conv, x)

    def linear(self, lin: nn.Linear, x: str, rank: int, out: str | None = None) -> str:
        """``lin(x)`` on a (B, in) tensor (``Gemm``) or a (B, M, in) one (``MatMul`` + ``Add``)."""
        if rank == 2:
            return self.op("Gemm", [x, self.init(_f32(lin.weight), "fc_w"), self.init(_f32(lin.bias), "fc_b")],
                           out=out, transB=1)
        y = self.op("MatMul", [x, self.init(_f32(lin.weight).T, "fc_wt")])
        return self.op("Add", [y, self.init(_f32(lin.bias), "fc_b")])

    def relu6(self, x: str) -> str:
        return self.op("Clip", [x, self.const(0.0), self.const(6.0)])

    def hsigmoid(self, x: str) -> str:
        return self.op("Div", [self.relu6(self.op("Add", [x, self.const(3.0)])), self.const(6.0)])

    def hswish(self, x: str) -> str:
        return self.op("Mul", [x, self.hsigmoid(x)])

    def gelu(self, x: str) -> str:
        if self.opset >= 20:
            return self.op("Gelu", [x])
        e = self.op("Erf", [self.op("Div", [x, self.const(math.sqrt(2.0))])])
        return self.op("Mul", [self.op("Mul", [x, self.const(0.5)]), self.op("Add", [e, self.const(1.0)])])

    def layernorm(self, ln: nn.LayerNorm, x: str) -> str:
        return self.op("LayerNormalization", [x, self.init(_f32(ln.weight), "ln_w"), self.init(_f32(ln.bias), "ln_b")],
                       axis=-1, epsilon=float(ln.eps))

    def reshape(self, x: str, shape: Sequence[int] | str) -> str:
        return self.op("Reshape", [x, shape if isinstance(shape, str) else self.const(shape)])

    def transpose(self, x: str, perm: Sequence[int]) -> str:
        return self.op("Transpose", [x], perm=list(perm))

    def shuffle(self, x: str, groups: int, channels: int) -> str:
        """``channel_shuffle``: (B, G, C/G, HW) with dims 1 and 2 swapped, back to the input's shape."""
        y = self.transpose(self.reshape(x, [0, groups, channels // groups, -1]), [0, 2, 1, 3])
        return self.reshape(y, self.op("Shape", [x]))

    def token0(self, z: str) -> str:
        return self.op("Gather", [z, self.index(0)], axis=1)

    # ------------------------------------------------------------------ activations, bridges, Former
    def act(self, act: nn.Module, x: str, z0: str | None, channels: int) -> str:
        if isinstance(act, DyReLU):
            if z0 is None:
                raise ExportError("activation: dyrelu needs tokens (num_tokens >= 1)")
            h = self.hsigmoid(self.linear(act.fc2, self.op("Relu", [self.linear(act.fc1, z0, 2)]), 2))
            h = self.reshape(h, [0, 2, act.channels, 1, 1])
            half = self.const(0.5)
            a1 = self.op("Add", [self.op("Mul", [self.op("Sub", [self.op("Gather", [h, self.index(0)], axis=1), half]),
                                                 self.const(2.0)]), self.const(1.0)])
            a2 = self.op("Mul", [self.op("Sub", [self.op("Gather", [h, self.index(1)], axis=1), half]),
                                 self.const(2.0)])
            return self.op("Max", [self.op("Mul", [x, a1]), self.op("Mul", [x, a2])])
        if isinstance(act, StaticAct):
            if act.name == "relu":
                return self.op("Relu", [x])
            if act.name == "relu6":
                return self.relu6(x)
            if act.name == "hswish":
                return self.hswish(x)
            if act.name == "prelu":
                slope = _f32(act.prelu.weight)
                slope = np.broadcast_to(slope, (channels,)) if slope.size == 1 else slope
                return self.op("PRelu", [x, self.init(slope.reshape(-1, 1, 1), "prelu_slope")])
            raise ExportError(f"activation: cannot export {act.name!r}")
        raise ExportError(f"activation: cannot export a {type(act).__name__}")

    def m2f(self, mod: MobileToFormer, x: str, z: str, c: int, m: int, d: int) -> str:
        """Tokens attend over the pixels (see :class:`MobileToFormer`); returns the new tokens."""
        nh = mod.heads
        k = self.conv(mod.k, x) if mod.k is not None else x
        v = self.conv(mod.v, x) if mod.v is not None else x
        k = self.reshape(k, [0, nh, c // nh, -1])
        v = self.reshape(v, [0, nh, c // nh, -1])
        q = self.transpose(self.reshape(self.linear(mod.q, z, 3), [0, m, nh, c // nh]), [0, 2, 1, 3])
        scores = self.op("Mul", [self.op("MatMul", [q, k]), self.const(mod.scale)])
        attn = self.op("Softmax", [scores], axis=-1)
        out = self.op("MatMul", [attn, self.transpose(v, [0, 1, 3, 2])])
        out = self.reshape(self.transpose(out, [0, 2, 1, 3]), [0, m, c])
        if mod.gate is not None:
            out = self.op("Mul", [out, self.op("Mul", [self.const(2.0), self.hsigmoid(self.linear(mod.gate, z, 3))])])
        return self.layernorm(mod.norm, self.op("Add", [z, self.linear(mod.proj, out, 3)]))

    def former(self, mod: Former, z: str, m: int, d: int) -> str:
        nh = mod.heads
        kv = self.transpose(self.reshape(z, [0, m, nh, d // nh]), [0, 2, 1, 3])
        q = self.transpose(self.reshape(self.linear(mod.q, z, 3), [0, m, nh, d // nh]), [0, 2, 1, 3])
        scores = self.op("Mul", [self.op("MatMul", [q, self.transpose(kv, [0, 1, 3, 2])]), self.const(mod.scale)])
        out = self.op("MatMul", [self.op("Softmax", [scores], axis=-1), kv])
        out = self.reshape(self.transpose(out, [0, 2, 1, 3]), [0, m, d])
        if mod.gate is not None:  # the Former gate reads the layer's input tokens
            out = self.op("Mul", [out, self.op("Mul", [self.const(2.0), self.hsigmoid(self.linear(mod.gate, z, 3))])])
        z = self.layernorm(mod.norm1, self.op("Add", [z, self.linear(mod.proj, out, 3)]))
        if mod.ffn:
            hidden = self.gelu(self.linear(mod.fc1, z, 3))
            z = self.layernorm(mod.norm2, self.op("Add", [z, self.linear(mod.fc2, hidden, 3)]))
        return z

    def f2m(self, mod: FormerToMobile, x: str, z: str, c: int, m: int) -> str:
        """Pixels attend over the tokens (see :class:`FormerToMobile`); returns what is added to ``x``."""
        nh = mod.heads
        q = self.reshape(self.conv(mod.q, x) if mod.q is not None else x, [0, nh, c // nh, -1])
        k = self.transpose(self.reshape(self.linear(mod.k, z, 3), [0, m, nh, c // nh]), [0, 2, 1, 3])
        v = self.linear(mod.v, z, 3)
        if mod.gate is not None:  # the Former->Mobile gate scales the token values
            v = self.op("Mul", [v, self.op("Mul", [self.const(2.0), self.hsigmoid(self.linear(mod.gate, z, 3))])])
        v = self.transpose(self.reshape(v, [0, m, nh, c // nh]), [0, 2, 3, 1])
        scores = self.op("Mul", [self.op("MatMul", [k, q]), self.const(mod.scale)])
        out = self.op("MatMul", [v, self.op("Softmax", [scores], axis=-2)])
        out = self.reshape(out, self.op("Shape", [x]))
        return self.conv(mod.proj, out) if mod.proj is not None else out

    # ------------------------------------------------------------------ blocks, head
    def stem(self, stem: ConvBN, x: str) -> str:
        return self.relu6(self.conv_bn(stem, x))

    def lite(self, blk: LiteBlock, x: str, cin: int) -> str:
        y = self.relu6(self.conv_bn(blk.conv1, x))
        if blk.shuffle:
            y = self.shuffle(y, blk.shuffle, blk.conv1.conv.out_channels)
        y = self.conv_bn(blk.conv2, y)
        return self.op("Add", [y, x]) if blk.residual else y

    def mobile(self, mod: MobileSubBlock, x: str, z0: str | None) -> str:
        s1, s2 = mod.shuffles
        if mod.down:
            y = self.conv_bn(mod.conv1, x)
            if s1:
                y = self.shuffle(y, s1, mod.conv1.conv.out_channels)
            u = self.conv_bn(mod.conv2, self.act(mod.act1, y, z0, mod.conv1.conv.out_channels))
            y = self.conv_bn(mod.conv3, u)
            if s2:
                y = self.shuffle(y, s2, mod.conv3.conv.out_channels)
            y = self.conv_bn(mod.conv4, self.act(mod.act2, y, z0, mod.conv3.conv.out_channels))
            return self.op("Add", [y, u])
        hid = mod.conv1.conv.out_channels
        y = self.conv_bn(mod.conv1, x)
        if s1:
            y = self.shuffle(y, s1, hid)
        y = self.act(mod.act2, self.conv_bn(mod.conv2, self.act(mod.act1, y, z0, hid)), z0, hid)
        y = self.conv_bn(mod.conv3, y)
        if s2:
            y = self.shuffle(y, s2, mod.conv3.conv.out_channels)
        return y

    def mf_block(self, blk: MobileFormerBlock, x: str, z: str | None, cin: int, cout: int,
                 m: int, d: int) -> tuple[str, str | None]:
        def tokens(feat: str, c: int, z: str) -> str:
            if blk.m2f is not None:
                z = self.m2f(blk.m2f, feat, z, c, m, d)
            if blk.former is not None:
                z = self.former(blk.former, z, m, d)
            return z

        if blk.serial:
            y = self.mobile(blk.mobile, x, self.token0(z) if blk.uses_tokens else None)
            if blk.residual:
                y = self.op("Add", [y, x])
            if z is not None:
                z = tokens(y, cout, z)
        else:
            if z is not None:
                z = tokens(x, cin, z)
            y = self.mobile(blk.mobile, x, self.token0(z) if blk.uses_tokens else None)
            if blk.residual:
                y = self.op("Add", [y, x])
        if blk.f2m is not None:
            y = self.op("Add", [y, self.f2m(blk.f2m, y, z, cout, m)])
        return y, z

    def tail(self, final_m2f: MobileToFormer | None, head: Head, cfg: MobileFormerConfig, c: int, x: str,
             z: str | None, batch: int | None) -> str:
        """The Mobile->Former bridge after the last block (``c`` channels), then the head: the logits."""
        if final_m2f is not None:
            z = self.m2f(final_m2f, x, z, c, cfg.num_tokens, cfg.token_dim)
        if head.shuffle:
            x = self.shuffle(x, head.shuffle, c)
        x = self.relu6(self.conv_bn(head.conv, x))
        x = self.hswish(self.op("Flatten", [self.op("GlobalAveragePool", [x])], axis=1))
        if z is not None:
            z0 = self.token0(z)
            if batch != 1:  # the token table has batch 1 until a bridge mixes in the image: broadcast it
                z0 = self.op("Expand", [z0, self.op("Concat", [self.op("Shape", [x], start=0, end=1),
                                                               self.const([1])], axis=0)])
            x = self.op("Concat", [x, z0], axis=1)
        bn = head.bn  # BatchNorm1d (eval) folded into the Linear before it
        scale = _f32(bn.weight) / np.sqrt(_f32(bn.running_var) + np.float32(bn.eps))
        w = _f32(head.fc.weight) * scale[:, None]
        b = (_f32(head.fc.bias) - _f32(bn.running_mean)) * scale + _f32(bn.bias)
        x = self.op("Gemm", [x, self.init(w, "fc_w"), self.init(b, "fc_b")], transB=1)
        x = self.hswish(x)
        return self.linear(head.classifier, x, 2, out=OUTPUT)

    # ------------------------------------------------------------------ finishing
    def value_info(self, name: str, shape: Sequence[int | str] | None) -> object:
        """A float tensor's declaration; ``shape=None`` leaves the shape to the runtime's inference."""
        return self.helper.make_tensor_value_info(name, self.TensorProto.FLOAT, None if shape is None else list(shape))

    def model(self, inputs: list, outputs: list, graph_name: str, doc: str = "") -> object:
        """The :class:`onnx.ModelProto` (IR version: the lowest that holds the opset, for older runtimes)."""
        from onnx import helper

        g = helper.make_graph(self.nodes, graph_name, inputs, outputs, initializer=self.inits)
        opsets = [helper.make_opsetid("", self.opset)]
        ir = helper.find_min_ir_version_for(opsets)
        model = helper.make_model(g, opset_imports=opsets, ir_version=max(ir, 8), producer_name="mfsearch",
                                  doc_string=doc)
        return model


def _check_model(model: MobileFormer) -> None:
    if not isinstance(model, MobileFormer):
        raise ExportError(f"model: expected a MobileFormer, got {type(model).__name__}")
    if model.features_only or model.head is None:
        raise ExportError("model: built with features_only=True (no head); export the classifier model")
    for mod in model.modules():
        known = (MobileFormer, ConvBN, LiteBlock, MobileFormerBlock, MobileSubBlock, MobileToFormer, Former,
                 FormerToMobile, Head, DyReLU, StaticAct, nn.Conv2d, nn.BatchNorm2d, nn.BatchNorm1d, nn.Identity,
                 nn.Linear, nn.LayerNorm, nn.Dropout, nn.PReLU, nn.ModuleList)
        if not isinstance(mod, known):
            raise ExportError(f"model: no ONNX emitter for {type(mod).__name__}; "
                              "add one to mfsearch/deploy/onnx_graph.py")


def model_proto(model: MobileFormer, input_size: int = 224, opset: int = DEFAULT_OPSET,
                batch: int | None = 1) -> object:
    """The ONNX model of ``model`` in inference form: input ``input`` (B, 3, S, S), output ``logits``.

    ``batch=None`` makes the batch dimension symbolic (``"batch"``); the spatial size is fixed.
    ``model`` is read, never changed (BatchNorm is folded on the way out).
    """
    check_opset(opset)
    _check_model(model)
    cfg = model.cfg
    g = Graph(opset)
    z = g.init(_f32(model.tokens).reshape(1, cfg.num_tokens, cfg.token_dim), "tokens") if model.tokens is not None \
        else None
    x = g.stem(model.stem, INPUT)
    for blk, (ci, co) in zip(model.blocks, cfg.channels()):
        if isinstance(blk, LiteBlock):
            x = g.lite(blk, x, ci)
        else:
            x, z = g.mf_block(blk, x, z, ci, co, cfg.num_tokens, cfg.token_dim)
    logits = g.tail(model.final_m2f, model.head, cfg, model.num_features, x, z, batch)
    b = "batch" if batch is None else batch
    doc = f"{cfg.name or 'mobile_former'} arch_id {cfg.arch_id}, inference form (BatchNorm folded), opset {opset}"
    return g.model([g.value_info(INPUT, [b, 3, input_size, input_size])],
                   [g.value_info(logits, [b, cfg.num_classes])], cfg.name or "mobile_former", doc)
