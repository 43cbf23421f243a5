"""One inference path for predict, serve and the export check: uint8 pixels in, probabilities out.

    p = load_predictor("runs/train3")          # best.pt, torch; or load_predictor("runs/train3/model.onnx")
    x = np.stack([p.decode("cat.jpg")])        # (N, C, H, W) uint8, decoded exactly as training decoded
    probs = p.predict(x)                       # (N, K) float32, rows sum to 1 (classify)

The torch backend runs `Pixels`, the module the ONNX export traces, so both backends compute the same graph:
uint8 -> float / 255 -> (x - mean) / std -> model -> / temperature -> softmax."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, get_args

import numpy as np
import torch
from torch import nn

from cnnfit.config import DataConfig
from cnnfit.data import TASKS, decode_image, normalize
from cnnfit.errors import CnnfitError
from cnnfit.models import CHANNELS, MAX_IMGSZ, MIN_IMGSZ, from_checkpoint

BATCH = 256  # images per forward pass: bounds memory for any N; ~3 MB of uint8 at 3x64x64
LAYOUTS = ("nchw", "nhwc")
IMAGENET = "imagenet:"  # load_predictor("imagenet:efficientnet_lite0"): a zoo model's ImageNet head, as shipped


class Pixels(nn.Module):
    """uint8 images -> what `Predictor.predict` returns, normalization and calibration inside the module.

    Input (N, C, H, W) uint8, or (N, H, W, C) with layout="nhwc". Output by task: classify (N, K) softmax
    probabilities at `temperature`; multilabel (N, L) sigmoid probabilities; regress (N, 1) in the target's
    own units (the train split's `target_scale`)."""

    def __init__(self, model: nn.Module, *, mean: list[float], std: list[float], task: str = "classify",
                 temperature: float = 1.0, target_scale: tuple[float, float] | None = None,
                 layout: str = "nchw") -> None:
        super().__init__()
        if layout not in LAYOUTS:
            raise CnnfitError(f"layout={layout!r} is not a layout; choose from: {', '.join(LAYOUTS)}")
        self.model, self.task, self.temperature, self.layout = model, task, float(temperature), layout
        # the same float32 constants and op order as DeviceLoader, so exported and trained inputs match bit for bit
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("inv_std", 1.0 / torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.target_scale = tuple(target_scale or (0.0, 1.0))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The model's raw outputs for uint8 images, before temperature and softmax: (N, K) float32."""
        if self.layout == "nhwc":
            x = x.permute(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
        return self.model(normalize(x, self.mean, self.inv_std)).float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.logits(x)  # (N, K)
        if self.task == "classify":
            return (out / self.temperature).softmax(1)
        if self.task == "multilabel":
            return out.sigmoid()
        mean, std = self.target_scale
        return out.reshape(-1, 1) * std + mean  # (N, 1)


@dataclass
class Predictor:
    """A loaded model and how to feed it. `predict` is safe to call from several threads at once."""

    classes: list[str]
    imgsz: int
    channels: int
    resize: str
    task: str
    source: str
    backend: str  # "torch" or "onnx"
    # model, params, temperature, tta, accuracy, macro_f1, reject; from an .onnx also quantize (none, int8, dynamic)
    info: dict[str, Any] = field(default_factory=dict)
    _run: Callable[[np.ndarray], np.ndarray] = field(default=None, repr=False)  # (n, C, H, W) uint8 -> (n, K)
    module: Pixels | None = field(default=None, repr=False)  # the torch module (embeddings, explanations); else None

    def decode(self, src: str | Path | bytes) -> np.ndarray:
        """An image file or its bytes -> (C, H, W) uint8 at this model's size; raises data.DecodeError."""
        return decode_image(src, self.imgsz, self.channels, self.resize)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """(N, C, H, W) uint8 -> (N, K) float32: class probabilities (classify), label probabilities
        (multilabel), or the value in the target's units (regress, K = 1)."""
        want = (self.channels, self.imgsz, self.imgsz)
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 \
                or images.shape[1:] != want or not len(images):
            got = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
            raise CnnfitError(f"predict takes (N, {', '.join(map(str, want))}) uint8 images with N >= 1, got {got}; "
                              "decode files with Predictor.decode")
        images = np.ascontiguousarray(images)
        return np.concatenate([self._run(images[i:i + BATCH]) for i in range(0, len(images), BATCH)])

    def logits(self, images: np.ndarray) -> np.ndarray:
        """(N, C, H, W) uint8 -> (N, K) float32 logits before temperature and softmax (torch backend only: an
        exported graph ends in probabilities)."""
        if self.module is None:
            raise CnnfitError(f"logits need the run directory; {self.source} gives probabilities only")
        self.predict(images[:1])  # the same checks of the input
        with torch.inference_mode():
            device = self.module.mean.device
            return np.concatenate([self.module.logits(torch.from_numpy(np.ascontiguousarray(images[i:i + BATCH]))
                                                      .to(device)).cpu().numpy() for i in range(0, len(images), BATCH)])


def load_predictor(path: str | Path, *, device: str = "cpu", tta: str | None = None,
                   trust_code: bool = False) -> Predictor:
    """A run directory (its best.pt, torch backend; the run's calibration and eval.tta unless `tta` is given)
    or an exported .onnx file (onnxruntime backend; everything it needs read from its metadata, checked).
    `trust_code`: import the pkg.mod:Class model a best.pt names (it runs that module's code)."""
    if str(path).startswith(IMAGENET):
        return _imagenet_predictor(str(path).removeprefix(IMAGENET), device=device, tta=tta)
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        return _onnx_predictor(path, device=device, tta=tta)
    return _torch_predictor(path, device=device, tta=tta, trust_code=trust_code)


def pixels_module(ckpt: dict, device: torch.device | str = "cpu", *, tta: str = "none", layout: str = "nchw",
                  trust_code: bool = False, source: str = "the checkpoint") -> Pixels:
    """The run's model as a uint8 -> output `Pixels` module, in eval mode, with its calibration temperature;
    `trust_code` and `source` as in `models.from_checkpoint`."""
    from cnnfit.eval.tta import TTA

    task = ckpt.get("task", "classify")  # checkpoints from before other tasks existed are classifiers
    model = from_checkpoint(ckpt, torch.device(device), trust_code=trust_code, source=source)
    if tta != "none":
        shift = (ckpt.get("config") or {}).get("eval", {}).get("tta_shift")  # older runs: the default
        model = TTA(model, tta, task, shift)
    temperature = (ckpt.get("calibration") or {}).get("temperature", 1.0) if task == "classify" else 1.0
    return Pixels(model, mean=ckpt["mean"], std=ckpt["std"], task=task, temperature=temperature,
                  target_scale=ckpt.get("target_scale"), layout=layout).to(device).eval()


def run_metrics(run_dir: Path) -> dict[str, float | None]:
    """Test accuracy and macro F1 from a run's metrics.json, None where absent (another task, no eval yet)."""
    try:
        m = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        m = {}
    macro = m.get("macro")
    return {"accuracy": m.get("accuracy"), "macro_f1": macro.get("f1") if isinstance(macro, dict) else None}


def _torch_predictor(run_dir: Path, *, device: str, tta: str | None, trust_code: bool) -> Predictor:
    from cnnfit.engine import load_checkpoint
    from cnnfit.device import pick_device
    from cnnfit.eval.tta import MODES

    if not (run_dir / "best.pt").is_file():
        raise CnnfitError(f"'{run_dir}' is not a finished run directory (no best.pt) or an exported .onnx file; "
                          "pass e.g. runs/train or runs/train/model.onnx")
    ckpt = load_checkpoint(run_dir / "best.pt")
    tta = tta or (ckpt.get("config") or {}).get("eval", {}).get("tta", "none")
    if tta not in MODES:
        raise CnnfitError(f"tta={tta!r} is not a mode; choose from: {', '.join(MODES)}")
    dev = pick_device(device)
    module = pixels_module(ckpt, dev, tta=tta, trust_code=trust_code, source=str(run_dir / "best.pt"))

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():  # no autograd state: concurrent calls share nothing mutable
            return module(torch.from_numpy(x).to(dev)).cpu().numpy()

    info = {"model": ckpt["model"], "params": sum(p.numel() for p in module.model.parameters()),
            "temperature": module.temperature, "tta": tta, "reject": ckpt.get("reject"), **run_metrics(run_dir)}
    return Predictor(classes=list(ckpt["classes"]), imgsz=int(ckpt["imgsz"]), channels=int(ckpt["channels"]),
                     resize=ckpt["resize"], task=module.task, source=str(run_dir), backend="torch", info=info, _run=run,
                     module=module)


def _imagenet_predictor(name: str, *, device: str, tta: str | None) -> Predictor:
    """A zoo model with its ImageNet weights and head, untrained by cnnfit: the 1000 ImageNet-1k classes, decoded
    and normalized as the weights were trained (so a user sees the weights work before fine-tuning)."""
    from cnnfit.device import pick_device
    from cnnfit.models import create, imagenet_classes, imagenet_weights

    if tta not in (None, "none"):
        raise CnnfitError(f"tta={tta} is for runs; predict with imagenet:{name} without tta")
    state_dict, meta = imagenet_weights(name)
    dev = pick_device(device)
    model = create(name, num_classes=meta["num_classes"], in_chans=meta["channels"], imgsz=meta["imgsz"])
    model.load_state_dict(state_dict)
    module = Pixels(model, mean=meta["mean"], std=meta["std"]).to(dev).eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(x).to(dev)).cpu().numpy()

    info = {"model": name, "weights": meta["source"], "imagenet_top1": meta["top1"], "tta": "none"}
    return Predictor(classes=imagenet_classes(), imgsz=meta["imgsz"], channels=meta["channels"], resize="center",
                     task="classify", source=IMAGENET + name, backend="torch", info=info, _run=run)


def _onnx_predictor(path: Path, *, device: str, tta: str | None) -> Predictor:
    import onnxruntime as ort

    if tta not in (None, "none"):
        raise CnnfitError(f"tta={tta} is not in an exported ONNX graph; predict with the run directory for TTA")
    if not path.is_file():
        raise CnnfitError(f"'{path}' not found; export one with: cnnfit export RUN")
    try:
        options = ort.SessionOptions()
        # no busy-waiting between calls: spinning pool threads take the CPU a server's event loop needs
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        cuda = device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers()
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own types for a damaged or foreign file
        raise CnnfitError(f"'{path}' cannot be loaded by onnxruntime ({type(exc).__name__}); re-export it") from None
    meta = session.get_modelmeta().custom_metadata_map
    missing = [k for k in ("classes", "imgsz", "channels", "resize") if k not in meta]
    if missing:
        raise CnnfitError(f"'{path}' has no cnnfit metadata ({', '.join(missing)}); export it with: cnnfit export RUN")
    m = _onnx_meta(meta, session, path)
    name = session.get_inputs()[0].name
    nhwc = m["layout"] == "nhwc"

    def run(x: np.ndarray) -> np.ndarray:  # InferenceSession.run is thread-safe
        return session.run(None, {name: x.transpose(0, 2, 3, 1) if nhwc else x})[0]

    info = {"model": meta.get("model"), "params": m["params"], "temperature": m["temperature"], "tta": "none",
            "accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "reject": m["reject"], "quantize": m["quantize"]}
    return Predictor(classes=m["classes"], imgsz=m["imgsz"], channels=m["channels"], resize=m["resize"],
                     task=m["task"], source=str(path), backend="onnx", info=info, _run=run)


_RESIZES = get_args(DataConfig.model_fields["resize"].annotation)  # squash, crop, pad: the choices live in config
_QUANTIZED = ("none", "int8", "dynamic")  # quantize.QUANTIZE and none: a sibling layer, so spelt here, not imported


def _onnx_meta(meta: dict[str, str], session: Any, path: Path) -> dict[str, Any]:
    """The metadata of a .onnx, parsed and checked against its own graph: a file's numbers size every decode, so
    each is in range before it is used (MIN_IMGSZ..MAX_IMGSZ px, CHANNELS, one class name per output column)."""
    try:
        m = {"imgsz": int(meta["imgsz"]), "channels": int(meta["channels"]), "resize": meta["resize"],
             "classes": json.loads(meta["classes"]), "task": meta.get("task", "classify"),
             "layout": meta.get("layout", "nchw"), "params": int(meta["params"]) if "params" in meta else None,
             "temperature": float(meta.get("temperature", 1.0)), "accuracy": _float(meta.get("accuracy")),
             "macro_f1": _float(meta.get("macro_f1")), "reject": _reject_meta(meta.get("reject")),
             "quantize": meta.get("quantize", "none")}
    except (TypeError, ValueError, RecursionError) as exc:  # int(), float() and json.loads on the file's text
        raise CnnfitError(f"'{path}' has unreadable cnnfit metadata ({str(exc).splitlines()[0][:120]}); "
                          "re-export it with: cnnfit export RUN") from None
    inputs, outputs = session.get_inputs()[0].shape, session.get_outputs()[0].shape
    size, c, classes = m["imgsz"], m["channels"], m["classes"]
    width = len(classes) if isinstance(classes, list) else None
    want_in = [c, size, size] if m["layout"] == "nchw" else [size, size, c]
    checks = [(MIN_IMGSZ <= size <= MAX_IMGSZ, f"imgsz={size} is outside {MIN_IMGSZ}..{MAX_IMGSZ} px"),
              (c in CHANNELS, f"channels={c} is not one of {CHANNELS}"),
              (m["resize"] in _RESIZES, f"resize={m['resize']!r} is not one of {', '.join(_RESIZES)}"),
              (m["task"] in TASKS, f"task={m['task']!r} is not one of {', '.join(TASKS)}"),
              (m["layout"] in LAYOUTS, f"layout={m['layout']!r} is not one of {', '.join(LAYOUTS)}"),
              (isinstance(classes, list) and classes and all(isinstance(k, str) for k in classes),
               "classes is not a JSON list of names"),
              (len(outputs) == 2 and outputs[1] == width, f"the output is {outputs}, not one column per class"),
              (len(inputs) == 4 and list(inputs[1:]) == want_in,
               f"the input is {inputs}, not (N, {', '.join(map(str, want_in))})"),
              (math.isfinite(m["temperature"]) and m["temperature"] > 0, "temperature is not a positive number"),
              (m["quantize"] in _QUANTIZED, f"quantize={m['quantize'][:20]!r} is not one of {', '.join(_QUANTIZED)}")]
    failed = [what for ok, what in checks if not ok]
    if failed:
        raise CnnfitError(f"'{path}' has cnnfit metadata that does not fit: {failed[0]}; re-export it with: "
                          "cnnfit export RUN")
    return m


def _reject_meta(text: str | None) -> dict[str, Any] | None:
    """The reject threshold an export carries (JSON: score, threshold, targets, val figures), or None."""
    if not text:
        return None
    fitted = json.loads(text)
    if not isinstance(fitted, dict) or fitted.get("score") != "maxprob" or not isinstance(fitted.get("threshold"),
                                                                                             (int, float)):
        raise ValueError("reject is not a maxprob threshold")
    return fitted


def _float(value: str | None) -> float | None:
    return None if value in (None, "", "None", "null") else float(value)


__all__ = ["BATCH", "LAYOUTS", "Pixels", "Predictor", "load_predictor", "pixels_module", "run_metrics"]
