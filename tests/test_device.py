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
