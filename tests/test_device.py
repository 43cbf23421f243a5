import subprocess
import sys

import pytest
import torch

from cnnfit.device import resolve_amp
from cnnfit.errors import CnnfitError


def test_deterministic_keeps_automatic_precision_at_fp32():
    cpu = torch.device("cpu")
    dtype, why = resolve_amp("auto", cpu, deterministic=True)
    assert dtype is None and "deterministic" in why  # bf16 rounding would depend on how batches are split
    assert resolve_amp("bf16", cpu, deterministic=True)[0] is torch.bfloat16  # asked for by name: honoured
    with pytest.raises(CnnfitError, match="amp=fp16 needs a GPU"):
        resolve_amp("fp16", cpu)


_FAULTS = """
import ctypes, resource, torch, torch.nn.functional as F
from cnnfit import models
from cnnfit.device import keep_freed_memory

torch.manual_seed(0)
model = models.create("fastnet", num_classes=10, in_chans=1, width=0.375)
opt = torch.optim.AdamW(model.parameters())
x, y = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))

def faults() -> int:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(4):
        F.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

ctypes.CDLL("libc.so.6").mallopt(-3, 128 << 10)  # glibc's default M_MMAP_THRESHOLD, held fixed: its adaptive
faults()                                           # raise depends on the order of earlier frees
default = faults()
took = keep_freed_memory()
faults()  # memory kept from now on is faulted in once
print(default, faults(), took)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's (Linux)")
def test_keep_freed_memory_ends_the_page_faults_of_reallocated_blocks():
    """Four fastnet training steps in a fresh process: with glibc's defaults the activations each step frees go
    back to the kernel and the next step faults them in again, page by page; after keep_freed_memory() they
    are reused."""
    done = subprocess.run([sys.executable, "-c", _FAULTS], capture_output=True, text=True, check=True)
    default, kept, took = done.stdout.split()
    assert took == "True"
    assert int(default) > 4 * 500, done.stdout
    assert int(kept) * 20 < int(default), done.stdout  # ~108,000 faults before, 0-1,000 after
