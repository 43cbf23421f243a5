"""NumPy .npz files of image arrays: `images` + `labels` (or x/y), or Keras' x_train/y_train[/x_test/y_test]."""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import Callable

import numpy as np

from cnnfit.data.arrays import as_nchw, class_values, from_array, inflation, over_total
from cnnfit.data.imageset import ImageSet
from cnnfit.errors import CnnfitError

_FIX = "save it again with numpy.savez"


def _npy_overstated(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> str | None:
    """Why an .npy member's header promises more bytes than the member holds, or None."""
    from numpy.lib import format as npy

    with zf.open(info) as f:
        version = npy.read_magic(f)
        shape, _, dtype = (npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0)(f)
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    return f"declares {shape} {dtype} ({nbytes:,} bytes) in {info.file_size:,}" if nbytes > info.file_size else None


def _npz(path: Path) -> tuple[set[str], Callable[[str], np.ndarray]]:
    """The array names of an .npz and a reader of one, every member checked on its declared sizes before any
    is inflated (an .npz is a zip: a 1 MB one can declare 1 GiB of zeros)."""
    try:
        z = np.load(path, allow_pickle=False)
        for info in z.zip.infolist():
            if why := inflation(info.file_size, info.compress_size) or _npy_overstated(z.zip, info):
                raise CnnfitError(f"{path}: array '{info.filename}' {why}; {_FIX}")
        if why := over_total(sum(i.file_size for i in z.zip.infolist())):
            raise CnnfitError(f"{path}: {why}; {_FIX}")
    except CnnfitError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise CnnfitError(f"{path} is not a readable .npz ({exc}); {_FIX}") from None

    def get(key: str) -> np.ndarray:
        try:
            return z[key]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            raise CnnfitError(f"{path}: array '{key}' cannot be read ({exc}); {_FIX}") from None

    return set(z.files), get


def read_npz(path: Path, size: int | None, channels: int | None) -> ImageSet:
    keys, get = _npz(path)
    if {"x_train", "y_train"} <= keys:
        xs, ys = [get("x_train")], [get("y_train")]
        if {"x_test", "y_test"} <= keys:
            xs.append(get("x_test")), ys.append(get("y_test"))
        origin = np.concatenate([np.full(len(y), 2 * i) for i, y in enumerate(ys)]).astype(np.int8)
        x, y = np.concatenate(xs), np.concatenate(ys)
    else:
        xk = next((k for k in ("images", "x", "X") if k in keys), None)
        yk = next((k for k in ("labels", "y", "Y") if k in keys), None)
        if xk is None or yk is None:
            raise CnnfitError(f"{path} needs arrays 'images' and 'labels' (or x_train/y_train); found {sorted(keys)}")
        x, y, origin = get(xk), get(yk), None
    x = as_nchw(x, str(path))
    y, names = class_values(y, str(path))
    classes = [str(c) for c in get("classes")] if "classes" in keys else names
    return from_array(x, y, classes, origin, size, channels)


__all__ = ["read_npz"]
