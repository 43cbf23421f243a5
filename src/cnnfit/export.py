"""Export a trained model for serving without PyTorch: ONNX with a dynamic batch axis, checked against torch."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from cnnfit.errors import CnnfitError


def to_onnx(model: nn.Module, path: str | Path, *, in_chans: int, imgsz: int, check: bool = True) -> Path:
    """Write `path` atomically; with `check`, onnxruntime must reproduce torch's logits (atol 1e-4)."""
    path = Path(path)
    model = model.eval().float()
    x = torch.randn(2, in_chans, imgsz, imgsz)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the exporter's deprecation chatter is not the user's concern
            torch.onnx.export(model, (x,), str(tmp), input_names=["images"], output_names=["logits"],
                              dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, dynamo=True,
                              verbose=False)
        if check:
            _check(model, tmp, x)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _check(model: nn.Module, path: Path, x: torch.Tensor) -> None:
    import onnx
    import onnxruntime as ort

    onnx.checker.check_model(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": x.numpy()})[0]
    with torch.no_grad():
        want = model(x).numpy()
    if not np.allclose(got, want, atol=1e-4, rtol=1e-3):
        raise CnnfitError(f"ONNX export of {type(model).__name__} differs from torch by up to "
                          f"{np.abs(got - want).max():.2e}; please report this model")
