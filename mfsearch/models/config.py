"""Typed, frozen, validated configuration of a Mobile-Former variant.

A :class:`MobileFormerConfig` fully describes an architecture: the seven paper models are
points of this space (see :mod:`mfsearch.models.presets`). Validation lives in one place
(:meth:`MobileFormerConfig.validate`) and raises :class:`ConfigError` naming the field and
the rule that was broken. ``to_dict`` / ``from_dict`` round-trip through plain data (YAML,
JSON) and ``arch_id`` is a stable hash of the architecture.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

ACTIVATIONS = ("dyrelu", "relu", "relu6", "prelu", "hswish")
BRIDGES = ("both", "mobile_to_former", "former_to_mobile", "none")
PROJECTIONS = ("light", "full")
ARRANGEMENTS = ("parallel", "serial")
BLOCK_KINDS = ("lite", "mf")

MAX_TOKENS = 12
MAX_WIDTH = 8192


class ConfigError(ValueError):
    """An impossible or malformed architecture config; ``field`` names the offending key."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def make_divisible(value: float, divisor: int) -> int:
    """Round ``value`` to the nearest multiple of ``divisor`` (never below it, never 10% down)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


@dataclass(frozen=True)
class BlockConfig:
    """One block after the stem.

    kind ``lite``: the first block (depthwise with multiplier ``e1`` + pointwise, no bridges).
    kind ``mf``: a Mobile-Former block; stride 1 uses expansion ``e1`` (hidden = round(C_in*e1)),
    stride 2 is the "down" block with depthwise multipliers ``e1`` and ``e2``.
    """

    kind: str
    out: int
    e1: float
    stride: int = 1
    e2: int = 0

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "out": self.out, "e1": self.e1, "stride": self.stride}
        if self.kind == "mf" and self.stride == 2:
            d["e2"] = self.e2
        return d

    @property
    def is_down(self) -> bool:
        return self.kind == "mf" and self.stride == 2


@dataclass(frozen=True)
class MobileFormerConfig:
    """Everything that defines a Mobile-Former architecture (docs/architecture.md §2, §3 and §5).

    The knobs beyond widths and depths (defaults are the paper models):

    - ``activation``: of the Mobile sub-block; ``dyrelu`` (paper), ``relu``, ``relu6`` (the paper's
      "no DY-ReLU" ablation), ``prelu``, ``hswish``.
    - ``bridges``: which cross-attention bridges exist: ``both``, ``mobile_to_former``,
      ``former_to_mobile`` or ``none``; ``bridge_heads`` splits the block widths between heads.
    - ``projections``: ``light`` (paper: the feature map is key and value of Mobile->Former and the
      query of Former->Mobile as it is) or ``full`` (bias-free 1x1 convs on the feature side: key and
      value in Mobile->Former, query and an output conv in Former->Mobile), inside the blocks.
    - ``final_bridge_projections``: the same choice for the Mobile->Former bridge after the last
      block. ``light`` whatever ``projections`` says, as in the authors' implementation; ``full``
      gives it the two 1x1 convs (what ``projections: full`` built before this knob existed).
    - ``gate``: the Mobile->Former dynamic gate (on in the paper models, in every block and on the
      final bridge): the attention result over the pixels is multiplied elementwise by
      ``2 * hsigmoid(Linear(d -> C)(Z))`` of the tokens entering the bridge, before the output
      projection.
    - ``former_gate``: the Former's dynamic gate (off in the paper models): the merged attention
      output of the tokens is multiplied elementwise by ``2 * hsigmoid(Linear(d -> d)(Z))`` of the
      tokens entering the Former, before its output projection.
    - ``f2m_gate``: the Former->Mobile dynamic gate (off in the paper models): the value vectors of the
      tokens, ``Linear(d -> C_out)(Z')``, are multiplied elementwise by ``2 * hsigmoid(Linear(d -> C_out)(Z'))``
      before the pixels attend over them.
    - ``former``, ``ffn``, ``former_heads``, ``ffn_expansion``: the token transformer layer.
    - ``arrangement``: ``parallel`` (paper) or ``serial`` (Mobile sub-block first, the bridges read
      its output).
    - ``groups``: grouped pointwise convs with channel shuffles (4 in the 26M model).

    Fields added after :data:`ID_FIELDS` enter :attr:`arch_id` only when they change the
    architecture that earlier versions built, so stored ids stay valid.
    """

    stem: int
    blocks: tuple[BlockConfig, ...]
    head: int
    num_tokens: int = 6
    token_dim: int = 192
    num_classes: int = 1000
    dropout: float = 0.0
    activation: str = "dyrelu"
    bridges: str = "both"
    projections: str = "light"
    final_bridge_projections: str = "light"
    bridge_heads: int = 2
    gate: bool = True
    former_gate: bool = False
    f2m_gate: bool = False
    former: bool = True
    ffn: bool = True
    former_heads: int = 4
    ffn_expansion: int = 2
    arrangement: str = "parallel"
    groups: int = 1
    width_mult: float = 1.0
    dyrelu_reduction: int = 4
    head_expansion: int = 6
    name: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ derived values
    @property
    def m2f(self) -> bool:
        """Whether Mobile->Former bridges exist (inside blocks and after the last block)."""
        return self.bridges in ("both", "mobile_to_former")

    @property
    def f2m(self) -> bool:
        return self.bridges in ("both", "former_to_mobile")

    @property
    def uses_tokens(self) -> bool:
        return self.num_tokens > 0

    def width(self, c: int) -> int:
        """A nominal width scaled by ``width_mult`` (identity at 1.0)."""
        if self.width_mult == 1.0:
            return c
        return make_divisible(c * self.width_mult, max(4, self.groups, self.bridge_heads))

    def channels(self) -> list[tuple[int, int]]:
        """(C_in, C_out) of every block after width scaling."""
        out = []
        c = self.width(self.stem)
        for b in self.blocks:
            co = self.width(b.out)
            out.append((c, co))
            c = co
        return out

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise :class:`ConfigError` (field, rule) for any config that cannot be built."""
        _check_int("stem", self.stem, 1, MAX_WIDTH)
        _check_int("head", self.head, 1, 1 << 16)
        _check_int("num_tokens", self.num_tokens, 0, MAX_TOKENS)
        _check_int("token_dim", self.token_dim, 1, 4096)
        _check_int("num_classes", self.num_classes, 1, 1 << 20)
        _check_int("bridge_heads", self.bridge_heads, 1, 64)
        _check_int("former_heads", self.former_heads, 1, 64)
        _check_int("ffn_expansion", self.ffn_expansion, 1, 16)
        _check_int("groups", self.groups, 1, 64)
        _check_int("dyrelu_reduction", self.dyrelu_reduction, 1, 4096)
        _check_int("head_expansion", self.head_expansion, 1, 64)
        if not _is_num(self.dropout) or not 0.0 <= self.dropout < 1.0:
            raise ConfigError("dropout", f"must be a number in [0, 1), got {self.dropout!r}")
        if not _is_num(self.width_mult) or not 0.05 <= self.width_mult <= 8.0:
            raise ConfigError("width_mult", f"must be a number in [0.05, 8], got {self.width_mult!r}")
        for fname, choices in (
            ("activation", ACTIVATIONS),
            ("bridges", BRIDGES),
            ("projections", PROJECTIONS),
            ("final_bridge_projections", PROJECTIONS),
            ("arrangement", ARRANGEMENTS),
        ):
            v = getattr(self, fname)
            if v not in choices:
                raise ConfigError(fname, f"unknown value {v!r}; choose one of {', '.join(choices)}")
        for fname in ("gate", "former_gate", "f2m_gate", "former", "ffn"):
            if not isinstance(getattr(self, fname), bool):
                raise ConfigError(fname, f"must be true or false, got {getattr(self, fname)!r}")
        if not isinstance(self.blocks, tuple) or not self.blocks:
            raise ConfigError("blocks", "needs at least one block")
        m, d = self.num_tokens, self.token_dim
        if m == 0:
            if self.bridges != "none":
                raise ConfigError("num_tokens", "is 0 but bridges are on; set bridges: none or num_tokens >= 1")
            if self.former:
                raise ConfigError("num_tokens", "is 0 but the Former is on; set former: false or num_tokens >= 1")
            if self.activation == "dyrelu":
                raise ConfigError("num_tokens", "is 0 but activation dyrelu reads token 0; use another activation")
        else:
            if self.former and d % self.former_heads:
                raise ConfigError("token_dim", f"{d} is not divisible by former_heads={self.former_heads}")
            if self.activation == "dyrelu" and d < self.dyrelu_reduction:
                raise ConfigError("token_dim", f"{d} is smaller than dyrelu_reduction={self.dyrelu_reduction}")
        for i, b in enumerate(self.blocks):
            self._validate_block(i, b)
        if self.blocks[0].kind != "lite":
            raise ConfigError("blocks[0].kind", "the first block must be 'lite'")
        g, h = self.groups, self.bridge_heads
        c_stem = self.width(self.stem)
        if g > 1 and c_stem % g:
            raise ConfigError("stem", f"width {c_stem} is not divisible by groups={g}")
        for i, (b, (ci, co)) in enumerate(zip(self.blocks, self.channels())):
            f = f"blocks[{i}].out"
            if g > 1 and co % g:
                raise ConfigError(f, f"width {co} is not divisible by groups={g}")
            if b.kind == "lite":
                if g > 1 and (ci * int(b.e1)) % g:
                    raise ConfigError(f"blocks[{i}].e1", f"hidden width {ci * int(b.e1)} not divisible by groups={g}")
                continue
            if b.stride == 1:
                hidden = round(ci * b.e1)
                if hidden < 1:
                    raise ConfigError(f"blocks[{i}].e1", f"hidden width round({ci}*{b.e1}) must be >= 1")
                if g > 1 and hidden % g:
                    raise ConfigError(f"blocks[{i}].e1", f"hidden width {hidden} not divisible by groups={g}")
            else:
                if g > 1 and (ci * int(b.e1)) % g:
                    raise ConfigError(f"blocks[{i}].e1", f"hidden width {ci * int(b.e1)} not divisible by groups={g}")
                if g > 1 and (co * b.e2) % g:
                    raise ConfigError(f"blocks[{i}].e2", f"hidden width {co * b.e2} not divisible by groups={g}")
            if self.bridges != "none":
                c_m2f = co if self.arrangement == "serial" else ci
                if self.m2f and c_m2f % h:
                    raise ConfigError("bridge_heads", f"{h} does not divide the width {c_m2f} of block {i}")
                if self.f2m and co % h:
                    raise ConfigError("bridge_heads", f"{h} does not divide the width {co} of block {i}")
        c_last = self.channels()[-1][1]
        if self.m2f and c_last % h:
            raise ConfigError("bridge_heads", f"{h} does not divide the last width {c_last}")

    @staticmethod
    def _validate_block(i: int, b: BlockConfig) -> None:
        p = f"blocks[{i}]"
        if not isinstance(b, BlockConfig):
            raise ConfigError(p, "must be a mapping with kind, out, e1, stride[, e2]")
        if b.kind not in BLOCK_KINDS:
            raise ConfigError(f"{p}.kind", f"unknown value {b.kind!r}; choose one of {', '.join(BLOCK_KINDS)}")
        if i > 0 and b.kind == "lite":
            raise ConfigError(f"{p}.kind", "only the first block may be 'lite'")
        _check_int(f"{p}.out", b.out, 1, MAX_WIDTH)
        if not _is_int(b.stride) or b.stride not in (1, 2):
            raise ConfigError(f"{p}.stride", f"must be 1 or 2, got {b.stride!r}")
        if b.kind == "lite" or b.stride == 2:
            if not _is_int(b.e1) or not 1 <= b.e1 <= 16:
                raise ConfigError(f"{p}.e1", f"depthwise multiplier must be an integer in [1, 16], got {b.e1!r}")
        elif not _is_num(b.e1) or not 0 < b.e1 <= 16:
            raise ConfigError(f"{p}.e1", f"expansion must be a number in (0, 16], got {b.e1!r}")
        if b.is_down:
            if not _is_int(b.e2) or not 1 <= b.e2 <= 16:
                raise ConfigError(f"{p}.e2", f"depthwise multiplier must be an integer in [1, 16], got {b.e2!r}")
        elif b.e2 not in (0, None):
            raise ConfigError(f"{p}.e2", "only stride-2 'mf' blocks take e2")

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain data (YAML/JSON ready); ``from_dict(to_dict())`` gives an equal config."""
        d: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "name":
                continue
            v = getattr(self, f.name)
            d[f.name] = [b.to_dict() for b in v] if f.name == "blocks" else v
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, name: str = "") -> MobileFormerConfig:
        """Build from plain data; unknown keys and wrong types raise :class:`ConfigError`."""
        if not isinstance(data, Mapping):
            raise ConfigError("config", f"must be a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)} - {"name"}
        unknown = sorted(set(map(str, data)) - known)
        if unknown:
            raise ConfigError(unknown[0], f"unknown key; known keys are {', '.join(sorted(known))}")
        for req in ("stem", "blocks", "head"):
            if req not in data:
                raise ConfigError(req, "is required")
        raw_blocks = data["blocks"]
        if not isinstance(raw_blocks, (list, tuple)) or not raw_blocks:
            raise ConfigError("blocks", "must be a non-empty list of blocks")
        blocks = tuple(_block_from_dict(i, b) for i, b in enumerate(raw_blocks))
        kwargs = {k: v for k, v in data.items() if k != "blocks"}
        return cls(blocks=blocks, name=name, **kwargs)

    def replace(self, **changes: Any) -> MobileFormerConfig:
        """A copy with some fields changed (validated again)."""
        if "blocks" in changes:
            changes["blocks"] = tuple(
                b if isinstance(b, BlockConfig) else _block_from_dict(i, b) for i, b in enumerate(changes["blocks"])
            )
        return dataclasses.replace(self, **changes)

    @property
    def arch_id(self) -> str:
        """Stable 16-hex-digit hash of the architecture (``num_classes`` and ``name`` excluded).

        Every field of :data:`ID_FIELDS` is hashed; a field added later is hashed only when its value
        differs from the one that reproduces what earlier versions built (its default, as a rule), so
        adding a knob keeps every stored id and the architecture it names.
        """
        d = self.to_dict()
        canon = {k: d[k] for k in ID_FIELDS}
        for f in dataclasses.fields(self):
            if f.name in ID_FIELDS or f.name in _NOT_ARCHITECTURE:
                continue
            if d[f.name] != self._legacy_value(f):
                canon[f.name] = d[f.name]
        text = json.dumps(_canon(canon), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def _legacy_value(self, f: dataclasses.Field) -> Any:
        """The value of a field added after :data:`ID_FIELDS` that builds what earlier versions built."""
        if f.name == "final_bridge_projections":
            return self.projections  # the final bridge used to follow ``projections``
        return f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]

    def summary(self) -> str:
        """A short one-line description (for progress lines)."""
        widths = "-".join(str(co) for _, co in self.channels())
        return (
            f"M{self.num_tokens}xd{self.token_dim} stem{self.width(self.stem)} [{widths}] F{self.head} "
            f"{self.activation} {self.bridges}/{self.projections}/h{self.bridge_heads} {self.arrangement}"
        )


#: The fields :attr:`MobileFormerConfig.arch_id` has always hashed, whatever their value. Frozen: a
#: field added later is hashed only away from its legacy value (see ``_legacy_value``).
ID_FIELDS = (
    "stem", "blocks", "head", "num_tokens", "token_dim", "dropout", "activation", "bridges", "projections",
    "bridge_heads", "gate", "former", "ffn", "former_heads", "ffn_expansion", "arrangement", "groups",
    "width_mult", "dyrelu_reduction", "head_expansion",
)
_NOT_ARCHITECTURE = ("num_classes", "name")


def _canon(v: Any) -> Any:
    """Canonical form for hashing: floats that are whole become ints (6.0 == 6)."""
    if isinstance(v, dict):
        return {k: _canon(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_canon(x) for x in v]
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def _check_int(name: str, v: Any, lo: int, hi: int) -> None:
    if not _is_int(v):
        raise ConfigError(name, f"must be an integer, got {v!r}")
    if not lo <= v <= hi:
        raise ConfigError(name, f"must be in [{lo}, {hi}], got {v}")


def _block_from_dict(i: int, b: Any) -> BlockConfig:
    p = f"blocks[{i}]"
    if isinstance(b, BlockConfig):
        return b
    if not isinstance(b, Mapping):
        raise ConfigError(p, f"must be a mapping with kind, out, e1, stride[, e2], got {type(b).__name__}")
    known = {"kind", "out", "e1", "stride", "e2"}
    unknown = sorted(set(map(str, b)) - known)
    if unknown:
        raise ConfigError(f"{p}.{unknown[0]}", f"unknown key; known keys are {', '.join(sorted(known))}")
    for req in ("kind", "out", "e1"):
        if req not in b:
            raise ConfigError(f"{p}.{req}", "is required")
    e1 = b["e1"]
    if isinstance(e1, float) and e1.is_integer() and (b["kind"] == "lite" or b.get("stride", 1) == 2):
        e1 = int(e1)
    return BlockConfig(kind=b["kind"], out=b["out"], e1=e1, stride=b.get("stride", 1), e2=b.get("e2", 0) or 0)


def lite(cin_unused: int, out: int, e1: int, stride: int) -> BlockConfig:
    """``lite(in->out, e1, s)`` of docs/architecture.md §3 (the input width is implied by the chain)."""
    return BlockConfig("lite", out, e1, stride)


def mf(cin_unused: int, out: int, e1: float) -> BlockConfig:
    """``mf(in->out, e1)``: a stride-1 Mobile-Former block."""
    return BlockConfig("mf", out, e1, 1)


def down(cin_unused: int, out: int, e1: int, e2: int) -> BlockConfig:
    """``down(in->out, e1, e2)``: a stride-2 Mobile-Former block."""
    return BlockConfig("mf", out, e1, 2, e2)
