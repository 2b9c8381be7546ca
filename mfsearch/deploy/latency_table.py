"""A latency lookup table for one machine, and a predictor that sums it: latency as cheap as MACs.

Once-for-All style: the model is cut into units whose cost depends only on their own key, each
unit is measured once on this machine, and a config's latency is the sum of its units' entries.
The units are the stem, the lite block, every Mobile-Former block (a whole block is one unit: its
bridges and Former run inside it, and a block is keyed by everything that sets its cost: kind,
input resolution, input / hidden / output widths, tokens, and the global knobs that change its
ops), and the tail (the last Mobile->Former bridge plus the head). Each unit is a small ONNX
graph from :mod:`mfsearch.deploy.onnx_graph`, run in ONNX Runtime with the same settings as a
whole-model measurement (:mod:`mfsearch.deploy.runtime`); the median of many timed runs is kept.

Summing parts misses what lies between them (one session call instead of many, fusions across a
block boundary), so the table also stores a linear correction fitted at build time on a few
seeded configs of the space measured end to end (never configs used to judge the predictor):
``predicted = scale * sum + offset + per_unit * units``.

A config with a unit the table lacks is still predicted: the missing unit is estimated from the
table's entries of its kind by a least-squares fit on MACs and feature-map size (``estimate``,
counted in :class:`Prediction`), or measured on the spot and added (``on_missing="measure"``,
only on the machine the table was built on). A table from another device, runtime version or
with other settings is refused with :class:`TableError`: its numbers say nothing about here.
"""

from __future__ import annotations

import datetime
import itertools
import json
import math
import os
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..evaluation.latency import STATISTICS
from ..models import BlockConfig, ConfigError, MobileFormer, MobileFormerConfig
from ..models.config import make_divisible
from ..models.cx import Cx
from ..models.mobile_former import ConvBN, Head, LiteBlock, MobileFormerBlock, MobileToFormer
from .onnx_graph import DEFAULT_OPSET, Graph

FORMAT = "mfsearch-latency-table"
VERSION = 1
RUNTIMES = ("onnxruntime",)
#: what a table entry (and the measurement it is judged against) holds -> the attribute of a timing
CALIBRATION_SEED = 1_000_003  # calibration configs: seeds from here on (accuracy checks use small seeds)

Key = tuple


class TableError(InputError):
    """A table that cannot be used here (other machine, runtime, settings; damaged file): one line, exit 2."""


# ----------------------------------------------------------------------------- unit keys


def _width(c: int, wm: float, groups: int, heads: int) -> int:
    return c if wm == 1.0 else make_divisible(c * wm, max(4, groups, heads))


def _mf_globals(m: int, d: int, act: str, bridges: str, projections: str, heads: int, gate: bool, former: bool,
                ffn: bool, fheads: int, fexp: int, arrangement: str, groups: int, red: int) -> tuple:
    """The global knobs that change a Mobile-Former block's ops; those without effect become None."""
    bridged = bridges != "none"
    m2f = bridges in ("both", "mobile_to_former")
    return (m, d if m else None, act, bridges, projections if bridged else None, heads if bridged else None,
            gate if m2f else None, former, (ffn if former else None), (fheads if former else None),
            (fexp if former and ffn else None), arrangement if bridged else None, groups,
            red if act == "dyrelu" else None)


def _tail_globals(m: int, d: int, head: int, classes: int, hexp: int, groups: int, bridges: str, projections: str,
                  heads: int, gate: bool) -> tuple:
    m2f = bridges in ("both", "mobile_to_former")
    return (m, d if m else None, head, classes, hexp, groups, m2f, projections if m2f else None,
            heads if m2f else None, gate if m2f else None)


#: where the global knobs start in a unit key, by kind (what the missing-unit estimate groups by)
_GLOBALS_AT = {"mf1": 5, "mf2": 6, "tail": 3, "lite": 6}


def unit_keys(cfg: MobileFormerConfig, input_size: int) -> list[Key]:
    """The table keys of ``cfg``'s units at ``input_size``, in order (stem, blocks, tail)."""
    wm, g, h = cfg.width_mult, cfg.groups, cfg.bridge_heads
    glob = _mf_globals(cfg.num_tokens, cfg.token_dim, cfg.activation, cfg.bridges, cfg.projections, h, cfg.gate,
                       cfg.former, cfg.ffn, cfg.former_heads, cfg.ffn_expansion, cfg.arrangement, g,
                       cfg.dyrelu_reduction)
    c = _width(cfg.stem, wm, g, h)
    r = (input_size + 1) // 2
    keys: list[Key] = [("stem", input_size, c)]
    for b in cfg.blocks:
        co = _width(b.out, wm, g, h)
        if b.kind == "lite":
            keys.append(("lite", r, c, c * int(b.e1), co, b.stride, g))
        elif b.stride == 2:
            keys.append(("mf2", r, c, c * int(b.e1), co, co * b.e2) + glob)
        else:
            keys.append(("mf1", r, c, round(c * b.e1), co) + glob)
        if b.stride == 2:
            r = (r + 1) // 2
        c = co
    keys.append(("tail", r, c) + _tail_globals(cfg.num_tokens, cfg.token_dim, cfg.head, cfg.num_classes,
                                               cfg.head_expansion, g, cfg.bridges, cfg.projections, h, cfg.gate))
    return keys


def _options(name: str, knob: Any, base: Any) -> list:
    """Every value a knob can take (a constant, a choice, an int range, a stepped float range)."""
    from ..space.spec import Dist

    if not isinstance(knob, Dist):
        return [knob if knob is not None else base]
    if knob.kind == "choice":
        vals = list(knob.values)
    elif knob.kind == "int":
        step = int(knob.step or 1)
        vals = list(range(int(knob.low), int(knob.high) + 1, step))
    elif knob.step:
        n = int((knob.high - knob.low) / knob.step + 1e-9)
        vals = [knob.low + knob.step * i for i in range(n + 1)]
    else:
        raise InputError(f"{name}: a continuous float range; a latency table needs a finite set of values: "
                         "give the range a step")
    if knob.when:  # the condition may not hold: then the base value stays
        vals.append(base)
    return list(dict.fromkeys(vals))


STAGE_DEFAULTS = {"e1": 4, "stride": 2, "down_e1": 6, "down_e2": 4}  # as mfsearch.space.sample reads a stage


def space_unit_keys(space: Any, input_size: int) -> set[Key]:
    """Every unit key a config of ``space`` can have at ``input_size`` (an over-approximation is harmless)."""
    base = space.base_config
    bd = base.to_dict()
    names = list(space.knobs)
    opts = [_options(k, space.knobs[k], bd.get(k)) for k in names]
    b0 = base.blocks[0]
    lite = space.lite or {}
    lite_opts = [_options(f"lite.{k}", lite.get(k), getattr(b0, k)) for k in ("out", "e1", "stride")]
    if space.stages is None:  # the base config's own blocks after the lite one
        stages = [[("fixed", b)] for b in base.blocks[1:]]
    else:
        stages = []
        for i, st in enumerate(space.stages):
            o = {k: _options(f"stages.{i}.{k}", st.get(k), STAGE_DEFAULTS.get(k)) for k in
                 ("out", "depth", "e1", "stride", "down_e1", "down_e2")}
            stages.append([("stage", v) for v in itertools.product(*(o[k] for k in
                                                                      ("out", "depth", "e1", "stride", "down_e1",
                                                                       "down_e2")))])
    keys: set[Key] = set()
    for combo in itertools.product(*opts):
        d = {**bd, **dict(zip(names, combo))}
        wm, g, h = d["width_mult"], d["groups"], d["bridge_heads"]
        glob = _mf_globals(d["num_tokens"], d["token_dim"], d["activation"], d["bridges"], d["projections"], h,
                           d["gate"], d["former"], d["ffn"], d["former_heads"], d["ffn_expansion"],
                           d["arrangement"], g, d["dyrelu_reduction"])
        tail = _tail_globals(d["num_tokens"], d["token_dim"], d["head"], d["num_classes"], d["head_expansion"], g,
                             d["bridges"], d["projections"], h, d["gate"])
        c0 = _width(d["stem"], wm, g, h)
        r0 = (input_size + 1) // 2
        keys.add(("stem", input_size, c0))
        states = set()
        for out, e1, stride in itertools.product(*lite_opts):
            co = _width(out, wm, g, h)
            keys.add(("lite", r0, c0, c0 * int(e1), co, stride, g))
            states.add((co, r0 if stride == 1 else (r0 + 1) // 2))
        for stage in stages:
            nxt = set()
            for c, r in states:
                for kind, v in stage:
                    if kind == "fixed":
                        b = v
                        co = _width(b.out, wm, g, h)
                        if b.stride == 2:
                            keys.add(("mf2", r, c, c * int(b.e1), co, co * b.e2) + glob)
                            nxt.add((co, (r + 1) // 2))
                        else:
                            keys.add(("mf1", r, c, round(c * b.e1), co) + glob)
                            nxt.add((co, r))
                        continue
                    out, depth, e1, stride, de1, de2 = v
                    co = _width(out, wm, g, h)
                    cin, rr = c, r
                    if stride == 2:
                        keys.add(("mf2", r, c, c * int(de1), co, co * de2) + glob)
                        rr, cin, depth = (r + 1) // 2, co, depth - 1
                    if depth >= 1:
                        keys.add(("mf1", rr, cin, round(cin * e1), co) + glob)
                    if depth >= 2:
                        keys.add(("mf1", rr, co, round(co * e1), co) + glob)
                    nxt.add((co, rr))
            states = nxt
        for c, r in states:
            keys.add(("tail", r, c) + tail)
    return keys


# ----------------------------------------------------------------------------- unit models


def _unit_config(key: Key) -> tuple[MobileFormerConfig, int]:
    """A small valid config whose parts include the unit of ``key`` (``ConfigError`` if it cannot be built)."""
    kind = key[0]
    if kind == "stem":
        return MobileFormerConfig(stem=key[2], blocks=(BlockConfig("lite", key[2], 1, 1),), head=8, num_tokens=1,
                                  token_dim=8, activation="relu", bridges="none", former=False), 0
    if kind == "lite":
        _, r, cin, hid, co, stride, g = key
        return MobileFormerConfig(stem=cin, blocks=(BlockConfig("lite", co, hid // cin, stride),), head=8,
                                  num_tokens=1, token_dim=8, activation="relu", bridges="none", former=False,
                                  groups=g), 0
    if kind in ("mf1", "mf2"):
        if kind == "mf1":
            _, r, cin, hid, co, *glob = key
            blk = BlockConfig("mf", co, hid / cin, 1)
        else:
            _, r, cin, h1, co, h2, *glob = key
            blk = BlockConfig("mf", co, h1 // cin, 2, h2 // co)
        m, d, act, bridges, proj, heads, gate, former, ffn, fheads, fexp, arr, g, red = glob
        cfg = MobileFormerConfig(
            stem=cin, blocks=(BlockConfig("lite", cin, 1, 1), blk), head=8, num_tokens=m, token_dim=d or 8,
            activation=act, bridges=bridges, projections=proj or "light", bridge_heads=heads or 1,
            gate=bool(gate), former=former, ffn=bool(ffn), former_heads=fheads or 1, ffn_expansion=fexp or 2,
            arrangement=arr or "parallel", groups=g, dyrelu_reduction=red or 4)
        return cfg, 1
    if kind == "tail":
        _, r, c, m, d, head, classes, hexp, g, m2f, proj, heads, gate = key
        cfg = MobileFormerConfig(
            stem=c, blocks=(BlockConfig("lite", c, 1, 1),), head=head, num_tokens=m, token_dim=d or 8,
            num_classes=classes, head_expansion=hexp, groups=g, activation="relu",
            bridges="mobile_to_former" if m2f else "none", projections=proj or "light", bridge_heads=heads or 1,
            gate=bool(gate), former=False)
        return cfg, -1
    raise ValueError(f"unknown unit kind {kind!r}")


def unit_complexity(key: Key) -> tuple[int, int]:
    """``(MACs, feature-map elements in + out)`` of a unit: the features of the missing-unit estimate."""
    cfg, idx = _unit_config(key)
    kind, r = key[0], key[1]
    cx = Cx(r, r)
    if kind == "stem":
        ConvBN.complexity(cx, 3, key[2], 3, 2)
        return cx.macs, 3 * r * r + key[2] * cx.h * cx.w
    if kind == "lite":
        ci, co = cfg.channels()[0]
        LiteBlock.complexity(cx, ci, co, int(cfg.blocks[0].e1), cfg.blocks[0].stride, cfg.groups)
        return cx.macs, ci * r * r + co * cx.h * cx.w
    if kind == "tail":
        c = key[2]
        if cfg.m2f:
            MobileToFormer.complexity(cx, c, cfg.token_dim, cfg.num_tokens, cfg.bridge_heads, cfg.gate,
                                      cfg.projections == "full")
        Head.complexity(cx, cfg, c)
        return cx.macs, c * r * r
    ci, co = cfg.channels()[1]
    MobileFormerBlock.complexity(cx, cfg, ci, co, cfg.blocks[1])
    return cx.macs, ci * r * r + co * cx.h * cx.w


def constant_tokens(key: Key) -> bool:
    """Whether the tokens a unit reads are constants of the whole model: with no Mobile->Former bridge no image
    reaches them, so ONNX Runtime folds what they feed (the Former, DY-ReLU's coefficients, the Former->Mobile
    keys and values) into constants once; the unit must then hold them as constants too, or it times work the
    whole model never does (measured: 3-7% of such a model)."""
    kind = key[0]
    if kind in ("mf1", "mf2"):
        glob = key[_GLOBALS_AT[kind]:]
        return bool(glob[0]) and glob[3] not in ("both", "mobile_to_former")
    if kind == "tail":
        return bool(key[3]) and not key[9]
    return False


def unit_proto(key: Key, opset: int = DEFAULT_OPSET, seed: int = 0) -> tuple[Any, dict[str, tuple[int, ...]]]:
    """The ONNX model of one unit (random weights) and its input shapes (batch 1).

    The tokens are an input, or, where they are constants of the whole model (:func:`constant_tokens`), an
    initializer, as in :func:`mfsearch.deploy.onnx_graph.model_proto`.
    """
    cfg, idx = _unit_config(key)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MobileFormer(cfg).eval()
    g = Graph(opset)
    kind, r = key[0], key[1]
    m, d = cfg.num_tokens, cfg.token_dim
    shapes: dict[str, tuple[int, ...]] = {}
    const = constant_tokens(key)
    zin = (g.init(model.tokens.detach().numpy().reshape(1, m, d), "tokens") if const else "z") if m else None
    if kind == "stem":
        shapes["x"] = (1, 3, r, r)
        outs = [g.stem(model.stem, "x")]
    elif kind == "lite":
        ci, _ = cfg.channels()[0]
        shapes["x"] = (1, ci, r, r)
        outs = [g.lite(model.blocks[0], "x", ci)]
    elif kind == "tail":
        c = key[2]
        shapes["x"] = (1, c, r, r)
        if zin == "z":
            shapes["z"] = (1, m, d)
        outs = [g.tail(model.final_m2f, model.head, cfg, c, "x", zin, 1)]
    else:
        ci, co = cfg.channels()[1]
        shapes["x"] = (1, ci, r, r)
        if zin == "z":
            shapes["z"] = (1, m, d)
        y, z = g.mf_block(model.blocks[1], "x", zin, ci, co, m, d)
        outs = [y] + ([z] if z is not None and z != zin and not const else [])
    proto = g.model([g.value_info(n, s) for n, s in shapes.items()], [g.value_info(o, None) for o in outs],
                    f"unit_{kind}")
    return proto, shapes


@dataclass(frozen=True)
class Timing:
    """Wall-clock median and spread of timed runs, and the median CPU time of the process per run."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    runs: int
    cpu_median_ms: float
    cpu_min_ms: float
    min_ms: float

    def value(self, statistic: str) -> float:
        return getattr(self, STATISTICS[statistic])


def time_session(sess: Any, feeds: dict[str, np.ndarray], warmup: int = 5, min_runs: int = 25,
                 min_ms: float = 40.0, max_runs: int = 400) -> Timing:
    """Median of timed runs (outputs bound once, so only the graph is timed): at least ``min_runs`` runs and
    ``min_ms`` of measured time, at most ``max_runs``."""
    io = sess.io_binding()
    for k, v in feeds.items():
        io.bind_cpu_input(k, v)
    for o in sess.get_outputs():
        io.bind_output(o.name, "cpu")
    sess.run_with_iobinding(io)
    for o, v in zip(sess.get_outputs(), io.get_outputs()):  # keep the first run's buffers: no allocation later
        io.bind_ortvalue_output(o.name, v)
    for _ in range(max(0, warmup)):
        sess.run_with_iobinding(io)
    times: list[float] = []
    cpu: list[float] = []
    total = 0.0
    while len(times) < max_runs and (len(times) < min_runs or total < min_ms):
        t, c = time.perf_counter(), time.process_time()
        sess.run_with_iobinding(io)
        dt = (time.perf_counter() - t) * 1e3
        cpu.append((time.process_time() - c) * 1e3)
        times.append(dt)
        total += dt
    q = statistics.quantiles(times, n=10)
    return Timing(statistics.median(times), q[0], q[-1], len(times), statistics.median(cpu), min(cpu), min(times))


def measure_unit(key: Key, threads: int, opset: int = DEFAULT_OPSET, seed: int = 0, **timing: Any) -> Timing:
    """Batch-1 latency of one unit in ONNX Runtime (the settings of :func:`mfsearch.deploy.runtime.make_session`)."""
    from .runtime import make_session

    proto, shapes = unit_proto(key, opset, seed)
    sess = make_session(proto, threads)
    rng = np.random.default_rng(seed)
    feeds = {k: rng.standard_normal(s, dtype=np.float32) for k, s in shapes.items()}
    return time_session(sess, feeds, **timing)


# ----------------------------------------------------------------------------- the table


def loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "n/a"


def machine(threads: int) -> dict[str, str]:
    """This machine as a table records it: device description and runtime version."""
    from ..evaluation.latency import device_description
    from .runtime import ort_version

    return {"device": device_description("cpu", threads), "runtime_version": ort_version()}


@dataclass(frozen=True)
class Prediction:
    """A predicted latency with its parts: per unit (key, ms, source) where source is table/estimate/measured."""

    ms: float
    summed_ms: float
    units: tuple[tuple[Key, float, str], ...]

    @property
    def missing(self) -> int:
        return sum(1 for _, _, s in self.units if s != "table")


@dataclass
class LatencyTable:
    """Unit latencies measured on one machine (ms by unit key, under ``statistic``) plus the end-to-end correction."""

    device: str
    runtime: str
    runtime_version: str
    threads: int
    input_size: int
    opset: int = DEFAULT_OPSET
    statistic: str = "cpu_min"  # what an entry holds: a key of STATISTICS
    entries: dict[Key, float] = field(default_factory=dict)
    extra: dict[Key, dict[str, Any]] = field(default_factory=dict)  # p10/p90/runs/macs/elems by key
    scale: float = 1.0
    offset_ms: float = 0.0
    per_unit_ms: float = 0.0
    per_bridge_ms: float = 0.0  # per Mobile->Former bridge: what the sum of isolated units misses there
    meta: dict[str, Any] = field(default_factory=dict)
    path: str = ""
    _fits: dict[str, Any] = field(default_factory=dict, repr=False)
    _estimates: dict[Key, float] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ predicting
    def correct(self, summed: float, units: int, bridges: int = 0) -> float:
        return max(0.0, self.scale * summed + self.offset_ms + self.per_unit_ms * units + self.per_bridge_ms * bridges)

    def estimate(self, key: Key) -> float:
        """A missing unit's latency, fitted on the table's entries most like it.

        Non-negative least squares of ms on (1, MACs, feature-map elements) over the entries of the
        same kind and global knobs (at least 4 of them), else of the same kind, else all entries:
        monotone in size, so it never extrapolates below zero or against the trend.
        """
        if key in self._estimates:
            return self._estimates[key]
        from scipy.optimize import nnls

        kind = key[0]
        group = (kind, key[_GLOBALS_AT.get(kind, len(key)):])
        for g in (group, (kind,), ()):
            if g in self._fits:
                break
            rows = [(k, ms) for k, ms in self.entries.items()
                    if not g or (k[0] == kind and (len(g) == 1 or k[_GLOBALS_AT.get(kind, len(k)):] == g[1]))]
            if len(rows) >= (4 if len(g) == 2 else 1):
                feats = np.array([self._features(k) for k, _ in rows], dtype=float)
                self._fits[g] = nnls(feats, np.array([ms for _, ms in rows], dtype=float))[0]
                break
        est = float(np.dot(self._fits[g], self._features(key)))
        self._estimates[key] = est
        return est

    def _features(self, key: Key) -> tuple[float, float, float]:
        info = self.extra.get(key)
        if info and "macs" in info:
            macs, elems = info["macs"], info["elems"]
        else:
            macs, elems = unit_complexity(key)
        return 1.0, macs / 1e6, elems / 1e6

    def predict(self, cfg: MobileFormerConfig, on_missing: str = "estimate") -> Prediction:
        """The latency of ``cfg`` with its parts; ``on_missing``: ``estimate`` (default) or ``measure``."""
        if on_missing not in ("estimate", "measure"):
            raise ValueError(f"on_missing must be 'estimate' or 'measure', got {on_missing!r}")
        parts = []
        for key in unit_keys(cfg, self.input_size):
            ms = self.entries.get(key)
            if ms is not None:
                parts.append((key, ms, "table"))
            elif on_missing == "measure":
                self.check_machine()
                t = measure_unit(key, self.threads, self.opset)
                self.add(key, t, on_demand=True)
                parts.append((key, t.value(self.statistic), "measured"))
            else:
                parts.append((key, self.estimate(key), "estimate"))
        summed = sum(p[1] for p in parts)
        return Prediction(self.correct(summed, len(parts), m2f_bridges(cfg)), summed, tuple(parts))

    def add(self, key: Key, t: Timing, on_demand: bool = False) -> None:
        macs, elems = unit_complexity(key)
        self.entries[key] = round(t.value(self.statistic), 5)
        self.extra[key] = {**{k: round(t.value(k), 5) for k in STATISTICS},
                           "wall_p10": round(t.p10_ms, 5), "wall_p90": round(t.p90_ms, 5), "runs": t.runs,
                           "macs": macs, "elems": elems, **({"on_demand": True} if on_demand else {})}
        self._fits.clear()
        self._estimates.clear()

    # ------------------------------------------------------------------ where it is valid
    def mismatch(self, threads: int | None = None, input_size: int | None = None,
                 runtime: str | None = None) -> str | None:
        """Why this table does not describe this machine with these settings, or None."""
        here = machine(self.threads)
        diffs = []
        if self.device != here["device"]:
            diffs.append(f"built on {self.device!r}, this is {here['device']!r}")
        if self.runtime_version != here["runtime_version"]:
            diffs.append(f"built with {self.runtime_version}, this has {here['runtime_version']}")
        if threads is not None and threads != self.threads:
            diffs.append(f"built for {self.threads} thread(s), asked for {threads}")
        if input_size is not None and input_size != self.input_size:
            diffs.append(f"built at input size {self.input_size}, asked for {input_size}")
        if runtime is not None and runtime != self.runtime:
            diffs.append(f"built for runtime {self.runtime}, asked for {runtime}")
        return "; ".join(diffs) or None

    def check_machine(self, threads: int | None = None, input_size: int | None = None,
                      runtime: str | None = None, rebuild: str | None = None) -> None:
        """Raise :class:`TableError` (one line: the file, why, what to do) if the table is not for here.

        ``rebuild``: the command that builds the right table (default: the build flags of these settings).
        """
        why = self.mismatch(threads, input_size, runtime)
        if why:
            rebuild = rebuild or (f"mfsearch latency-table build --threads {threads or self.threads} "
                                  f"--input-size {input_size or self.input_size}")
            raise TableError(f"{self.path or 'latency table'}: {why}; rebuild it here with `{rebuild}`")

    # ------------------------------------------------------------------ files
    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "version": VERSION, "device": self.device, "runtime": self.runtime,
            "runtime_version": self.runtime_version, "threads": self.threads, "input_size": self.input_size,
            "batch": 1, "opset": self.opset, "statistic": self.statistic,
            "correction": {"scale": self.scale, "offset_ms": self.offset_ms, "per_unit_ms": self.per_unit_ms,
                           "per_bridge_ms": self.per_bridge_ms},
            **self.meta,
            "units": [{"key": list(k), "ms": ms, **self.extra.get(k, {})} for k, ms in self.entries.items()],
        }

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_name(f".{p.name}.part")
            tmp.write_text(json.dumps(self.to_json(), indent=1))
            os.replace(tmp, p)
        except OSError as e:
            raise TableError(f"{p}: cannot write the table ({e.strerror}); choose another --out") from None
        self.path = str(p)
        return p

    @classmethod
    def from_json(cls, data: dict[str, Any], path: str = "") -> LatencyTable:
        where = path or "latency table"
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise TableError(f"{where}: not an mfsearch latency table; build one with `mfsearch latency-table build`")
        if data.get("version") != VERSION:
            raise TableError(f"{where}: table format version {data.get('version')}, this mfsearch reads {VERSION}; "
                             "rebuild it with `mfsearch latency-table build`")
        try:
            corr = data["correction"]
            t = cls(device=str(data["device"]), runtime=str(data["runtime"]),
                    runtime_version=str(data["runtime_version"]), threads=int(data["threads"]),
                    input_size=int(data["input_size"]), opset=int(data.get("opset", DEFAULT_OPSET)),
                    statistic=str(data["statistic"]),
                    scale=float(corr["scale"]), offset_ms=float(corr["offset_ms"]),
                    per_unit_ms=float(corr.get("per_unit_ms", 0.0)),
                    per_bridge_ms=float(corr.get("per_bridge_ms", 0.0)), path=path)
            if not data["units"]:
                raise ValueError("no units")
            for u in data["units"]:
                key = tuple(u["key"])
                t.entries[key] = float(u["ms"])
                t.extra[key] = {k: v for k, v in u.items() if k not in ("key", "ms")}
        except (KeyError, TypeError, ValueError) as e:
            raise TableError(f"{where}: damaged table ({type(e).__name__}: {e}); rebuild it with "
                             "`mfsearch latency-table build`") from None
        stale = [k for k in t.entries if constant_tokens(k)]
        if stale and not data.get("constant_tokens"):
            raise TableError(f"{where}: built before units whose tokens are constants of the model were timed as "
                             f"such ({len(stale)} of its units, e.g. {list(stale[0])[:5]}...); rebuild it with "
                             "`mfsearch latency-table build`")
        if t.statistic not in STATISTICS:
            raise TableError(f"{where}: unknown statistic {t.statistic!r}; rebuild it with "
                             "`mfsearch latency-table build`")
        skip = {"format", "version", "device", "runtime", "runtime_version", "threads", "input_size", "batch",
                "opset", "statistic", "correction", "units"}
        t.meta = {k: v for k, v in data.items() if k not in skip}
        return t


def load_table(path: str | Path, threads: int | None = None, input_size: int | None = None,
               runtime: str | None = None, check: bool = True, statistic: str | None = None,
               rebuild: str | None = None) -> LatencyTable:
    """Read a table; with ``check`` (default) refuse one built on another device, runtime version or settings.

    ``statistic``: refuse a table whose entries hold another figure; ``rebuild``: the build command a
    refusal suggests (default: ``mfsearch latency-table build`` with these settings).
    """
    p = Path(path)
    build = rebuild or f"mfsearch latency-table build --out {p}"
    if not p.is_file():
        raise TableError(f"{p}: no such latency table; build one with `{build}`")
    try:
        data = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TableError(f"{p}: not a readable latency table ({type(e).__name__}); rebuild it with "
                         f"`{rebuild or 'mfsearch latency-table build'}`") from None
    table = LatencyTable.from_json(data, str(p))
    if check:
        table.check_machine(threads, input_size, runtime, rebuild)
    if statistic is not None and table.statistic != statistic:
        build = rebuild or f"{build} --statistic {statistic}"
        raise TableError(f"{p}: its entries are {table.statistic} times, {statistic} was asked for; rebuild it with "
                         f"`{build}` or ask for {table.statistic}")
    return table


_SEARCH_TABLES: dict[tuple, LatencyTable] = {}


def search_table(path: str | Path, settings: Any, rebuild: str) -> LatencyTable:
    """The table a search predicts latency with, checked against this machine and ``settings`` (a space's
    :class:`~mfsearch.evaluation.latency.LatencySettings`); read once per process and file version."""
    p = Path(path)
    try:
        st = p.stat()
        stamp: tuple = (st.st_mtime_ns, st.st_size)
    except OSError:
        stamp = ()
    key = (str(p.resolve()), stamp, settings.threads, settings.input_size, settings.statistic)
    if key not in _SEARCH_TABLES:
        _SEARCH_TABLES[key] = load_table(p, threads=settings.threads, input_size=settings.input_size,
                                         runtime="onnxruntime", statistic=settings.statistic, rebuild=rebuild)
    return _SEARCH_TABLES[key]


def predict_latency(cfg: MobileFormerConfig, table: LatencyTable) -> float:
    """Predicted batch-1 latency (ms) of ``cfg`` on the table's machine and settings: no model is built.

    The sum of the units' entries, corrected as fitted at build time; a unit missing from the
    table is estimated (see :meth:`LatencyTable.estimate`). For a search: an objective or a budget
    is ``predict_latency(cfg, table)`` with the table loaded once by :func:`load_table`.
    """
    entries = table.entries
    summed = 0.0
    keys = unit_keys(cfg, table.input_size)
    for key in keys:
        ms = entries.get(key)
        summed += ms if ms is not None else table.estimate(key)
    return table.correct(summed, len(keys), m2f_bridges(cfg))


def m2f_bridges(cfg: MobileFormerConfig) -> int:
    """Mobile->Former bridges of ``cfg`` (one per Mobile-Former block where that bridge is on)."""
    if cfg.bridges not in ("both", "mobile_to_former"):
        return 0
    return sum(1 for b in cfg.blocks if b.kind == "mf")


# ----------------------------------------------------------------------------- building


def fit_correction(summed: Sequence[float], units: Sequence[int], measured: Sequence[float],
                   bridges: Sequence[int] | None = None) -> tuple[float, float, float, float]:
    """``(scale, offset_ms, per_unit_ms, per_bridge_ms)``: least squares of measured on the summed units and some
    of: 1, the unit count, the count of Mobile->Former bridges; the simplest fit that predicts out of sample
    as well as the best, within noise.

    Summed parts miss what lies between them: in a whole model each block's weights come from
    memory, while a block timed alone finds them in cache (294M at 224: the sum of the parts was
    25% under the whole, plus about 0.2 ms per part); and a Mobile->Former bridge, whose tokens
    depend on the image, costs more inside the model than alone (latency_cpu's table: models with
    that bridge came out 0-13% low, models without 4-17% high under a fit without that term).

    Candidates: the scale alone; scale and bridges (12 configs whose bridge counts vary); scale and
    offset (3 configs); scale, offset and units (10, varying unit counts); all four (12). Each is kept
    only with a positive scale and positive predictions on the calibration. Each one's leave-one-out
    RMS relative error is measured; the fit chosen is the one with the fewest terms whose error is
    within one standard error of the lowest (the one-standard-error rule), so a term is added only
    where it predicts configs it was not fitted on clearly better. This matters beyond the
    calibration's range: calibration configs come from one space (latency_cpu's: 8-18 ms), and an
    offset fitted there adds its milliseconds to a 4 ms model too, while the proportional fits go
    through zero. With no candidate, the ratio of the sums.
    """
    s, u, y = (np.asarray(v, dtype=float) for v in (summed, units, measured))
    b = np.zeros_like(s) if bridges is None else np.asarray(bridges, dtype=float)
    ones = np.ones_like(s)
    cols = {"scale": s, "offset": ones, "unit": u, "bridge": b}
    candidates: list[tuple[str, ...]] = [("scale",)]
    if len(y) >= 12 and np.ptp(b) > 0:
        candidates.append(("scale", "bridge"))
    if len(y) >= 3:
        candidates.append(("scale", "offset"))
    if len(y) >= 10 and np.ptp(u) > 0:
        candidates.append(("scale", "offset", "unit"))
    if len(y) >= 12 and np.ptp(u) > 0 and np.ptp(b) > 0:
        candidates.append(("scale", "offset", "unit", "bridge"))
    fits: list[tuple[float, float, tuple[str, ...], np.ndarray]] = []  # (LOO error, its standard error, terms, coef)
    for terms in candidates:
        a = np.stack([cols[t] for t in terms], axis=1)
        coef = np.linalg.lstsq(a, y, rcond=None)[0]
        if coef[0] <= 0 or not np.all(a @ coef > 0) or len(y) <= a.shape[1]:
            continue
        err, se = _loo_rms(a, y)
        fits.append((err, se, terms, coef))
    if not fits:
        return (float(y.sum() / s.sum()) if len(y) and s.sum() > 0 else 1.0), 0.0, 0.0, 0.0
    lowest = min(fits, key=lambda f: f[0])
    err, _, terms, coef = min((f for f in fits if f[0] <= lowest[0] + lowest[1] + 1e-9), key=lambda f: len(f[2]))
    got = dict(zip(terms, (float(c) for c in coef)))
    return got["scale"], got.get("offset", 0.0), got.get("unit", 0.0), got.get("bridge", 0.0)


def _loo_rms(a: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Leave-one-out RMS of the relative error of the least-squares fit of ``y`` on ``a``, and its
    standard error (from the spread of the squared errors; 0 with fewer than two points)."""
    errs = []
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        coef = np.linalg.lstsq(a[keep], y[keep], rcond=None)[0]
        errs.append(float(a[i] @ coef) / y[i] - 1.0)
    sq = np.square(errs)
    rms = float(np.sqrt(np.mean(sq)))
    se = float(np.std(sq, ddof=1) / np.sqrt(len(sq)) / (2 * rms)) if rms > 0 and len(sq) > 1 else 0.0
    return rms, se


def sample_space_configs(space: Any, n: int, seed: int) -> list[tuple[int, MobileFormerConfig]]:
    """``n`` buildable configs of ``space`` from seeds ``seed, seed+1, ...`` (at most 20 n seeds tried)."""
    from ..space.sample import random_suggest, sample_config

    out = []
    for s in range(seed, seed + 20 * max(n, 1)):
        if len(out) >= n:
            break
        try:
            out.append((s, sample_config(space, random_suggest(s))))
        except ConfigError:
            continue
    return out


def default_statistic(threads: int) -> str:
    """``cpu_min`` with one thread, ``wall_min`` with more: the figures other processes disturb least.

    With one intra-op thread the graph runs on the calling thread, so the CPU time of a run is its
    latency on an idle core; the wall clock adds whatever time other processes hold the core (3x
    for Mobile-Former-294M on a shared 2-core machine at load 6). Neighbours still slow the CPU
    time down (shared caches and memory bandwidth), in bursts: there the median CPU time of the
    same unit varied by +/-20% between repeats and its minimum by +/-2%. With more threads the CPU
    time adds the threads up (and their spinning), so only the wall clock means latency.
    """
    return "cpu_min" if threads == 1 else "wall_min"


def measured(lat: Any, statistic: str) -> float:
    """A :class:`mfsearch.evaluation.latency.Latency`'s (or :class:`Timing`'s) value under ``statistic``."""
    return float(getattr(lat, STATISTICS[statistic]))


def measure_configs(configs: Sequence[MobileFormerConfig], threads: int, input_size: int, statistic: str,
                    rounds: int = 2, runs: int = 30, warmup: int = 5,
                    log: Callable[[int, int, dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """End-to-end latency of ``configs`` in ``rounds`` interleaved passes (each config once per pass).

    Neighbours disturb a shared machine in bursts; spreading a config's runs over passes minutes
    apart and combining them (the minimum of the passes for a ``*_min`` statistic, else the median)
    keeps one burst from setting the figure. Each row: ``measured_ms`` under ``statistic``, the
    wall and CPU medians, and the load average of the last pass.
    """
    from ..evaluation.latency import LatencySettings, measure_latency

    settings = LatencySettings(device="cpu", threads=threads, runtime="onnxruntime", input_size=input_size,
                               warmup=warmup, runs=runs)
    passes: list[list[Any]] = [[] for _ in configs]
    loads = [""] * len(configs)
    for _ in range(max(1, rounds)):
        for i, cfg in enumerate(configs):
            passes[i].append(measure_latency(cfg, settings))
            loads[i] = loadavg()
    rows = []
    for i, lats in enumerate(passes):
        combine = min if statistic.endswith("_min") else statistics.median
        row = {"measured_ms": round(combine(measured(x, statistic) for x in lats), 4),
               "wall_ms": round(statistics.median(x.median_ms for x in lats), 4),
               "cpu_ms": round(statistics.median(x.cpu_median_ms for x in lats), 4),
               "passes": [round(measured(x, statistic), 4) for x in lats], "load": loads[i]}
        rows.append(row)
        if log:
            log(i, len(configs), row)
    return rows


def build_table(keys: Iterable[Key], calibration: Sequence[MobileFormerConfig], threads: int = 1,
                input_size: int = 224, opset: int = DEFAULT_OPSET, warmup: int = 5, min_runs: int = 25,
                min_ms: float = 40.0, e2e_runs: int = 30, rounds: int = 2, statistic: str | None = None,
                log: Callable[[str], None] | None = None, meta: dict[str, Any] | None = None) -> LatencyTable:
    """Measure every unit of ``keys`` and the ``calibration`` configs end to end; fit the correction."""
    say = log or (lambda m: None)
    statistic = statistic or default_statistic(threads)
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {', '.join(STATISTICS)}, got {statistic!r}")
    t0 = time.perf_counter()
    here = machine(threads)
    table = LatencyTable(device=here["device"], runtime="onnxruntime", runtime_version=here["runtime_version"],
                         threads=threads, input_size=input_size, opset=opset, statistic=statistic)
    keys = sorted(set(keys), key=lambda k: tuple(str(v) for v in k))
    skipped = []
    load0 = loadavg()
    last = time.perf_counter()
    for i, key in enumerate(keys, 1):
        try:
            t = measure_unit(key, threads, opset, warmup=warmup, min_runs=min_runs, min_ms=min_ms)
        except ConfigError as e:  # a combination no config of the space can have
            skipped.append({"key": list(key), "why": str(e)})
            continue
        table.add(key, t)
        if time.perf_counter() - last > 10 or i == len(keys):
            last = time.perf_counter()
            say(f"latency table: {i}/{len(keys)} units measured ({time.perf_counter() - t0:.0f} s, "
                f"load {loadavg()})")
    units_s = time.perf_counter() - t0

    def note(i: int, n: int, row: dict[str, Any]) -> None:
        say(f"latency table: calibration {i + 1}/{n}: measured {row['measured_ms']:.2f} ms ({statistic}), "
            f"sum of units {sums[i]:.2f} ms")

    sums = [sum(table.entries[k] if k in table.entries else table.estimate(k) for k in unit_keys(c, input_size))
            for c in calibration]
    rows = measure_configs(calibration, threads, input_size, statistic, rounds, e2e_runs, warmup, note)
    for cfg, row, summed in zip(calibration, rows, sums):
        row.update({"arch_id": cfg.arch_id, "name": cfg.name, "summed_ms": round(summed, 5),
                    "units": len(unit_keys(cfg, input_size)), "m2f_bridges": m2f_bridges(cfg)})
    table.scale, table.offset_ms, table.per_unit_ms, table.per_bridge_ms = fit_correction(
        [r["summed_ms"] for r in rows], [r["units"] for r in rows], [r["measured_ms"] for r in rows],
        [r["m2f_bridges"] for r in rows])
    table.meta = {
        **(meta or {}),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "measurement": {"warmup": warmup, "min_runs": min_runs, "min_ms": min_ms, "e2e_runs": e2e_runs,
                        "e2e_rounds": rounds},
        "build_s": round(time.perf_counter() - t0, 1), "units_s": round(units_s, 1),
        "load_start": load0, "load_end": loadavg(),
        "calibration": rows, "skipped": skipped, "constant_tokens": True,
    }
    return table


# ----------------------------------------------------------------------------- accuracy


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic) if len(a) > 2 else float("nan")


def accuracy(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, float]:
    """RMSE (% of measured), share within +/-10% (nn-Meter's headline), Spearman, mean error (%)."""
    p, m = np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float)
    rel = (p - m) / m
    return {"n": int(len(m)), "rmse_pct": float(math.sqrt(np.mean(rel ** 2)) * 100),
            "within_10_pct": float(np.mean(np.abs(rel) <= 0.10) * 100), "spearman": spearman(p, m),
            "mean_error_pct": float(np.mean(rel) * 100), "max_abs_error_pct": float(np.max(np.abs(rel)) * 100)}


def evaluate_table(table: LatencyTable, configs: Sequence[tuple[str, MobileFormerConfig]], runs: int = 30,
                   warmup: int = 5, rounds: int = 2, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Predicted vs measured end-to-end latency (ONNX Runtime, the table's settings and statistic) of ``configs``.

    Measured as the table's calibration was (:func:`measure_configs`, ``rounds`` interleaved
    passes). Configs whose arch_id calibrated the table are refused (ValueError): they would flatter it.
    """
    used = {r["arch_id"] for r in table.meta.get("calibration", [])}
    clash = [label for label, cfg in configs if cfg.arch_id in used]
    if clash:
        raise ValueError(f"configs {', '.join(clash)} calibrated this table; judge it on others")
    preds = [table.predict(cfg) for _, cfg in configs]

    def note(i: int, n: int, row: dict[str, Any]) -> None:
        if log:
            p = preds[i].ms
            log(f"{configs[i][0]:<24} predicted {p:8.2f} ms  measured {row['measured_ms']:8.2f} ms "
                f"({table.statistic}; wall median {row['wall_ms']:.2f})  {(p / row['measured_ms'] - 1) * 100:+.1f}%  "
                f"load {row['load']}")

    rows = measure_configs([c for _, c in configs], table.threads, table.input_size, table.statistic, rounds, runs,
                           warmup, note)
    for (label, cfg), pred, row in zip(configs, preds, rows):
        row.update({"config": label, "arch_id": cfg.arch_id, "predicted_ms": round(pred.ms, 4),
                    "summed_ms": round(pred.summed_ms, 4), "units": len(pred.units),
                    "estimated_units": pred.missing,
                    "error_pct": round((pred.ms / row["measured_ms"] - 1) * 100, 2)})
    out = {"statistic": table.statistic, "rounds": rounds, "rows": rows,
           **accuracy([r["predicted_ms"] for r in rows], [r["measured_ms"] for r in rows])}
    if table.statistic != "wall":
        out["against_wall_clock"] = accuracy([r["predicted_ms"] for r in rows], [r["wall_ms"] for r in rows])
    return out
