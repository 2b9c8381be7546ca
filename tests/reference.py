"""Helpers for the reference vectors in tests/data/reference (released-implementation outputs)."""

from __future__ import annotations

import json
import zlib
from functools import cache
from pathlib import Path

import numpy as np
import torch

REF_DIR = Path(__file__).parent / "data" / "reference"
SIZES = ("508m", "294m", "214m", "151m", "96m", "52m", "26m")


@cache
def reference(size: str) -> dict:
    return json.loads((REF_DIR / f"mobile_former_{size}.json").read_text())


def rule_weights(state_dict_spec: list) -> dict[str, torch.Tensor]:
    """Weights built by the rule of the reference README, under the released names."""
    out = {}
    for name, shape in state_dict_spec:
        rng = np.random.default_rng(zlib.crc32(name.encode("utf-8")))
        shape = tuple(shape)
        if name.endswith("num_batches_tracked"):
            out[name] = torch.tensor(0, dtype=torch.long)
            continue
        if name.endswith("running_var"):
            a = rng.uniform(0.5, 1.5, shape)
        elif name.endswith("running_mean"):
            a = rng.normal(0.0, 0.1, shape)
        elif len(shape) == 1 and name.endswith(".weight"):
            a = 1.0 + rng.normal(0.0, 0.1, shape)
        elif len(shape) == 1:
            a = rng.normal(0.0, 0.1, shape)
        else:
            a = rng.normal(0.0, 1 / np.sqrt(np.prod(shape[1:])), shape)
        out[name] = torch.from_numpy(np.asarray(a, dtype=np.float32))
    return out


def reference_input() -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(0).standard_normal((2, 3, 224, 224)))
