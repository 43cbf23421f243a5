"""int8 ONNX from an fp32 export, with onnxruntime's quantization tools; `export` calls it for quantize=int8 and
quantize=dynamic and checks the result against torch with `int8_parity`.

    quantize_onnx("model.onnx", "model.int8.onnx", mode="int8", calibration=train_images)  # (N, C, H, W) uint8
    parity = int8_parity(want, got, labels, agreement=0.97, drop=1.0)  # raises CnnfitError when missed

int8 (static): int8 weights and uint8 activations, the activation ranges measured once on training images fed as
the graph takes them (uint8 pixels). dynamic: int8 weights, activation ranges measured on every call (no
calibration; onnxruntime's integer convs make it slower than fp32 on CPU: for when static does not apply).
Either way the graph keeps its contract: uint8 "images" in, float32 "probs" out; the uint8 -> float normalization in
front of the first conv and everything behind the last conv/matmul (temperature, softmax) stay in float."""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnfit.errors import CnnfitError

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

QUANTIZE = ("int8", "dynamic")
# a few hundred: every class of a 10-class set seen ~25 times, in 4 s (fastnet, 28 px) to 16 s (lite0, 224 px) of
# quantizing on 2 busy cores; 32, 64, 256 and 1024 images all gave fastnet 0.8711-0.8732 test accuracy on
# Fashion-MNIST (fp32 0.8714), and 32-245 gave lite0 the hymenoptera accuracy within one photo of fp32
CALIBRATION_IMAGES = 256
CALIBRATION_BATCH = 32  # images per calibration forward pass: bounds the memory of the recorded activations
INT8_AGREEMENT = 0.97  # top-1 agreement with torch on val images; int8 fastnet and lite0 reach 0.99-0.995
INT8_DROP = 1.0  # percentage points of val accuracy int8 may lose against torch
# QDQ with per-channel weights (bench_quantize.py --variants): onnxruntime fuses the QDQ pairs into QLinearConv, at
# batch 32 as fast as QOperator or faster (fastnet 2.6x fp32 against 1.8x, lite0 1.9x against 1.8x), and the format
# onnxruntime recommends since 1.11; per-tensor scales cost lite0 (depthwise convs) 1.3 points on hymenoptera
QUANT_FORMAT = "QDQ"
PER_CHANNEL = True
# MinMax, Entropy or Percentile (onnxruntime's CalibrationMethod): Entropy gave no better accuracy than MinMax on
# fastnet or lite0 and took 3x the calibration time on lite0 (73 s against 24 s; bench_quantize.py --variants)
CALIBRATE = "MinMax"
CALIBRATE_METHODS = ("MinMax", "Entropy", "Percentile")
# the ops whose weights carry the FLOPs: everything before the first and after the last stays float
_WEIGHTED = ("Conv", "ConvTranspose", "MatMul", "Gemm")


@dataclass(frozen=True)
class Quantization:
    """How to quantize an export and what the int8 file must reach: `mode` int8 (static) or dynamic;
    `calibration_images` training images for int8's activation ranges; `agreement` the least top-1 agreement with
    torch on val and `drop` the most val accuracy lost, in percentage points."""

    mode: str
    calibration_images: int = CALIBRATION_IMAGES
    agreement: float = INT8_AGREEMENT
    drop: float = INT8_DROP

    def __post_init__(self) -> None:
        if self.mode not in QUANTIZE:
            raise CnnfitError(f"quantize={self.mode!r} is not a quantization; choose from: {', '.join(QUANTIZE)}")
        if self.calibration_images < 1:
            raise CnnfitError(f"calibration_images={self.calibration_images} must be 1 or more; the default is "
                              f"{CALIBRATION_IMAGES}")
        if not 0.0 <= self.agreement <= 1.0:
            raise CnnfitError(f"int8_agreement={self.agreement} is a fraction of images; use 0..1, e.g. "
                              f"int8_agreement={INT8_AGREEMENT}")
        if not -100.0 <= self.drop <= 100.0:
            raise CnnfitError(f"int8_drop={self.drop} is in percentage points; use -100..100, e.g. "
                              f"int8_drop={INT8_DROP}")


class _Calibration:
    """onnxruntime's CalibrationDataReader protocol (`get_next`: a dict of inputs, None at the end) over uint8
    images in the graph's own layout, `batch` at a time. `equal`: whole batches only (the tail is left out), as
    the Entropy and Percentile calibrators stack every batch's outputs into one array."""

    def __init__(self, images: np.ndarray, input_name: str, *, batch: int = CALIBRATION_BATCH,
                 equal: bool = False) -> None:
        self.batch = min(batch, len(images))
        self.images = images[:len(images) - len(images) % self.batch] if equal else images
        self.input_name, self.start = input_name, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.start >= len(self.images):
            return None
        batch = self.images[self.start:self.start + self.batch]  # (b, C, H, W) or (b, H, W, C) uint8
        self.start += self.batch
        return {self.input_name: batch}


def quantize_onnx(src: str | Path, dst: str | Path, *, mode: str, calibration: np.ndarray | None = None,
                  quant_format: str = QUANT_FORMAT, per_channel: bool = PER_CHANNEL, calibrate: str = CALIBRATE,
                  reduce_range: bool = False, float_stem: bool = False) -> dict[str, Any]:
    """Write `src` (an fp32 .onnx) quantized to `dst`: mode "int8" calibrates on `calibration`, uint8 images as the
    graph's input takes them; "dynamic" needs none. `float_stem` keeps the first conv float as well. Returns the
    settings, for the file's metadata. metadata_props of `src` are not carried over: the caller sets them."""
    import onnx
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType, quant_pre_process,
                                          quantize_dynamic, quantize_static)

    if mode not in QUANTIZE:
        raise CnnfitError(f"quantize={mode!r} is not a quantization; choose from: {', '.join(QUANTIZE)}")
    if mode == "int8" and (calibration is None or not len(calibration)):
        raise CnnfitError("quantize=int8 needs calibration images; pass training images or use quantize=dynamic")
    if calibrate not in CALIBRATE_METHODS or quant_format not in ("QDQ", "QOperator"):
        raise CnnfitError(f"calibrate={calibrate!r}, quant_format={quant_format!r}: choose calibrate from "
                          f"{', '.join(CALIBRATE_METHODS)} and quant_format from QDQ, QOperator")
    with tempfile.TemporaryDirectory(prefix="cnnfit-quantize-") as work, _quiet_onnxruntime():
        prepared = Path(work) / "prepared.onnx"
        # shape inference and onnxruntime's basic graph fusions (conv+BN) first, as onnxruntime's guide asks;
        # its symbolic shape pass fails on opset-18 ReduceMax (fastnet's global max pool), ONNX's own pass suffices
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        model = onnx.load(str(prepared))
        keep = _float_nodes(model, float_stem)
        if mode == "dynamic":
            # weights int8; uint8 activations scaled per call (onnxruntime's CPU kernels take U8S8)
            quantize_dynamic(str(prepared), str(dst), per_channel=per_channel, reduce_range=reduce_range,
                             weight_type=QuantType.QInt8, nodes_to_exclude=keep)
            return {"mode": mode, "per_channel": per_channel, "weights": "int8", "activations": "uint8 per call"}
        # U8S8: uint8 activations, int8 weights, the pairing onnxruntime's x86 kernels (VNNI or not) run fastest
        reader = _Calibration(calibration, model.graph.input[0].name, equal=calibrate != "MinMax")
        quantize_static(str(prepared), str(dst), reader,
                        quant_format=QuantFormat[quant_format], per_channel=per_channel, reduce_range=reduce_range,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod[calibrate], nodes_to_exclude=keep)
    log.debug("quantized %s: %d nodes kept in float", src, len(keep))
    return {"mode": mode, "format": quant_format, "per_channel": per_channel, "calibrate": calibrate,
            "float_stem": float_stem,
            "calibration_images": len(reader.images), "weights": "int8", "activations": "uint8"}


@contextlib.contextmanager
def _quiet_onnxruntime() -> Iterator[None]:
    """onnxruntime.quantization logs through the root logger (a hint per call, a line per tensor left float): its
    records are dropped while a quantization runs, so a caller's log shows cnnfit's own line only."""
    def quiet(record: logging.LogRecord) -> bool:
        return "onnxruntime" not in record.pathname

    root = logging.getLogger()
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


def _float_nodes(model: Any, float_stem: bool) -> list[str]:
    """Names of the nodes that stay float: those before the first weighted op (uint8 -> float, mean/std), after the
    last one (temperature, softmax), and with `float_stem` the first one itself. ONNX lists nodes in topological
    order."""
    nodes = list(model.graph.node)
    weighted = [i for i, n in enumerate(nodes) if n.op_type in _WEIGHTED]
    if len(weighted) < 1 + float_stem:
        raise CnnfitError("the graph has no conv, matmul or gemm to quantize; export without quantize=")
    first = weighted[1] if float_stem else weighted[0]
    return [n.name for i, n in enumerate(nodes) if i < first or i > weighted[-1]]


def int8_parity(want: np.ndarray, got: np.ndarray, labels: np.ndarray, *, agreement: float, drop: float,
                what: str = "the quantized graph") -> dict[str, Any]:
    """Top-1 agreement of `got` (the quantized graph's (N, K) probabilities) with `want` (torch's), each one's
    accuracy against `labels` (N,) and the drop in percentage points; raises CnnfitError, naming `what`, the
    figures and the fixes, below `agreement` or beyond `drop`."""
    import numpy as np

    acc_torch, acc = float((want.argmax(1) == labels).mean()), float((got.argmax(1) == labels).mean())
    figures = {"agreement": float((got.argmax(1) == want.argmax(1)).mean()),
               "max_abs_diff": float(np.abs(got.astype(np.float64) - want).max()),
               "accuracy_torch": acc_torch, "accuracy": acc, "drop": round(100 * (acc_torch - acc), 4),
               "limits": {"agreement": agreement, "drop": drop}}
    if figures["agreement"] < agreement or figures["drop"] > drop:
        raise CnnfitError(f"{what} misses its tolerance: top-1 agreement with "
                          f"torch {figures['agreement']:.2%} (needs >= {agreement:.2%}), accuracy {acc:.2%} vs torch "
                          f"{acc_torch:.2%} (drop {figures['drop']:.2f} points, limit {drop:g}); nothing was written; "
                          "try more calibration_images=, quantize=dynamic, or a looser int8_agreement= / int8_drop=")
    return figures


__all__ = ["CALIBRATE", "CALIBRATE_METHODS", "CALIBRATION_IMAGES", "INT8_AGREEMENT", "INT8_DROP", "PER_CHANNEL",
           "QUANTIZE", "QUANT_FORMAT", "Quantization", "int8_parity", "quantize_onnx"]
