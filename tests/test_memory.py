"""The CPU memory policy of training processes: freed buffers are reused, not faulted in again."""

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import resource, torch
    from mfsearch.evaluation.train import TrainStep
    from mfsearch.models import MobileFormer, get_config
    from mfsearch.evaluation.settings import Evaluation

    TrainStep(MobileFormer(get_config("mobile_former_26m").replace(num_classes=10)), Evaluation(device="cpu"),
              torch.device("cpu"), 10, 1)
    torch.ones(1 << 24).sum()  # a 64 MiB buffer, allocated and freed once before counting
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        torch.ones(1 << 24).sum()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
""")


def _faults(retain: str) -> int:
    env = {**os.environ, "MFSEARCH_RETAIN_CPU_MEMORY": retain}
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300,
                         check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the policy is glibc's mallopt")
def test_a_cpu_train_step_makes_freed_buffers_reusable():
    pages = (1 << 26) // os.sysconf("SC_PAGE_SIZE")  # pages of one 64 MiB buffer
    default = _faults("0")
    retained = _faults("1")
    assert default >= 3 * pages * 0.9, default  # the system policy maps every new buffer afresh
    assert retained < pages * 0.1, retained  # TrainStep's policy reuses the freed one
