"""Seeded random Mobile-Former configs covering every knob (tests, benchmarks, smoke searches)."""

from __future__ import annotations

import random

from .config import ACTIVATIONS, ARRANGEMENTS, BRIDGES, PROJECTIONS, BlockConfig, MobileFormerConfig


def random_config(seed: int, max_blocks: int = 8, num_classes: int = 1000) -> MobileFormerConfig:
    """A valid random config; every knob value of docs/architecture.md §5 is reachable.

    Deterministic in ``seed``; no rejection loop: choices are made so every rule holds.
    """
    r = random.Random(seed)
    groups = r.choice((1, 1, 1, 2, 4))
    heads = r.choice((1, 2, 4))
    unit = max(4, groups, heads)
    bridges = r.choice(BRIDGES)
    former = r.random() < 0.8
    activation = r.choice(ACTIVATIONS)
    m = r.randint(1, 12)
    if bridges == "none" and not former and activation != "dyrelu" and r.random() < 0.5:
        m = 0
    former_heads = r.choice((1, 2, 4, 8))
    d = former_heads * r.randint(2, 12) * 4
    width_mult = r.choice((1.0, 1.0, 0.75, 1.25, 0.5))
    stem = unit * r.randint(1, 4)
    blocks = [BlockConfig("lite", unit * r.randint(1, 5), r.randint(1, 3), r.choice((1, 2)))]
    for _ in range(r.randint(1, max_blocks - 1)):
        if r.random() < 0.4:
            blocks.append(BlockConfig("mf", unit * r.randint(1, 16), r.randint(1, 6), 2, r.randint(1, 6)))
        else:
            e1 = r.choice((1, 2, 3, 4, 6, 2.5))
            # hidden = round(C_in * e1) must stay divisible by groups: integer e1 with widths % unit.
            if groups > 1:
                e1 = int(e1)
            blocks.append(BlockConfig("mf", unit * r.randint(1, 16), e1, 1))
    return MobileFormerConfig(
        stem=stem, blocks=tuple(blocks), head=r.choice((64, 128, 256, 1024, 1280)),
        num_tokens=m, token_dim=d, num_classes=num_classes, dropout=r.choice((0.0, 0.1, 0.2)),
        activation=activation, bridges=bridges, projections=r.choice(PROJECTIONS), bridge_heads=heads,
        gate=r.random() < 0.7, former=former, ffn=r.random() < 0.7, former_heads=former_heads,
        arrangement=r.choice(ARRANGEMENTS), groups=groups, width_mult=width_mult, name=f"random{seed}",
        # knobs added later draw last, so every seed keeps the values it had before
        final_bridge_projections=r.choice(PROJECTIONS), former_gate=r.random() < 0.3, f2m_gate=r.random() < 0.3,
    )
