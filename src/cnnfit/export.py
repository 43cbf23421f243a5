"""Export a run for serving without cnnfit: ONNX (or TorchScript) that takes raw uint8 pixels and returns
probabilities, checked against the torch predictor on the run's own validation images; or the weights as
safetensors with a JSON description that rebuilds the model.

ONNX contract (model.onnx): input "images", uint8 (N, C, H, W) at the trained size (or (N, H, W, C) with
layout="nhwc"), pixels as `Predictor.decode` gives them; output "probs", float32 (N, K), softmax at the run's
calibration temperature; N is dynamic. Normalization (mean/std) happens inside the graph. metadata_props hold
classes (JSON), imgsz, channels, resize, task, mean, std, temperature, model, params, layout, the cnnfit version,
the run's test accuracy / macro F1 and the parity figures.

quantize=int8 (model.int8.onnx) or quantize=dynamic (model.dynamic.onnx) keep that contract with int8 weights inside
(see cnnfit.quantize); their metadata adds "quantize" and "quantization", and their parity check is top-1 agreement
and val accuracy drop against torch instead of MAX_DIFF."""

from __future__ import annotations

import json
import math
import logging
import tempfile
import time
import warnings
from importlib.metadata import version
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from cnnfit.data.cache import open_dataset
from cnnfit.engine import load_checkpoint
from cnnfit.errors import CnnfitError
from cnnfit.files import atomic_path, write_atomic
from cnnfit.models import from_checkpoint
from cnnfit.predictor import BATCH, load_predictor, pixels_module, run_metrics
from cnnfit.quantize import CALIBRATION_IMAGES, INT8_AGREEMENT, INT8_DROP, Quantization, int8_parity, quantize_onnx

log = logging.getLogger(__name__)

FORMATS = ("onnx", "torchscript", "safetensors")
MAX_DIFF = 1e-4  # largest |p_exported - p_torch| accepted, in probability units
MIN_AGREEMENT = 1.0  # fraction of images whose top-1 class must agree
CHECK_IMAGES = 2000  # val images the parity check runs on by default (~1 s for a small CNN on CPU)


def export(run: str | Path, *, format: str = "onnx", out: Path | None = None,
           check_images: int | None = CHECK_IMAGES, layout: str = "nchw", trust_code: bool = False,
           quantize: str | None = None, calibration_images: int = CALIBRATION_IMAGES,
           int8_agreement: float = INT8_AGREEMENT, int8_drop: float = INT8_DROP) -> dict[str, Any]:
    """Export RUN's best.pt as `format` (onnx, torchscript, safetensors) to `out` (default RUN/model.<ext>).

    onnx and torchscript are checked against the torch predictor on up to `check_images` val images (None: all);
    beyond MAX_DIFF or MIN_AGREEMENT it raises CnnfitError and leaves no file. The record (path, bytes, parity,
    seconds) is returned and stored under its format in RUN/export.json. `trust_code`: import the pkg.mod:Class
    model best.pt names (it runs that module's code).

    `quantize` (onnx only): "int8" calibrates on `calibration_images` training images, "dynamic" needs none; the
    file (default RUN/model.<quantize>.onnx, record "onnx-<quantize>") must agree with torch on >= `int8_agreement`
    of the val images and lose <= `int8_drop` points of their accuracy."""
    t0 = time.perf_counter()
    if format not in FORMATS:
        raise CnnfitError(f"format={format!r} is not an export format; choose from: {', '.join(FORMATS)}")
    quant = (None if quantize in (None, "none")
             else Quantization(quantize, calibration_images, int8_agreement, int8_drop))
    if quant and format != "onnx":
        raise CnnfitError(f"quantize={quantize} is for format=onnx; {format} keeps float weights: drop quantize= or "
                          "use format=onnx")
    run_dir = Path(run)
    if not (run_dir / "best.pt").is_file():
        raise CnnfitError(f"'{run}' is not a finished run directory (no best.pt); pass e.g. runs/train")
    ckpt = load_checkpoint(run_dir / "best.pt")
    task = ckpt.get("task", "classify")
    if format != "safetensors" and task != "classify":
        raise CnnfitError(f"format={format} exports classify runs; this run is {task}: use format=safetensors")
    ext = {"onnx": ".onnx", "torchscript": ".pt", "safetensors": ".safetensors"}[format]
    path = Path(out) if out else run_dir / f"model{'.' + quant.mode if quant else ''}{ext}"
    if path.suffix != ext:
        raise CnnfitError(f"out={path} does not end in {ext}; format={format} writes a {ext} file")
    path.parent.mkdir(parents=True, exist_ok=True)
    written = (_safetensors(ckpt, path) if format == "safetensors"
               else _graph(format, run_dir, ckpt, path, check_images, layout, trust_code, quant))
    record = {"format": format, **written, "seconds": round(time.perf_counter() - t0, 3),
              "exported": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    _record(run_dir, f"{format}-{quant.mode}" if quant else format, record)
    line = f"exported {path} ({sum(record['bytes'].values()) / 1e6:.2f} MB)"
    if "parity" in record:
        p = record["parity"]
        line += (f"; {p['backend']} vs torch on {p['images']} {p['split']} images: max |dp| {p['max_abs_diff']:.2e}, "
                 f"top-1 agreement {p['agreement']:.2%}")
        if quant:
            line += f", accuracy {p['accuracy']:.2%} vs {p['accuracy_torch']:.2%} (drop {p['drop']:.2f} points)"
    log.info(line)
    return record


def _graph(format: str, run_dir: Path, ckpt: dict, path: Path, check_images: int | None, layout: str,
           trust_code: bool, quant: Quantization | None = None) -> dict[str, Any]:
    """ONNX or TorchScript of the uint8 -> probs module, written to a temporary name, checked, then renamed."""
    module = pixels_module(ckpt, "cpu", layout=layout, trust_code=trust_code, source=str(run_dir / "best.pt"))
    data = _run_data(run_dir, ckpt)
    images, labels, split = _check_images(data, ckpt, check_images)  # (N, C, H, W) uint8, (N,) or None
    if quant and labels is None:
        why = data[2] or "split.json lists no val or test images"
        raise CnnfitError(f"quantize={quant.mode} checks accuracy on the run's val images and calibrates on its "
                          f"training images, which cannot be read ({why}); restore the data the run trained on")
    example = torch.from_numpy(images[:2] if len(images) >= 2 else np.repeat(images[:1], 2, axis=0))
    if layout == "nhwc":
        example = example.permute(0, 2, 3, 1).contiguous()  # (2, H, W, C)
    reference = load_predictor(run_dir, tta="none", trust_code=trust_code).predict
    settings = None
    with atomic_path(path) as tmp:  # checked before it takes the name: a failed check leaves no file
        if format == "onnx":
            calibration = _calibration_images(data, layout, quant.calibration_images) if quant else None
            settings = _onnx(module, example, tmp, run_dir, ckpt, layout, quant, calibration)
            candidate, backend = load_predictor(tmp).predict, "onnxruntime"
        else:
            candidate, backend = _torchscript(module, example, tmp, ckpt, layout), "torchscript"
        want, got = reference(images), candidate(images)  # (N, K) each
        parity = {"backend": backend, "split": split, "images": len(images)}
        if quant:
            parity.update(int8_parity(want, got, labels, agreement=quant.agreement, drop=quant.drop,
                                      what=f"{quant.mode} export of {run_dir} on {len(images)} {split} images"))
        else:
            parity.update(max_abs_diff=float(np.abs(got.astype(np.float64) - want).max()),
                          agreement=float((got.argmax(1) == want.argmax(1)).mean()))
            if parity["max_abs_diff"] > MAX_DIFF or parity["agreement"] < MIN_AGREEMENT:
                raise CnnfitError(f"{backend} export of {run_dir} differs from torch: max |dp| "
                                  f"{parity['max_abs_diff']:.2e} (limit {MAX_DIFF:.0e}), top-1 agreement "
                                  f"{parity['agreement']:.2%} on {len(images)} {split} images; nothing was written")
        if format == "onnx":
            _set_metadata(tmp, {"parity": json.dumps(parity)})
    return {"path": str(path), "bytes": {path.name: path.stat().st_size}, "layout": layout,
            "input": {"name": "images", "dtype": "uint8",
                      "shape": ["N", *((ckpt["channels"], ckpt["imgsz"], ckpt["imgsz"]) if layout == "nchw"
                                       else (ckpt["imgsz"], ckpt["imgsz"], ckpt["channels"]))]},
            "output": {"name": "probs", "dtype": "float32", "shape": ["N", len(ckpt["classes"])]},
            "temperature": module.temperature, "parity": parity, **({"quantization": settings} if settings else {})}


def _onnx(module: nn.Module, example: torch.Tensor, tmp: Path, run_dir: Path, ckpt: dict, layout: str,
          quant: Quantization | None, calibration: np.ndarray | None) -> dict[str, Any] | None:
    """The ONNX file at `tmp` with its metadata: traced in float, then quantized when `quant` says so (returns the
    quantization settings, else None)."""
    meta = {"classes": json.dumps(ckpt["classes"]), "imgsz": ckpt["imgsz"], "channels": ckpt["channels"],
            "resize": ckpt["resize"], "task": "classify", "mean": json.dumps(ckpt["mean"]),
            "std": json.dumps(ckpt["std"]), "temperature": module.temperature, "model": ckpt["model"],
            "params": sum(p.numel() for p in module.model.parameters()), "layout": layout,
            "input": "images", "output": "probs", "cnnfit": version("cnnfit"), **run_metrics(run_dir),
            **_reject_meta(ckpt)}
    settings = None
    if quant is None:
        _torch_to_onnx(module, example, tmp, output="probs")
    else:
        with tempfile.TemporaryDirectory(prefix="cnnfit-export-") as work:  # the float graph never sits beside path
            fp32 = Path(work) / "fp32.onnx"
            _torch_to_onnx(module, example, fp32, output="probs")
            settings = quantize_onnx(fp32, tmp, mode=quant.mode, calibration=calibration)
        meta.update(quantize=quant.mode, quantization=json.dumps(settings))
    _set_metadata(tmp, meta)
    return settings


def _torchscript(module: nn.Module, example: torch.Tensor, tmp: Path, ckpt: dict,
                 layout: str) -> Callable[[np.ndarray], np.ndarray]:
    """The traced module saved at `tmp`; returns a runner of the file as loaded back."""
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # torch.jit's deprecation notice
            torch.jit.trace(module, example).save(str(tmp))
            loaded = torch.jit.load(str(tmp))
    except Exception as exc:
        raise CnnfitError(f"{ckpt['model']} cannot be traced for TorchScript ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}); use format=onnx") from None
    return _torch_runner(loaded, layout)


def _torch_runner(module: nn.Module, layout: str) -> Callable[[np.ndarray], np.ndarray]:
    def predict(images: np.ndarray) -> np.ndarray:  # (N, C, H, W) uint8 -> (N, K), BATCH images per call
        if layout == "nhwc":
            images = images.transpose(0, 2, 3, 1)  # (N, H, W, C)
        with torch.inference_mode():
            return np.concatenate([module(torch.from_numpy(np.ascontiguousarray(images[i:i + BATCH]))).numpy()
                                   for i in range(0, len(images), BATCH)])

    return predict


def _run_data(run_dir: Path, ckpt: dict) -> tuple[Any, dict, str]:
    """The run's dataset, decoded as training decoded it, and its split.json; (None, {}, why) when the data moved or
    changed since training."""
    shape = (ckpt["channels"], ckpt["imgsz"], ckpt["imgsz"])
    try:
        d = ckpt["config"]["data"]
        ds = open_dataset(d["source"], imgsz=d["imgsz"], channels=d["channels"], resize=d["resize"],
                          workers=d.get("workers"), cache=d.get("cache", True), task=d.get("task", "auto"),
                          exclude=d.get("exclude", []), allow_outside=d.get("allow_outside", False),
                          arrays=(d.get("h5_images", ""), d.get("h5_labels", "")))[0]
        split = json.loads((run_dir / "split.json").read_text())
        top = max((max(split[k]) for k in ("train", "val", "test") if split.get(k)), default=-1)
        if top >= len(ds) or tuple(ds.shape) != shape:
            raise CnnfitError(f"the data has changed since training ({len(ds)} images now)")
        return ds, split, ""
    except (CnnfitError, OSError, KeyError, ValueError, TypeError) as exc:
        return None, {}, str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _check_images(data: tuple[Any, dict, str], ckpt: dict,
                  limit: int | None) -> tuple[np.ndarray, np.ndarray | None, str]:
    """The run's val (else test) images, (N, C, H, W) uint8, their labels and the split's name. Data that moved or
    changed gives seeded random pixels and no labels instead, and says so."""
    ds, split, why = data
    name = "val" if len(split.get("val", [])) else "test"
    idx = np.sort(np.asarray(split.get(name, []), dtype=np.int64)[:limit])
    if ds is None or not len(idx):
        shape = (ckpt["channels"], ckpt["imgsz"], ckpt["imgsz"])
        rng = np.random.default_rng(0)
        why = why or f"no {name} images in split.json"
        return rng.integers(0, 256, (min(limit or 256, 256), *shape), dtype=np.uint8), None, f"random (no data: {why})"
    return np.ascontiguousarray(ds.images[idx]), np.asarray(ds.labels[idx]), name


def _calibration_images(data: tuple[Any, dict, str], layout: str, count: int) -> np.ndarray:
    """`count` of the run's training images, a seeded draw (a re-export gives the same file), in the graph's layout."""
    ds, split, _ = data
    train = np.asarray(split.get("train", []), dtype=np.int64)
    if not len(train):
        raise CnnfitError("quantize=int8 calibrates on the run's training images and split.json lists none; "
                          "use quantize=dynamic")
    pick = np.sort(np.random.default_rng(0).choice(train, size=min(count, len(train)), replace=False))
    images = np.asarray(ds.images[pick])  # (n, C, H, W) uint8
    return np.ascontiguousarray(images.transpose(0, 2, 3, 1) if layout == "nhwc" else images)


def _torch_to_onnx(module: nn.Module, example: torch.Tensor, path: Path, *, output: str) -> None:
    quiet = logging.getLogger("torch.onnx")  # "torchvision is not installed" lines: not the user's concern
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the exporter's deprecation chatter, likewise
            torch.onnx.export(module, (example,), str(path), input_names=["images"], output_names=[output],
                              dynamic_axes={"images": {0: "batch"}, output: {0: "batch"}}, dynamo=True,
                              external_data=False, verbose=False)  # one self-contained file (< 2 GB)
    finally:
        quiet.setLevel(level)


def _set_metadata(path: Path, props: dict[str, Any]) -> None:
    import onnx

    model = onnx.load(str(path))
    current = {p.key: p.value for p in model.metadata_props}
    onnx.helper.set_model_props(model, {**current, **{k: str(v) for k, v in props.items()}})
    onnx.save(model, str(path))


def _record(run_dir: Path, format: str, record: dict[str, Any]) -> None:
    path = run_dir / "export.json"
    try:
        records = json.loads(path.read_text())
    except (OSError, ValueError):
        records = {}
    write_atomic(path, json.dumps({**records, format: record}, indent=2))


# safetensors: the weights plus everything models.create needs, readable without pickle

def _safetensors(ckpt: dict, path: Path) -> dict[str, Any]:
    from safetensors.torch import save_file

    meta = {"format": "cnnfit-safetensors", "cnnfit": version("cnnfit"), "model": ckpt["model"],
            "model_kwargs": ckpt["model_kwargs"], "num_classes": len(ckpt["classes"]), "in_chans": ckpt["channels"],
            "classes": ckpt["classes"], "imgsz": ckpt["imgsz"], "channels": ckpt["channels"],
            "resize": ckpt["resize"], "mean": ckpt["mean"], "std": ckpt["std"], "task": ckpt.get("task", "classify"),
            "temperature": (ckpt.get("calibration") or {}).get("temperature", 1.0),
            "target_scale": ckpt.get("target_scale")}
    try:
        text = json.dumps(meta, indent=2)
    except TypeError as exc:
        raise CnnfitError(f"model options of {ckpt['model']} are not JSON ({exc}); use format=onnx") from None
    # safetensors refuses tensors that share memory; a clone per tensor costs one copy of the weights
    weights = {k: v.detach().contiguous().clone() for k, v in ckpt["state_dict"].items()}
    with atomic_path(path) as tmp:
        save_file(weights, str(tmp), metadata={"format": "pt"})
    desc = path.with_suffix(".json")  # model.safetensors -> model.json
    write_atomic(desc, text)
    return {"path": str(path), "description": str(desc),
            "bytes": {path.name: path.stat().st_size, desc.name: desc.stat().st_size}}


def load_safetensors(path: str | Path, *, trust_code: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """(model in eval mode, its description) from a model.safetensors and the model.json beside it. The model
    takes float (N, C, H, W) normalized with meta["mean"], meta["std"] and returns logits. `trust_code`: import
    the pkg.mod:Class model model.json names (it runs that module's code)."""
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    desc = path.with_suffix(".json")
    if not path.is_file() or not desc.is_file():
        raise CnnfitError(f"'{path}' and '{desc.name}' beside it are needed; write them with: "
                          "cnnfit export RUN format=safetensors")
    try:
        meta = json.loads(desc.read_text())
        weights = load_file(str(path))
    except Exception as exc:  # json, UnicodeDecodeError, and safetensors' own errors for a damaged file
        raise CnnfitError(f"'{path}' or '{desc.name}' cannot be read ({type(exc).__name__}); write them again "
                          "with: cnnfit export RUN format=safetensors") from None
    if not isinstance(meta, dict):
        raise CnnfitError(f"'{desc}' holds no model description; write it again with: cnnfit export RUN "
                          "format=safetensors")
    model = from_checkpoint({**meta, "state_dict": weights}, torch.device("cpu"), trust_code=trust_code,
                            source=str(desc))
    return model, meta


def to_onnx(model: nn.Module, path: str | Path, *, in_chans: int, imgsz: int, check: bool = True) -> Path:
    """A bare model (float input, logits out) written atomically to `path`; with `check`, onnxruntime must
    reproduce torch's logits (atol 1e-4). Runs are exported with `export`, which adds the pixel handling."""
    path = Path(path)
    model = model.eval().float()
    x = torch.randn(2, in_chans, imgsz, imgsz)
    with atomic_path(path) as tmp:
        _torch_to_onnx(model, x, tmp, output="logits")
        if check:
            import onnx
            import onnxruntime as ort

            onnx.checker.check_model(str(tmp))
            got = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})[0]
            with torch.no_grad():
                want = model(x).numpy()
            if not np.allclose(got, want, atol=1e-4, rtol=1e-3):
                raise CnnfitError(f"ONNX export of {type(model).__name__} differs from torch by up to "
                                  f"{np.abs(got - want).max():.2e}; please report this model")
    return path



def _reject_meta(ckpt: dict) -> dict[str, str]:
    """The "unknown" threshold for the metadata: the fitted one without the val scores (a graph cannot refit)."""
    fitted = ckpt.get("reject")
    if not fitted or fitted.get("score") != "maxprob" or not math.isfinite(fitted["threshold"]):
        return {}
    return {"reject": json.dumps({k: v for k, v in fitted.items() if k != "val"})}


__all__ = ["FORMATS", "export", "load_safetensors", "to_onnx"]
