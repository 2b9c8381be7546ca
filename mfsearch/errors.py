"""The project's two kinds of failure a user sees as one line (the CLI maps them to exit codes).

- :class:`InputError` (exit 2): bad input: a malformed or impossible file, field or flag, a
  missing data set, a storage URL that cannot be opened, an unwritable folder. The message names
  the file or field and says what to do.
- :class:`RunError` (exit 1): the input was fine but the run could not go on: the database went
  away, a worker crashed, too many trials failed in a row, the disk filled up. Finished results
  are kept; the message says how to continue.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input: the message is one line naming the file, line, field and rule."""


class RunError(RuntimeError):
    """A run that had to stop: the message is one line saying why and how to continue."""


EXIT_INPUT = 2
EXIT_RUN = 1
EXIT_INTERRUPTED = 130
