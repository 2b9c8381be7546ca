"""CLI: ``mfsearch proxy-check`` (rank fidelity of a space's evaluation settings; zero-cost proxies)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from typing import Any

from .._utils import finite_json, one_runner


def _space_with(path: str, sets: list[str]):  # noqa: ANN202 - a Space
    """The space file, with ``--set evaluation.KEY=VALUE`` overrides applied and validated as if in the file."""
    from ..errors import InputError
    from ..fields import parse_yaml
    from ..space.parse import read_space_data, space_from_data

    data, lines = read_space_data(path)
    if not isinstance(data, dict):
        raise InputError(f"{path}: a space file must be a mapping at the top level")
    for s in sets:
        key, sep, value = s.partition("=")
        sect, dot, field = key.partition(".")
        if not sep or not dot or sect not in ("evaluation", "search", "budget", "oneshot"):
            raise InputError(f"--set {s!r}: must read evaluation.KEY=VALUE (or search. / budget. / oneshot.)")
        sect_data = data.setdefault(sect, {})
        if not isinstance(sect_data, dict):
            raise InputError(f"{path}: {sect}: must be a mapping")
        try:
            sect_data[field], _ = parse_yaml(value, "VALUE")
        except InputError as e:
            raise InputError(f"--set {s!r}: VALUE must be a plain YAML value ({e}), e.g. "
                             "--set evaluation.epochs=2") from None
    return space_from_data(data, path, lines if not sets else {})


MAX_SAMPLE = 1000  # architectures (each is trained)
MAX_SEEDS = 100


def _models(arg: str | None) -> tuple[str, ...] | None:
    from ..errors import InputError
    from .sweep import model_names

    if not arg:
        return None
    return model_names(arg.split(","), lambda rule: InputError(f"--models: {rule}"))


def cmd_proxy_check(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..evaluation.data import MfsearchDataError
    from . import JobsFailed

    if args.results is not None and not args.oneshot:
        raise InputError("--results: goes only with --oneshot (the long check to keep across machines); drop it")
    if args.oneshot and (args.sweep or args.zero_cost or args.skip_paper or args.models or args.estimate
                         or args.batch_size is not None):
        what = next(f for f, on in (("--sweep", args.sweep), ("--zero-cost", args.zero_cost),
                                    ("--skip-paper", args.skip_paper), ("--models", args.models),
                                    ("--estimate", args.estimate), ("--batch-size", args.batch_size is not None))
                    if on)
        raise InputError(f"{what}: does not go with --oneshot (which scores a sample of the space and the paper "
                         "models inside it, and trains them stand-alone); drop one of the two")
    space = _space_with(args.space, args.set or [])
    models = _models(args.models)
    for name, v, lo, hi in (("--seeds", args.seeds, 1, MAX_SEEDS), ("--workers", args.workers, 1, 256),
                            ("--sample", args.sample, 4, MAX_SAMPLE), ("--batch-size", args.batch_size, 2, 4096)):
        if v is not None and not lo <= v <= hi:
            raise InputError(f"{name}: must be in [{lo}, {hi}], got {v}")
    if args.estimate and not args.sweep:
        raise InputError("--estimate: times the settings of a sweep; give --sweep FILE")
    log = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    try:
        if args.oneshot:
            return _oneshot(args, space, log)
        if args.sweep:
            if args.zero_cost or args.skip_paper:
                raise InputError("--sweep: trains the paper models under each setting; --zero-cost and --skip-paper "
                                 "go with a plain proxy-check")
            return _sweep(args, space, models, log)
        return _check(args, space, models, log)
    except MfsearchDataError as e:
        raise InputError(f"{space.path}: {getattr(e, 'field', 'evaluation.dataset')}: {e}") from None
    except JobsFailed as e:
        print(f"mfsearch: error: {e}", file=sys.stderr)
        return 1


def _check(args: argparse.Namespace, space: Any, models: tuple[str, ...] | None, log: Any) -> int:
    from . import (
        PAPER_MODELS,
        CheckOptions,
        check_dir,
    )

    opts = CheckOptions(seeds=args.seeds or 3, models=models or PAPER_MODELS, workers=args.workers,
                        zero_cost=args.zero_cost, sample=args.sample or 16, batch_size=args.batch_size or 64,
                        report_only=args.report_only)
    if args.zero_cost:  # the proxies score one minibatch of the first training epoch: it must fit in one
        from ..errors import InputError
        from ..evaluation.train import proxy_data

        loader = proxy_data(space.evaluation).train
        have = len(loader) * loader.batch_size
        if opts.batch_size > have:
            raise InputError(f"--batch-size: {opts.batch_size} is more than the {have} training examples an epoch "
                             f"yields ({len(loader)} batches of evaluation.batch_size {loader.batch_size}); lower "
                             "--batch-size")
    out = check_dir(space, args.runs_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        (out / "settings.json").write_text(json.dumps({"space": str(args.space), "set": args.set or [],
                                                        "evaluation": space.evaluation.__dict__,
                                                        "eval_id": space.evaluation.eval_id()}, indent=2))
    t0 = time.perf_counter()
    report, js = [f"# Proxy check: {space.name}\n"], {"space": str(args.space), "eval_id": space.evaluation.eval_id()}
    with contextlib.ExitStack() as held:
        if not args.report_only:
            held.enter_context(one_runner([out], "mfsearch proxy-check"))
        return _check_locked(args, space, opts, out, report, js, t0)


def _check_locked(args: argparse.Namespace, space: Any, opts: Any, out: Any, report: list[str], js: dict[str, Any],
                  t0: float) -> int:
    from . import (
        paper_markdown,
        plot_paper,
        run_paper_check,
        run_zero_cost_check,
        summarise_paper,
        summarise_zero_cost,
        zero_cost_markdown,
    )

    log = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    if not args.skip_paper:
        recs = run_paper_check(space, opts, out, log)
        s = summarise_paper(recs)
        report.append(paper_markdown(space, s))
        if s["rows"]:
            plot_paper(space, recs, s, out / "proxy_vs_imagenet.png")
        js["paper"] = s
    if args.zero_cost:
        zs = summarise_zero_cost(run_zero_cost_check(space, opts, out, log))
        report.append(zero_cost_markdown(zs))
        js["zero_cost"] = zs
    text = "\n".join(report) + f"\nWall time of this run: {(time.perf_counter() - t0) / 60:.1f} min.\n"
    (out / "report.md").write_text(text)
    (out / "report.json").write_text(finite_json(js))
    print(text)
    print(f"wrote {out / 'report.md'}, {out / 'report.json'}"
          + (f", {out / 'proxy_vs_imagenet.png'}" if not args.skip_paper else ""))
    return 0


def _oneshot(args: argparse.Namespace, space: Any, log: Any) -> int:
    from .oneshot import OneShotCheckOptions, oneshot_markdown, require_oneshot, run_oneshot_check

    require_oneshot(space)
    opts = OneShotCheckOptions(sample=args.sample or 24, seeds=args.seeds or 3, workers=args.workers,
                               report_only=args.report_only, quiet=args.quiet)
    results = None
    if args.results is not None:
        from .._utils import writable_folder

        results = writable_folder(args.results, "--results")
    s = run_oneshot_check(space, opts, log, args.runs_dir, results)
    print(oneshot_markdown(space, s))
    out = s["out"]
    print(f"wrote {out}/report.md, {out}/report.json" + (f", {out}/oneshot_vs_standalone.png" if s["rows"] else ""))
    return 0


def _sweep(args: argparse.Namespace, space: Any, models: tuple[str, ...] | None, log: Any) -> int:
    import dataclasses

    from .sweep import (
        estimate_costs,
        estimate_markdown,
        load_sweep,
        run_sweep,
        sweep_dir,
        write_sweep_report,
    )

    sweep = load_sweep(args.sweep, space)  # every setting validated before anything runs
    if models:
        sweep = dataclasses.replace(sweep, models=models)
    if args.seeds:
        seeds = list(sweep.seeds)
        while len(seeds) < args.seeds:
            seeds.append(max(seeds) + 1)
        sweep = dataclasses.replace(sweep, seeds=tuple(seeds[:args.seeds]))
    out = sweep_dir(sweep, args.runs_dir)
    out.mkdir(parents=True, exist_ok=True)
    if args.estimate:
        log(f"timing the settings of sweep {sweep.name} (one process, one thread)")
        est = estimate_costs(sweep, log)
        (out / "estimate.json").write_text(json.dumps(est, indent=2))
        print(estimate_markdown(sweep, est))
        print(f"wrote {out / 'estimate.json'}")
        return 0
    t0 = time.perf_counter()
    if not args.report_only:
        from . import check_dir

        with one_runner([check_dir(sweep.space_for(s), args.runs_dir) for s in sweep.settings],
                        "mfsearch proxy-check --sweep"):
            run_sweep(sweep, args.workers, log, args.runs_dir)
    text, out = write_sweep_report(sweep, args.runs_dir)
    print(text)
    if not args.report_only:
        print(f"Wall time of this run: {(time.perf_counter() - t0) / 60:.1f} min.")
    print(f"wrote {out / 'report.md'}, {out / 'report.json'}, {out / 'sweep.png'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("proxy-check", help="how well a space's evaluation settings rank the paper models; "
                       "zero-cost proxies with --zero-cost")
    p.add_argument("space", help="a space file (its evaluation: section is what is checked)")
    p.add_argument("--set", action="append", metavar="evaluation.KEY=VALUE",
                   help="override a setting of the space file (repeatable): evaluation.KEY, search.KEY, budget.KEY or "
                   "oneshot.KEY, e.g. --set evaluation.epochs=2, --set oneshot.val_images=5000 (with --oneshot: the "
                   "same supernet scored another way)")
    p.add_argument("--seeds", type=int, default=None,
                   help="seeds per paper model (default 3; with --sweep: the file's seeds)")
    p.add_argument("--models", default=None,
                   help="comma-separated paper models, e.g. 52m,26m,96m (default: all seven, or the sweep file's)")
    p.add_argument("--workers", type=int, default=1, help="training processes at once (default 1)")
    p.add_argument("--zero-cost", action="store_true", help="also correlate the zero-cost proxies")
    p.add_argument("--sample", type=int, default=None,
                   help="architectures sampled from the space, 4 to 1000 (--zero-cost: default 16; --oneshot: default "
                   "24)")
    p.add_argument("--batch-size", type=int, default=None, help="minibatch for the zero-cost proxies (default 64)")
    p.add_argument("--skip-paper", action="store_true", help="only the zero-cost check")
    p.add_argument("--sweep", default=None, metavar="SWEEP.yaml",
                   help="check every setting of a sweep file (evaluation overrides on the space); "
                   "report in runs/proxy-check/sweep-<name>/")
    p.add_argument("--oneshot", action="store_true",
                   help="a one-shot space: rank agreement of its supernet's scores with stand-alone training "
                   "(--sample architectures plus the paper models inside it, --seeds stand-alone seeds each); "
                   "report in runs/proxy-check/<space>-<eval_id>/oneshot-<supernet>-<scoring>/")
    p.add_argument("--results", default=None, metavar="DIR",
                   help="with --oneshot: keep the check in DIR too (committed with the repository): stand-alone runs "
                        "and scores published there count as done, and each one stored is published at once to "
                        "DIR/<space>-<eval_id>/ (the layout of runs/proxy-check)")
    p.add_argument("--report-only", action="store_true", help="train nothing: report what is stored so far")
    p.add_argument("--estimate", action="store_true",
                   help="with --sweep: time each setting briefly and estimate its CPU-minutes; train nothing")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--runs-dir", default=None, help="runs directory (default ./runs or $MFSEARCH_RUNS)")
    p.set_defaults(func=cmd_proxy_check)
