"""What every array source shares: the limits on what one file may inflate to, and the step from arrays in the
publisher's layout to the uint8 (N, C, H, W) ImageSet every reader returns."""

from __future__ import annotations

import os
import zipfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from cnnfit.data.imageset import ImageSet
from cnnfit.errors import CnnfitError

# Archives are checked on their declared sizes before a byte is inflated (zip bombs: a 1 MB zip can hold 1 GiB).
MAX_MEMBER_BYTES = 64 << 20  # an image file over 64 MB is not a photo (a 48 MP JPEG is ~20 MB): skipped unread
MAX_RATIO = 100  # deflate packs photos ~1:1 and MNIST's sparse digits ~5:1; 100:1 is a run of repeated bytes
MIN_BOMB_BYTES = 4 << 20  # under 4 MB any ratio is harmless (a blank 1000x1000 BMP, 3 MB, packs ~1000:1)
MAX_ARCHIVE_BYTES = 32 << 30  # inflated from one zip, npz or idx file: ~180x CIFAR-10's 184 MB; unzip larger sets


def over_total(declared: int) -> str | None:
    if declared > MAX_ARCHIVE_BYTES:
        return f"{declared / 2**30:.1f} GiB inflated, over the {MAX_ARCHIVE_BYTES >> 30} GiB read from one archive"
    return None


def inflation(declared: int, stored: int) -> str | None:
    """Why `declared` bytes inflated from `stored` are not read, or None when they may be."""
    if why := over_total(declared):
        return why
    if declared > MIN_BOMB_BYTES and declared > MAX_RATIO * max(stored, 1):
        return (f"{declared / 2**20:.0f} MB packed into {stored / 2**20:.2f} MB (over {MAX_RATIO}:1): "
                "a compression bomb, not image data")
    return None


def member_problem(info: zipfile.ZipInfo) -> str | None:
    """Why a zip member is skipped unread (by its declared sizes), or None: zipfile never inflates past them."""
    if info.file_size > MAX_MEMBER_BYTES:
        return f"{info.file_size / 2**20:.0f} MB, over the {MAX_MEMBER_BYTES >> 20} MB an image file may take"
    return inflation(info.file_size, info.compress_size)


def as_nchw(x: np.ndarray, where: str) -> np.ndarray:
    """Image rows as uint8 (N, C, H, W) from (N, H, W), (N, H, W, C) or (N, C, H, W); floats in [0, 1] are scaled
    to 0..255. Anything else is a one-line error naming `where`."""
    if x.ndim == 3:
        x = x[:, None]  # (N, 1, H, W)
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)  # NHWC -> NCHW
    if x.ndim != 4 or x.shape[1] not in (1, 3) or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise CnnfitError(f"{where}: images must be numbers shaped (N, H, W), (N, H, W, C) or (N, C, H, W) with 1 or "
                          f"3 channels, not {x.dtype} {x.shape}")
    if x.dtype != np.uint8:
        x = np.clip(x * (255.0 if x.size and x.max() <= 1.0 else 1.0), 0, 255).round().astype(np.uint8)
    return x


def class_values(y: np.ndarray, where: str) -> tuple[np.ndarray, list[str]]:
    """Labels as 0..K-1 and the class names, K the distinct values in sorted order (EMNIST letters run 1..26)."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]  # (N, 1), as MATLAB and HDF5 files often store labels
    if y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.str_)
                           or np.issubdtype(y.dtype, np.bytes_) or (np.issubdtype(y.dtype, np.floating)
                                                                    and np.array_equal(y, np.round(y)))):
        raise CnnfitError(f"{where}: labels must be one whole number or name per image, not {y.dtype} {y.shape}")
    values, index = np.unique(y, return_inverse=True)
    names = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(int(v)) if np.issubdtype(
        y.dtype, np.number) else str(v) for v in values]
    return index.astype(np.int64), names


def from_array(images: np.ndarray, labels: np.ndarray, classes: list[str], origin: np.ndarray | None,
               size: int | None, channels: int | None) -> ImageSet:
    """Bring (N, C, H, W) uint8 arrays to the requested size and channels through Pillow."""
    from PIL import Image

    from cnnfit.data.decode import fit_square, to_channels

    n, c, h, w = images.shape
    size = size or max(h, w)
    channels = channels or c
    if (size, size) != (h, w) or channels != c:
        def one(img: np.ndarray) -> np.ndarray:
            pil = Image.fromarray(img[0] if c == 1 else img.transpose(1, 2, 0), "L" if c == 1 else "RGB")
            arr = np.asarray(fit_square(to_channels(pil, channels), size, "squash"))
            return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)

        with ThreadPoolExecutor(os.cpu_count()) as pool:
            images = np.stack(list(pool.map(one, images, chunksize=256)))
    return ImageSet(np.ascontiguousarray(images), labels.astype(np.int64), classes, origin=origin,
                    native=min(h, w) if (size, size) != (h, w) else None)


def train_test(parts: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """The origin column of (train, test) parts concatenated in that order: 0 for train rows, 2 for test."""
    return np.concatenate([np.full(len(p[1]), 2 * i) for i, p in enumerate(parts)]).astype(np.int8)


__all__ = ["MAX_ARCHIVE_BYTES", "MAX_MEMBER_BYTES", "as_nchw", "class_values", "from_array", "inflation",
           "member_problem", "over_total", "train_test"]
