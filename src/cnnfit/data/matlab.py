"""MATLAB .mat files of image arrays (v4-v7, through scipy.io): SVHN's train_32x32.mat and test_32x32.mat, or any
file with an images array and a labels array. The declared sizes are checked before an array is inflated.

SVHN's extra_32x32.mat (531,131 easier digits) is left out: the benchmark figures people compare with train on
the 73,257 of train_32x32.mat."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnfit.data.arrays import as_nchw, class_values, from_array, inflation, train_test
from cnnfit.data.imageset import ImageSet
from cnnfit.errors import CnnfitError

SVHN_FILES = ("train_32x32.mat", "test_32x32.mat")
_IMAGES = ("X", "x", "images", "data", "imgs")
_LABELS = ("y", "Y", "labels", "label", "targets")
_BYTES = {"double": 8, "single": 4, "int64": 8, "uint64": 8, "int32": 4, "uint32": 4, "int16": 2, "uint16": 2,
          "logical": 1, "int8": 1, "uint8": 1}  # MATLAB classes; anything else (cell, struct) is not an image array


def svhn_dir(d: Path) -> Path | None:
    """The folder holding SVHN's train and test files."""
    return next((sub for sub in (d, d / "svhn") if all((sub / f).is_file() for f in SVHN_FILES)), None)


def _arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The images and labels arrays of a .mat file, their declared sizes checked before either is read."""
    import scipy.io

    fix = "save it again from MATLAB (save -v7) or use the official files"
    try:
        listed = {name: (shape, kind) for name, shape, kind in scipy.io.whosmat(str(path))}
        xk = next((k for k in _IMAGES if k in listed), None)
        yk = next((k for k in _LABELS if k in listed), None)
        wanted = [k for k in (xk, yk) if k] if xk and yk else list(listed)
        declared = sum(int(np.prod(listed[k][0], dtype=object)) * _BYTES.get(listed[k][1], 8) for k in wanted)
        if why := inflation(declared, path.stat().st_size):
            raise CnnfitError(f"{path}: {why}; {fix}")
        arrays = scipy.io.loadmat(str(path), variable_names=wanted)  # a file cut short fails here
        if xk is None or yk is None:
            raise CnnfitError(f"{path} needs an images array ({'/'.join(_IMAGES)}) and a labels array "
                              f"({'/'.join(_LABELS)}); it holds {sorted(listed) or 'no arrays'}")
        return np.asarray(arrays[xk]), np.asarray(arrays[yk])
    except CnnfitError:
        raise
    except NotImplementedError:  # v7.3 files are HDF5 inside
        raise CnnfitError(f"{path} is a MATLAB v7.3 file (HDF5 inside); give it an .h5 name to read it as HDF5, "
                          "or save it with save -v7") from None
    except Exception as exc:  # scipy raises ValueError, TypeError, OSError, zlib errors on a damaged file
        raise CnnfitError(f"{path} is not a readable MATLAB file ({type(exc).__name__}: {exc}); {fix}") from None


def _one(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, C, H, W) uint8, labels (N,)) of one file; MATLAB's (H, W, [C,] N) put the images last."""
    x, y = _arrays(path)
    y = y.reshape(-1) if y.ndim == 2 and 1 in y.shape else y  # (N, 1) or (1, N)
    if y.dtype.kind == "U":
        y = np.char.strip(y)  # MATLAB pads a char matrix's rows to one length: 'nut ' beside 'bolt'
    if x.ndim in (3, 4) and x.shape[-1] == len(y) and x.shape[0] != len(y):
        x = x.transpose(3, 2, 0, 1) if x.ndim == 4 else x.transpose(2, 0, 1)  # (H, W, C, N) -> (N, C, H, W)
    x = as_nchw(x, str(path))
    if len(x) != len(y):
        raise CnnfitError(f"{path} holds {len(x)} images and {len(y)} labels; they must be one label per image")
    if path.name in SVHN_FILES:
        y = np.where(y == 10, 0, y)  # SVHN labels the digit 0 as 10
    return x, y


def read_mat(path: Path, size: int | None, channels: int | None) -> ImageSet:
    """A .mat file, or a folder of SVHN's train and test files read with their split."""
    parts = [_one(path / f) for f in SVHN_FILES] if path.is_dir() else [_one(path)]
    labels, classes = class_values(np.concatenate([p[1] for p in parts]), str(path))
    return from_array(np.concatenate([p[0] for p in parts]), labels, classes,
                      train_test(parts) if len(parts) == 2 else None, size, channels)


__all__ = ["SVHN_FILES", "read_mat", "svhn_dir"]
