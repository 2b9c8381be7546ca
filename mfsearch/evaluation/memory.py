"""CPU memory policy for training: keep freed memory in the process instead of giving it back.

Eager CPU training frees and re-allocates the same large activation buffers every step. glibc
serves blocks of 32 MiB and more with fresh ``mmap`` calls and hands them back on ``free``, so a
step at 224x224 touches hundreds of MB of new pages: about 150,000 page faults per Mobile-Former-
294M step (batch 32), 10-15% of its time. With mmap off for heap blocks and a high trim
threshold, those buffers are reused from the heap and a steady-state step faults ~0 pages.

The price is that a training process keeps its peak memory until it exits (the search workers
and the benchmark cells are processes of their own). Set ``MFSEARCH_RETAIN_CPU_MEMORY=0`` to keep
the system's default policy.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

from .._utils import switched_on

ENV = "MFSEARCH_RETAIN_CPU_MEMORY"
# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
_TRIM_THRESHOLD = 1 << 30  # give memory back only when 1 GiB lies free at the top of the heap
_MMAP_THRESHOLD = 1 << 25  # glibc's largest allowed value; irrelevant once mmap is off

_STATE: dict[str, bool] = {}


def retain_freed_cpu_memory() -> bool:
    """Apply the policy once per process (glibc on Linux only); True when it is in force."""
    if "applied" in _STATE:
        return _STATE["applied"]
    applied = False
    if sys.platform.startswith("linux") and switched_on(ENV):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            mallopt = libc.mallopt
        except (OSError, AttributeError):  # not glibc (musl...): leave the allocator alone
            mallopt = None
        if mallopt is not None:
            mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
            applied = all(mallopt(p, v) == 1 for p, v in ((_M_TRIM_THRESHOLD, _TRIM_THRESHOLD),
                                                           (_M_MMAP_THRESHOLD, _MMAP_THRESHOLD),
                                                           (_M_MMAP_MAX, 0)))
    _STATE["applied"] = applied
    return applied
