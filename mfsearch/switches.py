"""Process-wide switches read from the environment (each is on unless set to 0 / false / no / off)."""

from __future__ import annotations

import os

OFF = ("0", "false", "no", "off")


def switched_on(name: str) -> bool:
    """Whether the switch ``name`` is on: unset, or set to anything but 0 / false / no / off."""
    return os.environ.get(name, "1").strip().lower() not in OFF
