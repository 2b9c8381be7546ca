"""CLI: ``mfsearch proxy-check`` (rank fidelity of a space's evaluation settings; zero-cost proxies)."""

from __future__ import annotations

import argparse
import json
import sys
import time


def _space_with(path: str, sets: list[str]):  # noqa: ANN202 - a Space
    """The space file, with ``--set evaluation.KEY=VALUE`` overrides applied and validated as if in the file."""
    from .errors import InputError
    from .fields import load_yaml, parse_yaml
    from .space.spec import space_from_data

    data, lines = load_yaml(path)
    if not isinstance(data, dict):
        raise InputError(f"{path}: a space file must be a mapping at the top level")
    for s in sets:
        key, sep, value = s.partition("=")
        sect, dot, field = key.partition(".")
        if not sep or not dot or sect not in ("evaluation", "search", "budget"):
            raise InputError(f"--set {s!r}: must read evaluation.KEY=VALUE (or search. / budget.)")
        sect_data = data.setdefault(sect, {})
        if not isinstance(sect_data, dict):
            raise InputError(f"{path}: {sect}: must be a mapping")
        try:
            sect_data[field], _ = parse_yaml(value, "VALUE")
        except InputError as e:
            raise InputError(f"--set {s!r}: VALUE must be a plain YAML value ({e}), e.g. "
                             "--set evaluation.epochs=2") from None
    return space_from_data(data, path, lines if not sets else {})


def cmd_proxy_check(args: argparse.Namespace) -> int:
    from .errors import InputError
    from .evaluation.data import MfsearchDataError
    from .models import PAPER
    from .proxycheck import (
        PAPER_MODELS,
        CheckOptions,
        check_dir,
        paper_markdown,
        plot_paper,
        run_paper_check,
        run_zero_cost_check,
        summarise_paper,
        summarise_zero_cost,
        zero_cost_markdown,
    )

    space = _space_with(args.space, args.set or [])
    models = tuple(args.models.split(",")) if args.models else PAPER_MODELS
    models = tuple(m if m.startswith("mobile_former_") else f"mobile_former_{m}" for m in models)
    bad = [m for m in models if m not in PAPER]
    if bad:
        raise InputError(f"--models: unknown paper model(s) {', '.join(bad)}; choose from {', '.join(PAPER_MODELS)}")
    for name, v, lo in (("--seeds", args.seeds, 1), ("--workers", args.workers, 1), ("--sample", args.sample, 4),
                        ("--batch-size", args.batch_size, 2)):
        if v < lo:
            raise InputError(f"{name}: must be at least {lo}, got {v}")
    if len(models) < 3:
        raise InputError("--models: a rank correlation needs at least 3 models")
    opts = CheckOptions(seeds=args.seeds, models=models, workers=args.workers, zero_cost=args.zero_cost,
                        sample=args.sample, batch_size=args.batch_size)
    if args.zero_cost:  # the proxies score one minibatch of the first training epoch: it must fit in one
        from .evaluation.train import proxy_data

        try:
            loader = proxy_data(space.evaluation).train
        except MfsearchDataError as e:
            raise InputError(f"{space.path}: {e.field}: {e}") from None
        have = len(loader) * loader.batch_size
        if args.batch_size > have:
            raise InputError(f"--batch-size: {args.batch_size} is more than the {have} training examples an epoch "
                             f"yields ({len(loader)} batches of evaluation.batch_size {loader.batch_size}); lower "
                             "--batch-size")
    out = check_dir(space, args.runs_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "settings.json").write_text(json.dumps({"space": str(args.space), "set": args.set or [],
                                                    "evaluation": space.evaluation.__dict__,
                                                    "eval_id": space.evaluation.eval_id()}, indent=2))
    log = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    t0 = time.perf_counter()
    report, js = [f"# Proxy check: {space.name}\n"], {"space": str(args.space), "eval_id": space.evaluation.eval_id()}
    try:
        if not args.skip_paper:
            recs = run_paper_check(space, opts, out, log)
            s = summarise_paper(recs)
            report.append(paper_markdown(space, s))
            plot_paper(space, recs, s, out / "proxy_vs_imagenet.png")
            js["paper"] = s
        if args.zero_cost:
            zs = summarise_zero_cost(run_zero_cost_check(space, opts, out, log))
            report.append(zero_cost_markdown(zs))
            js["zero_cost"] = zs
    except MfsearchDataError as e:
        raise InputError(f"{space.path}: {e.field}: {e}") from None
    text = "\n".join(report) + f"\nWall time of this run: {(time.perf_counter() - t0) / 60:.1f} min.\n"
    (out / "report.md").write_text(text)
    (out / "report.json").write_text(json.dumps(js, indent=2))
    print(text)
    print(f"wrote {out / 'report.md'}, {out / 'report.json'}"
          + (f", {out / 'proxy_vs_imagenet.png'}" if not args.skip_paper else ""))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("proxy-check", help="how well a space's evaluation settings rank the paper models; "
                       "zero-cost proxies with --zero-cost")
    p.add_argument("space", help="a space file (its evaluation: section is what is checked)")
    p.add_argument("--set", action="append", metavar="evaluation.KEY=VALUE",
                   help="override an evaluation setting (repeatable), e.g. --set evaluation.epochs=2")
    p.add_argument("--seeds", type=int, default=3, help="seeds per paper model (default 3)")
    p.add_argument("--models", default=None, help="comma-separated paper models (default: all seven)")
    p.add_argument("--workers", type=int, default=1, help="training processes at once (default 1)")
    p.add_argument("--zero-cost", action="store_true", help="also correlate the zero-cost proxies")
    p.add_argument("--sample", type=int, default=16, help="architectures sampled from the space (--zero-cost)")
    p.add_argument("--batch-size", type=int, default=64, help="minibatch for the zero-cost proxies (default 64)")
    p.add_argument("--skip-paper", action="store_true", help="only the zero-cost check")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--runs-dir", default=None, help="runs directory (default ./runs or $MFSEARCH_RUNS)")
    p.set_defaults(func=cmd_proxy_check)
