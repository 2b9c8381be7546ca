"""CLI commands of the model family: ``info`` (per-block MACs / params of a preset or config) and ``models``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import InputError


def _fmt_m(n: int) -> str:
    return f"{n / 1e6:,.2f}M"


def resolve(spec: str, num_classes: int | None = None) -> Any:
    """The config of a preset name or a config file, as a one-line error when it cannot be had."""
    from . import ConfigError, resolve_config

    try:
        cfg = resolve_config(spec)
        return cfg.replace(num_classes=num_classes) if num_classes is not None else cfg
    except ConfigError as e:
        raise InputError(str(e)) from None
    except KeyError as e:
        raise InputError(e.args[0]) from None


def cmd_info(args: argparse.Namespace) -> int:
    from . import PAPER, complexity, get_config

    cfg = resolve(args.model, args.num_classes)
    if args.input_size < 8 or args.input_size > 4096:
        raise InputError(f"--input-size: must be in [8, 4096], got {args.input_size}")
    cx = complexity(cfg, args.input_size, per_block=True)
    is_preset = cfg.name in PAPER and cfg.arch_id == get_config(cfg.name).arch_id  # not a variant named like one
    paper = PAPER[cfg.name] if is_preset and args.input_size == 224 and cfg.num_classes == 1000 else None
    if args.json:
        out = {
            "name": cfg.name, "arch_id": cfg.arch_id, "input_size": args.input_size,
            "num_classes": cfg.num_classes, "params": cx.params, "macs": cx.macs,
            "blocks": [
                {"name": b.name, "c_in": b.c_in, "c_out": b.c_out, "size_in": list(b.size_in),
                 "size_out": list(b.size_out), "macs": b.macs, "params": b.params}
                for b in cx.blocks
            ],
            "config": cfg.to_dict(),
        }
        if paper:
            out["paper"] = {"params_m": paper.params_m, "macs_m": paper.macs_m, "top1": paper.top1}
        print(json.dumps(out, indent=2))
        return 0
    print(f"{cfg.name or 'config'}  arch_id {cfg.arch_id}  input {args.input_size}x{args.input_size}  "
          f"classes {cfg.num_classes}")
    print(cfg.summary())
    hdr = f"{'part':<14}{'resolution':>14}{'channels':>14}{'MACs':>14}{'params':>14}{'MACs %':>9}{'params %':>10}"
    print(hdr)
    print("-" * len(hdr))
    for b in cx.blocks:
        res = f"{b.size_in[0]}->{b.size_out[0]}"
        ch = f"{b.c_in}->{b.c_out}"
        print(f"{b.name:<14}{res:>14}{ch:>14}{b.macs:>14,}{b.params:>14,}"
              f"{100 * b.macs / cx.macs:>8.1f}%{100 * b.params / cx.params:>9.1f}%")
    print("-" * len(hdr))
    print(f"{'total':<42}{cx.macs:>14,}{cx.params:>14,}")
    print(f"MACs {_fmt_m(cx.macs)}  params {_fmt_m(cx.params)}")
    if paper:
        print(f"paper: MACs {paper.macs_m}M  params {paper.params_m}M  ImageNet top-1 {paper.top1}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from . import PAPER, complexity, get_config, list_models

    for name in list_models():
        cx = complexity(get_config(name))
        paper = PAPER[name]
        print(f"{name:<20} MACs {_fmt_m(cx.macs):>9}  params {_fmt_m(cx.params):>7}  paper top-1 {paper.top1}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    info = sub.add_parser("info", help="per-block MACs/params table of a preset or config file")
    info.add_argument("model", help="a preset name (e.g. mobile_former_294m) or a config .yaml")
    info.add_argument("--input-size", type=int, default=224, help="square input size (default 224)")
    info.add_argument("--num-classes", type=int, default=None, help="classifier classes (default 1000)")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.set_defaults(func=cmd_info)
    models = sub.add_parser("models", help="list the registered presets")
    models.set_defaults(func=cmd_models)
