"""The ImageNet-1k weights torchvision publishes (IMAGENET1K_V1) for the zoo families that share its state_dict
names: fetched once from download.pytorch.org into a weights cache, SHA-256-checked on every use.

    path = cached_file("resnet18")  # $CNNFIT_WEIGHTS/resnet18-f37072fd.pth, downloaded the first time

Each family here was checked against torchvision 0.28's own builders: after the head rename (`tv_renames`), the
same keys and shapes, the same published parameter count, and the same logits for the same weights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cnnfit import files
from cnnfit.errors import CnnfitError

BASE_URL = "https://download.pytorch.org/models/"
MAX_BYTES = 1 << 30  # 1 GiB: vgg19_bn, the largest file here, is 548 MB
IMGSZ = 224  # px: every file was trained and evaluated on 224 px centre crops of the 256 px shorter side
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RGB, 0..1 units: torchvision's ImageClassification preset
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class TvWeights:
    file: str  # torchvision's file name; the hex after its last '-' is the start of the file's SHA-256
    top1: float  # % ImageNet-1k val acc@1 that torchvision publishes for this file
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    unused: tuple[str, ...] = ()  # key prefixes the file holds but cnnfit's model does not take

    @property
    def sha256_prefix(self) -> str:
        return self.file.removesuffix(".pth").rsplit("-", 1)[-1]


WEIGHTS: dict[str, TvWeights] = {
    "resnet18": TvWeights("resnet18-f37072fd.pth", 69.758),
    "resnet34": TvWeights("resnet34-b627a593.pth", 73.314),
    "resnet50": TvWeights("resnet50-0676ba61.pth", 76.130),  # v1.5, as cnnfit's Bottleneck
    "alexnet": TvWeights("alexnet-owt-7be5be79.pth", 56.522),
    "vgg11": TvWeights("vgg11-8a719046.pth", 69.020),
    "vgg11_bn": TvWeights("vgg11_bn-6002323d.pth", 70.370),
    "vgg13": TvWeights("vgg13-19584684.pth", 69.928),
    "vgg13_bn": TvWeights("vgg13_bn-abd245e5.pth", 71.586),
    "vgg16": TvWeights("vgg16-397923af.pth", 71.592),
    "vgg16_bn": TvWeights("vgg16_bn-6c64b313.pth", 73.360),
    "vgg19": TvWeights("vgg19-dcbb9e9d.pth", 72.376),
    "vgg19_bn": TvWeights("vgg19_bn-c79401a0.pth", 74.218),
    # torchvision's pretrained GoogLeNet first maps its normalized input to (x - 0.5) / 0.5 (transform_input=True);
    # cnnfit's has no such step, so mean = std = 0.5 hands conv1 the same numbers (logits equal to 1e-8). The file
    # also holds aux1/aux2 heads, which torchvision documents as not pretrained: left out.
    "googlenet": TvWeights("googlenet-1378be20.pth", 69.778, mean=(0.5,) * 3, std=(0.5,) * 3,
                           unused=("aux1.", "aux2.")),
    "mobilenet_v2": TvWeights("mobilenet_v2-b0353104.pth", 71.878),
}


def weights_dir() -> Path:
    """The weights cache: $CNNFIT_WEIGHTS, or ~/.cache/cnnfit/weights."""
    return Path(os.environ.get("CNNFIT_WEIGHTS") or "~/.cache/cnnfit/weights").expanduser()


def url_of(name: str, base_url: str | None = None) -> str:
    """Where `name`'s file is fetched from: `base_url` (or $CNNFIT_WEIGHTS_URL, for mirrors and tests), else
    torchvision's address."""
    base = base_url or os.environ.get("CNNFIT_WEIGHTS_URL") or BASE_URL
    return base.rstrip("/") + "/" + WEIGHTS[name].file


def cached_file(name: str, *, base_url: str | None = None) -> Path:
    """The path of `name`'s weights in the cache, downloaded there on first use. The file is re-hashed on every
    use (0.03 s for 45 MB, 0.4 s for vgg19_bn's 548 MB on 2 cores): a file put there by hand, or damaged on disk,
    is refused before it is read."""
    entry = WEIGHTS[name]
    path = weights_dir() / entry.file
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        url = url_of(name, base_url)
        return files.download(url, path, algorithm="sha256", expected=entry.sha256_prefix, max_bytes=MAX_BYTES,
                              fix=f"with no network, fetch it elsewhere and put it at {path}")
    got = files.digest(path, "sha256")
    if not got.startswith(entry.sha256_prefix):
        raise CnnfitError(f"{path} is not {name}'s ImageNet weights (sha256 {got}, expected "
                          f"{entry.sha256_prefix}...); delete it and cnnfit will download it again")
    return path
