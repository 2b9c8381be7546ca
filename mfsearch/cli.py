"""The ``mfsearch`` command line: each package registers its own commands (``<package>/commands.py``).

Exit codes: 0 success, 2 bad input, 1 a run that had to stop, 130 interrupted (Ctrl-C).
Every command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import NoReturn

from .errors import EXIT_INPUT, EXIT_INTERRUPTED, EXIT_RUN, InputError, RunError

EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports a process the signal ended

#: the packages whose ``commands.register(subparsers)`` add commands, in the order ``--help`` lists them
COMMANDS = ("models", "evaluation", "search", "proxycheck", "ablation", "deploy")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors: ``PROG: error: WHAT (see PROG --help)``, exit 2 (argparse prints its
    whole usage block first, a dozen lines for some commands); the sub-commands' parsers are of this class too."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_INPUT, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser(packages: Sequence[str] = COMMANDS) -> argparse.ArgumentParser:
    import importlib

    p = _Parser(prog="mfsearch",
                                description="Architecture search and ablation studies around Mobile-Former.")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in packages:
        register: Callable[[argparse._SubParsersAction], None] = importlib.import_module(
            f".{name}.commands", __package__).register
        register(sub)
    return p


#: the libraries every command that does work loads: imported at start-up, with Ctrl-C held (see :func:`_held`)
HEAVY_IMPORTS = ("numpy", "torch")


@contextlib.contextmanager
def _held() -> Iterator[None]:
    """Start-up: Ctrl-C is noted, not raised, until the block ends; then it is raised as KeyboardInterrupt.

    An interrupt that lands inside a library's import (the parser's modules import PyTorch, and PyTorch
    numpy) can be caught there and leave the library half-initialised: the run then goes on and fails
    later with an ``AttributeError`` instead of stopping cleanly. Start-up takes a second or two.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    old = signal.signal(signal.SIGINT, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
    if pending:
        raise KeyboardInterrupt


def _import_heavy(names: Sequence[str] = HEAVY_IMPORTS) -> None:
    """Import ``names`` (those installed) with Ctrl-C held."""
    import importlib

    with _held():
        for name in names:
            try:
                importlib.import_module(name)
            except ImportError:  # the command that needs it says so
                pass


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill PID``, a scheduler's time limit): stopped as Ctrl-C stops a run, workers included."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: exit 0, 2 for bad input, 1 for a run that had to stop, 130 for Ctrl-C, 143 for SIGTERM."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        with _held():  # start-up: see _held
            parser = build_parser()
            args = parser.parse_args(argv)
            if args.version:
                from . import __version__

                print(__version__)
                return 0
            if not getattr(args, "func", None):
                parser.print_help()
                return EXIT_INPUT
            _import_heavy()
        return int(args.func(args) or 0)
    except InputError as e:
        print(f"mfsearch: error: {e}", file=sys.stderr)
        return EXIT_INPUT
    except RunError as e:
        print(f"mfsearch: error: {e}", file=sys.stderr)
        return EXIT_RUN
    except KeyboardInterrupt as e:
        if isinstance(e, Terminated):
            print("mfsearch: terminated; stored results are kept", file=sys.stderr)
            return EXIT_TERMINATED
        print("mfsearch: interrupted; stored results are kept", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away (``mfsearch info ... | head``): a normal end
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    except OSError as e:  # a file system that refuses: name the path, no traceback
        return _os_error(e)


def _os_error(e: OSError) -> int:
    import errno

    where = f"{e.filename}: " if e.filename else ""
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO):
        print(f"mfsearch: error: {where}{e.strerror or e}; finished results are kept: free some space and run "
              "the same command again", file=sys.stderr)
        return EXIT_RUN
    print(f"mfsearch: error: {where}{e.strerror or e}; check the path and its permissions", file=sys.stderr)
    return EXIT_INPUT


if __name__ == "__main__":
    sys.exit(main())
