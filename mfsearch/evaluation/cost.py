"""What a proxy run costs a machine: CPU seconds, and short probes that estimate a run before it is made.

Used by ``mfsearch ablate --plan`` and ``mfsearch proxy-check --sweep --estimate``. CPU time is process
user + system time: what a run costs whatever else runs on the machine (the wall clock on a shared
machine is longer). The probes run in a spawned process of their own, so setting its thread count
touches nothing else.
"""

from __future__ import annotations


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far (all its threads)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def probe_run(cfg_dict: dict, ev_dict: dict, steps: int, warmup: int, threads: int = 1) -> dict[str, float]:
    """CPU seconds of one training step, one BatchNorm recalibration batch and one validation batch of a config.

    ``warmup`` untimed training steps, then ``steps`` timed ones and ``steps`` forward passes of a
    training batch (recalibration), then one validation batch after an untimed one; random inputs,
    seeded, on ``threads`` threads.
    """
    import torch

    from ..models import MobileFormer, MobileFormerConfig
    from .settings import Evaluation
    from .train import TrainStep, seed_everything

    ev = Evaluation(**ev_dict)
    torch.set_num_threads(threads)
    seed_everything(0)
    model = MobileFormer(MobileFormerConfig.from_dict(cfg_dict).replace(num_classes=10))
    trainer = TrainStep(model, ev, torch.device("cpu"), total=steps + warmup, warmup=1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(ev.batch_size, 3, ev.image_size, ev.image_size, generator=g)
    y = torch.randint(0, 10, (ev.batch_size,), generator=g)
    for _ in range(warmup):
        trainer.step(x, y)
    c0 = cpu_seconds()
    for _ in range(steps):
        trainer.step(x, y)
    step_s = (cpu_seconds() - c0) / steps
    with torch.no_grad():
        xc = x.contiguous(memory_format=torch.channels_last)
        c0 = cpu_seconds()
        for _ in range(steps):
            trainer.model(xc)
        recal_s = (cpu_seconds() - c0) / steps
        trainer.model.eval()
        xe = torch.randn(ev.eval_batch_size, 3, ev.image_size, ev.image_size,
                         generator=g).contiguous(memory_format=torch.channels_last)
        trainer.model(xe)
        c0 = cpu_seconds()
        trainer.model(xe)
        val_s = cpu_seconds() - c0
    return {"step_s": step_s, "recal_batch_s": recal_s, "val_batch_s": val_s}


def probe_data(ev_dict: dict, threads: int = 1) -> float:
    """CPU seconds to load and prepare the data of one evaluation setting (from nothing cached)."""
    import torch

    from .settings import Evaluation
    from .train import _DATA_CACHE, proxy_data

    torch.set_num_threads(threads)
    _DATA_CACHE.clear()
    c0 = cpu_seconds()
    proxy_data(Evaluation(**ev_dict))
    out = cpu_seconds() - c0
    _DATA_CACHE.clear()
    return out
