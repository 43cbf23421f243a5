"""MNIST-format idx files, whatever their names: MNIST, Fashion-MNIST, KMNIST, EMNIST's six splits, QMNIST.

A folder holds one set: train and test images (idx3) and labels (idx1, or QMNIST's idx2 of int32 whose first
column is the class). EMNIST stores each image transposed; it is read upright."""

from __future__ import annotations

import gzip
import re
import zlib
from pathlib import Path

import numpy as np

from cnnfit.data.arrays import from_array, inflation, train_test
from cnnfit.data.imageset import ImageSet
from cnnfit.errors import CnnfitError

MNIST_CLASSES = {
    "mnist": [str(i) for i in range(10)],
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                      "Bag", "Ankle boot"],
    "kmnist": ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"],
}
_KIND = {"images": re.compile(r"images[-_.]?idx3"), "labels": re.compile(r"labels[-_.]?idx[12]")}
_SPLIT = re.compile(r"(?:^|[-_.])(train|test|t10k)[-_.]")  # MNIST's t10k-, EMNIST's emnist-letters-test-
_TYPES = {0x08: np.dtype(np.uint8), 0x0C: np.dtype(">i4")}  # unsigned bytes (pixels, labels); QMNIST's int32 labels
EMNIST = tuple(f"emnist-{s}" for s in ("letters", "balanced", "byclass", "bymerge", "digits", "mnist"))
PREFIXED = (*EMNIST, "qmnist")  # named sets read from files that start with their name, as published
_FIX = "download it again (data.download=true) or replace it"


def idx_files(d: Path, prefix: str = "") -> dict[tuple[str, str], Path]:
    """{(train|test, images|labels): file} of the MNIST-format idx files in `d`, whatever their prefix (EMNIST's
    emnist-letters-, QMNIST's qmnist-), `.gz` or not, `-ubyte` or `.idx3`; only those starting with `prefix` when
    given (EMNIST's archive holds six sets in one folder). Several sets otherwise are refused: which one a run
    trains on must not depend on the order of names."""
    found: dict[tuple[str, str], list[Path]] = {}
    for path in sorted(p for p in d.iterdir() if p.is_file()) if d.is_dir() else []:
        name = path.name.lower()
        if not name.startswith(prefix):
            continue
        kind = next((k for k, pattern in _KIND.items() if pattern.search(name)), None)
        split = _SPLIT.search(name)
        if kind and split:
            found.setdefault(("train" if split.group(1) == "train" else "test", kind), []).append(path)
    many = {key: paths for key, paths in found.items() if len(paths) > 1}
    if many:
        (split, kind), paths = next(iter(many.items()))
        raise CnnfitError(f"{d} holds several idx sets ({', '.join(p.name for p in paths)} are all {split} {kind}); "
                          "put each set in a folder of its own")
    return {key: paths[0] for key, paths in found.items()}


def is_idx_dir(d: Path, prefix: str = "") -> bool:
    files = idx_files(d, prefix)
    return ("train", "images") in files and ("train", "labels") in files


def _classes(d: Path, prefix: str, values: np.ndarray) -> list[str]:
    """Class names for the label values: a `*mapping*.txt` beside the files (EMNIST's `label code [code ...]`, the
    characters' Unicode code points) names them; else the values themselves."""
    names = {}
    for mapping in sorted(d.glob(f"{prefix}*mapping*.txt"))[:1]:
        for line in mapping.read_text(errors="replace").splitlines()[:100_000]:
            parts = line.split()
            if len(parts) >= 2 and all(p.isdigit() for p in parts):
                chars = [chr(int(c)) for c in parts[1:] if int(c) < 0x110000 and chr(int(c)).isprintable()]
                if chars:
                    names[int(parts[0])] = "/".join(dict.fromkeys(chars))
    return [names.get(int(v), str(int(v))) for v in values]


def read_idx_file(path: Path) -> np.ndarray:
    """An idx array; a .gz is inflated only up to the size its header declares, once that size is checked against
    the file's (a gzip bomb is refused before it inflates)."""
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[:2] != b"\0\0" or head[2] not in _TYPES or not 1 <= head[3] <= 4:
                raise CnnfitError(f"{path} is not an idx file of unsigned bytes or int32 (as MNIST's and QMNIST's "
                                  f"are); {_FIX}")
            dtype = _TYPES[head[2]]
            dims = [int.from_bytes(f.read(4), "big") for _ in range(head[3])]
            size = int(np.prod(dims, dtype=object)) * dtype.itemsize
            if why := inflation(size, path.stat().st_size):
                raise CnnfitError(f"{path} declares {dims}: {why}; {_FIX}")
            raw = f.read(size)
    except (OSError, EOFError, zlib.error) as exc:
        raise CnnfitError(f"{path} cannot be read ({exc}); {_FIX}") from None
    if len(raw) != size:
        raise CnnfitError(f"{path} is truncated: {len(raw)} of the {size} bytes its header declares; {_FIX}")
    return np.frombuffer(raw, dtype=dtype).reshape(dims)


def _labels(path: Path) -> np.ndarray:
    labels = read_idx_file(path)
    return labels[:, 0] if labels.ndim == 2 else labels  # QMNIST: (N, 8), the class first


def read_idx(path: Path, name: str, size: int | None, channels: int | None) -> ImageSet:
    """The folder's train and test sets as one ImageSet with their split; `name` is what the user typed."""
    prefix = f"{name}-" if name in PREFIXED else ""
    files = idx_files(path, prefix)
    missing = [f"{split} {kind}" for split in ("train", "test") for kind in ("images", "labels")
               if (split, kind) not in files]
    if missing:
        raise CnnfitError(f"no idx file of the {', '.join(missing)} in {path}; MNIST-format data needs four: "
                          "train and test images (idx3) and labels (idx1)")
    parts = [(read_idx_file(files[split, "images"]), _labels(files[split, "labels"])) for split in ("train", "test")]
    for (images, labels), split in zip(parts, ("train", "test")):
        if images.dtype != np.uint8 or images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise CnnfitError(f"{files[split, 'images'].name} holds {images.shape} and {files[split, 'labels'].name} "
                              f"{labels.shape}: not N images of H x W with N labels; the files do not belong together")
    images = np.concatenate([p[0] for p in parts])[:, None]  # (N, 1, 28, 28)
    if files["train", "images"].name.lower().startswith("emnist"):  # EMNIST stores each image transposed
        images = np.ascontiguousarray(images.transpose(0, 1, 3, 2))
    values, labels = np.unique(np.concatenate([p[1] for p in parts]), return_inverse=True)  # EMNIST letters: 1..26
    classes = MNIST_CLASSES.get(name) if name in MNIST_CLASSES and len(values) == 10 else None
    classes = classes or _classes(path, prefix, values)
    return from_array(images, labels.astype(np.int64), classes, train_test(parts), size, channels)


__all__ = ["EMNIST", "MNIST_CLASSES", "PREFIXED", "idx_files", "is_idx_dir", "read_idx", "read_idx_file"]
