"""CIFAR-10 and CIFAR-100 as their authors publish them: the python version (pickled batches, read by an
unpickler that builds data only) and the binary version (fixed-size records of label bytes and 3x32x32 pixels)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Callable

import numpy as np

from cnnfit.data.arrays import from_array
from cnnfit.data.imageset import ImageSet
from cnnfit.errors import CnnfitError

_TRAIN10 = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_FILES = {"cifar10": ("batches.meta", "test_batch", *_TRAIN10),
               "cifar100": ("meta", "test", "train")}  # the complete python sets the official archives unpack to
# the binary version: (files, label bytes per record, the label byte used, class-name file)
CIFAR_BINARY = {"cifar10": ((*(f + ".bin" for f in _TRAIN10), "test_batch.bin"), 1, 0, "batches.meta.txt"),
                "cifar100": (("train.bin", "test.bin"), 2, 1, "fine_label_names.txt")}  # coarse, fine
_PIXELS = 3 * 32 * 32
_FIX = "use the files of the official CIFAR archive"
_FOLDERS = ("cifar-10-batches-py", "cifar-100-python", "cifar-10-batches-bin", "cifar-100-binary")


def cifar_dir(d: Path) -> Path | None:
    """The folder holding one of CIFAR's complete file sets (python or binary); a lone `train` file is not CIFAR."""
    for sub in (d, *(d / f for f in _FOLDERS)):
        sets = [*CIFAR_FILES.values(), *((*files, names) for files, _, _, names in CIFAR_BINARY.values())]
        if any(all((sub / f).is_file() for f in files) for files in sets):
            return sub
    return None


def _binary(path: Path, label_bytes: int, label_at: int) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 3, 32, 32), labels (N,)) of a binary batch: records of label bytes then the pixels, red plane
    first, row by row."""
    record = label_bytes + _PIXELS
    size = path.stat().st_size
    if size == 0 or size % record:
        raise CnnfitError(f"{path} is {size:,} bytes, not a whole number of {record}-byte CIFAR records: truncated "
                          f"or not a CIFAR binary batch; {_FIX}")
    rows = np.fromfile(path, dtype=np.uint8).reshape(-1, record)  # (N, label bytes + 3072)
    return rows[:, label_bytes:].reshape(-1, 3, 32, 32), rows[:, label_at].astype(np.int64)


def _read_binary(d: Path, kind: str) -> tuple[list[tuple[str, tuple[np.ndarray, np.ndarray]]], list[str]]:
    files, label_bytes, label_at, names = CIFAR_BINARY[kind]
    classes = [c.strip() for c in (d / names).read_text(errors="replace").splitlines() if c.strip()]
    return [(f, _binary(d / f, label_bytes, label_at)) for f in files], classes


def _latin1(text: str, encoding: str = "latin1") -> bytes:
    """How protocol-2 pickles spell bytes (`_codecs.encode(text, 'latin1')`); no other codec is looked up."""
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"codec '{encoding}'")
    return text.encode("latin1")


def _from_data(kind: type) -> Callable:
    """bytes/bytearray built from data only: `bytes(10**10)` in a 30-byte pickle would take 10 GB."""
    def build(source: object = b"", *args: str) -> object:
        if isinstance(source, int):
            raise pickle.UnpicklingError(f"{kind.__name__}({source}): a size, not data")
        return kind(source, *args)
    return build


_NUMPY_REBUILD = ("multiarray._reconstruct", "multiarray.scalar", "numeric._frombuffer")  # how numpy arrays pickle
# the only names a CIFAR batch may rebuild: containers, numbers, text, bytes and numpy arrays; never a function
_CIFAR_NAMES = frozenset(
    [("builtins", n) for n in ("dict", "list", "tuple", "set", "frozenset", "str", "int", "float", "complex", "bool")]
    + [(f"{pkg}.{mod}", name) for pkg in ("numpy.core", "numpy._core")
       for mod, name in (n.split(".") for n in _NUMPY_REBUILD)]
    + [("numpy", "ndarray"), ("numpy", "dtype")])
_CIFAR_BUILDERS = {("_codecs", "encode"): _latin1, ("builtins", "bytes"): _from_data(bytes),
                   ("builtins", "bytearray"): _from_data(bytearray)}


class _CifarUnpickler(pickle.Unpickler):
    """pickle.Unpickler that builds data only: any other name in the file stops the load."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in _CIFAR_BUILDERS:
            return _CIFAR_BUILDERS[module, name]
        if (module, name) not in _CIFAR_NAMES:
            raise CnnfitError(f"refusing to load '{module}.{name}': a CIFAR batch holds arrays, lists and text, "
                              "never code; use the files of the official CIFAR archive")
        return super().find_class(module, name)


def _cifar_batch(path: Path, keys: tuple[bytes, ...]) -> dict:
    """A CIFAR python batch (a pickled dict) through _CifarUnpickler, with `keys` checked."""
    try:
        with open(path, "rb") as f:
            batch = _CifarUnpickler(f, encoding="bytes").load()
    except CnnfitError as exc:
        raise CnnfitError(f"{path}: {exc}") from None
    except Exception as exc:  # any malformed pickle: UnpicklingError, EOFError, ValueError, TypeError, ...
        raise CnnfitError(f"{path} is not a CIFAR python batch ({type(exc).__name__}: {exc}); "
                          "use the files of the official CIFAR archive") from None
    if not isinstance(batch, dict) or not all(k in batch for k in keys):
        raise CnnfitError(f"{path} is not a CIFAR python batch: it needs the keys {[k.decode() for k in keys]}")
    if b"data" in keys:
        data = batch[b"data"]
        try:
            labels = np.asarray(batch[keys[-1]], dtype=np.int64)  # (N,)
        except (TypeError, ValueError, OverflowError):
            labels = None
        if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072
                and labels is not None and labels.shape == (len(data),)):
            raise CnnfitError(f"{path}: 'data' must be uint8 rows of 3x32x32 pixels, one label each, as CIFAR's are")
        batch[keys[-1]] = labels
    return batch


def _read_python(d: Path) -> tuple[list[tuple[str, tuple[np.ndarray, np.ndarray]]], list[str]]:
    if all((d / f).is_file() for f in CIFAR_FILES["cifar10"]):
        files, meta, key, names = (*_TRAIN10, "test_batch"), "batches.meta", b"labels", b"label_names"
    else:
        files, meta, key, names = ("train", "test"), "meta", b"fine_labels", b"fine_label_names"
    parts = []
    for f in files:
        batch = _cifar_batch(d / f, (b"data", key))
        parts.append((f, (batch[b"data"].reshape(-1, 3, 32, 32), batch[key])))
    classes = [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n)
               for n in _cifar_batch(d / meta, (names,))[names]]
    return parts, classes


def read_cifar(d: Path, size: int | None, channels: int | None) -> ImageSet:
    """A CIFAR folder (see cifar_dir), python or binary version, with its own train/test split."""
    binary = next((k for k, (files, *_) in CIFAR_BINARY.items() if all((d / f).is_file() for f in files)), None)
    parts, classes = _read_binary(d, binary) if binary else _read_python(d)
    images = np.concatenate([p[0] for _, p in parts])  # (N, 3, 32, 32)
    labels = np.concatenate([p[1] for _, p in parts])
    if len(labels) and not 0 <= labels.min() <= labels.max() < len(classes):
        raise CnnfitError(f"{d}: labels run to {labels.max()} but the class names list {len(classes)} classes; {_FIX}")
    origin = np.concatenate([np.full(len(p[1]), 2 if "test" in f else 0) for f, p in parts]).astype(np.int8)
    return from_array(images, labels, classes, origin, size, channels)


__all__ = ["CIFAR_BINARY", "CIFAR_FILES", "cifar_dir", "read_cifar"]
