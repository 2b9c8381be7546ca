"""Running the Optuna engine: in this process, or in several worker processes on one study
(``--workers N`` / ``search.workers``).

Each worker is a spawned process running :class:`~mfsearch.search.optuna_engine.OptunaSearch`
on the shared store; their trial lines come back to the parent, which shows one progress bar.
A worker's error reaches the user once, as one line; Ctrl-C stops every worker, each marking
its trial interrupted (a bounded wait, then the stragglers are terminated).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from ..errors import InputError, RunError
from ..evaluation.settings import threads_per_worker


def _on_sigint(signum: int, frame: Any) -> None:
    """Ctrl-C in a worker stops its trial, unless the worker is already writing that trial's end.

    The parent repeats the signal until the worker is gone: an interrupt that lands where Python
    cannot raise it (a finaliser) is not lost.
    """
    from .optuna_engine import cleaning_up

    if not cleaning_up():
        raise KeyboardInterrupt


def _quiet_lost_interrupt(unraisable: Any) -> None:
    """``sys.unraisablehook`` of a worker: a Ctrl-C that landed in a finaliser (where Python cannot raise
    it) is dropped silently, since the parent repeats the signal; anything else is reported as usual."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt):
        return
    sys.__unraisablehook__(unraisable)


def _worker_main(space: Any, ref: Any, worker: int, num_classes: int, threads: int, lines: Any,
                 allow_change: bool) -> None:
    """One worker process: its trial lines and its one-line error (if any) go to the parent."""
    import signal

    from .._utils import exit_with_parent

    exit_with_parent(os.getppid())  # a parent killed with -9 cannot stop its workers: they stop themselves
    code = 0
    try:
        import optuna
        import torch

        from .optuna_engine import OptunaSearch

        # Ctrl-C stays blocked (inherited) until the libraries are imported: an interrupt inside a library's
        # import can be swallowed there and leave the library half-initialised. Blocked, not ignored: one that
        # came meanwhile is pending and is delivered here, once the handler is in place.
        sys.unraisablehook = _quiet_lost_interrupt
        signal.signal(signal.SIGINT, _on_sigint)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # as the command line: its own trial lines
        torch.set_num_threads(threads)
        OptunaSearch(space, ref, progress=False, worker=worker, run_references=worker == 0,
                     sink=lambda line, count: lines.put(("line", line, count)), allow_change=allow_change
                     ).run(num_classes)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent repeats the signal: nothing more to stop
        code = 130
    except InputError as e:
        lines.put(("error", 2, str(e)))
        code = 2
    except RunError as e:
        lines.put(("error", 1, str(e)))
        code = 1
    except Exception as e:  # noqa: BLE001 - a crash: its traceback goes to a file, one line to the user
        import traceback

        log = Path(ref.run_dir) / f"worker-{worker}.log"
        try:
            log.write_text(traceback.format_exc())
            where = f"; traceback in {log}"
        except OSError:
            where = ""
        first = str(e).splitlines()[0][:200] if str(e) else ""
        lines.put(("error", 1, f"worker {worker} crashed ({type(e).__name__}: {first}){where}; finished trials "
                   "are kept: run the same command again to continue"))
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        lines.close()
        lines.join_thread()  # every message is handed to the pipe before the process ends
    sys.exit(code)


def run_workers(space: Any, ref: Any, workers: int, num_classes: int, progress: bool = False,
                allow_change: bool = False) -> Any:
    """N processes share one study (same storage); returns a summary of the whole study.

    The workers send their trial lines to this process, which prints them under one progress
    bar. A worker's error reaches the user once, as one line; Ctrl-C stops every worker, each
    marking its trial interrupted (bounded wait, then the stragglers are terminated).
    """
    import multiprocessing as mp
    import queue
    import signal
    import time

    from .optuna_engine import OptunaSearch, SearchSummary, evaluated, open_study, progress_bar

    threads = threads_per_worker(space.evaluation.threads, workers)
    t0 = time.perf_counter()
    study = open_study(space, ref, allow_change=allow_change)
    before = len(evaluated(study))
    parent = OptunaSearch(space, ref, allow_change=allow_change)
    parent.prepare_strategy(study)  # a one-shot supernet is trained here, with every core, before the workers load it
    references = parent.reference_names()
    ctx = mp.get_context("spawn")
    lines = ctx.Queue()
    procs = [ctx.Process(target=_worker_main, args=(space, ref, i, num_classes, threads, lines, allow_change),
                         daemon=False) for i in range(workers)]
    bar = progress_bar(space, before, references) if progress else None
    errors: list[tuple[int, str]] = []

    def handle(msg: tuple) -> None:
        if msg[0] == "error":
            if msg[2] not in [m for _, m in errors]:
                errors.append((msg[1], msg[2]))
        elif bar is None:
            print(msg[1], file=sys.stderr, flush=True)
        else:
            bar.write(msg[1])
            bar.update(int(msg[2]))

    def show(timeout: float) -> None:
        try:
            handle(lines.get(timeout=timeout))
        except queue.Empty:
            pass

    def drain() -> None:
        while True:
            try:
                handle(lines.get_nowait())
            except queue.Empty:
                return

    # Children start with Ctrl-C blocked (see _worker_main): a Ctrl-C while they start stays pending, here and
    # in them, instead of being lost (an ignored signal is discarded; a blocked one waits).
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        for p in procs:
            p.start()
    except BaseException:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        raise
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # a pending Ctrl-C is raised here
        while any(p.is_alive() for p in procs):
            show(0.5)
        for p in procs:
            p.join()
        drain()
    except KeyboardInterrupt:
        # a second Ctrl-C must not cut the clean-up short; the caller's handler comes back afterwards (a
        # notebook or any in-process caller keeps a working Ctrl-C)
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            print("mfsearch: stopping the workers; each marks its trial interrupted", file=sys.stderr, flush=True)
            deadline = time.monotonic() + 30
            while any(p.is_alive() for p in procs) and time.monotonic() < deadline:
                for p in procs:  # also when the interrupt reached only this process; repeated (see _on_sigint)
                    if p.is_alive() and p.pid:
                        os.kill(p.pid, signal.SIGINT)
                show(1.0)
            for p in procs:
                if p.is_alive():
                    p.terminate()  # its trial is failed as interrupted by the next run (its pid is gone)
                p.join(5)
        finally:
            signal.signal(signal.SIGINT, previous)
        raise
    finally:
        if bar is not None:
            bar.close()
    if errors:
        for _, msg in errors[1:]:
            print(f"mfsearch: error: {msg}", file=sys.stderr)
        code, msg = errors[0]
        raise (InputError if code == 2 else RunError)(msg)
    bad = [i for i, p in enumerate(procs) if p.exitcode != 0]
    if bad:
        raise RunError(f"worker(s) {bad} stopped (exit codes {[procs[i].exitcode for i in bad]}); finished trials "
                       "are kept in the store: run the same command again to continue")
    study = open_study(space, ref)
    after = evaluated(study)
    trials = study.get_trials(deepcopy=False)
    count = lambda st: sum(t.user_attrs.get("status") == st for t in trials)  # noqa: E731
    return SearchSummary(space.name, len(after), len(after) - before, count("duplicate"), count("over_budget"),
                         count("failed"), len(references), time.perf_counter() - t0)


def run_optuna(space: Any, ref: Any, num_classes: int, workers: int, progress: bool = True,
               allow_change: bool = False) -> Any:
    """The Optuna engine (the registry's ``optuna``): ask/tell here, or in ``workers`` processes sharing the study."""
    if workers == 1:
        from .optuna_engine import OptunaSearch

        return OptunaSearch(space, ref, progress=progress, allow_change=allow_change).run(num_classes)
    return run_workers(space, ref, workers, num_classes, progress=progress, allow_change=allow_change)
