"""Evaluation settings that several parts share: the device names a setting may give, and threads per worker."""

from __future__ import annotations

import os
import re

#: a training or latency device: cpu, cuda, cuda:N (training also mps), auto
DEVICE_PATTERN = r"cpu|cuda(:\d+)?|auto"


def valid_device(name: object, mps: bool = False) -> bool:
    """Whether ``name`` is a device a setting may give (``mps`` too where training allows it)."""
    return isinstance(name, str) and re.fullmatch(DEVICE_PATTERN + (r"|mps" if mps else ""), name) is not None


def threads_per_worker(threads: int | None, workers: int) -> int:
    """CPU threads of each of ``workers`` processes: ``evaluation.threads`` when set, else the cores shared out."""
    if threads:
        return threads
    return max(1, (os.cpu_count() or 1) // max(1, workers))
