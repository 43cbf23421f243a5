"""One image file -> uint8 (C, H, W). Training, eval and predict all decode through `decode_image`,
so a file gives the same pixels whichever command reads it."""

from __future__ import annotations

import math

import errno
import io
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Literal, TypeVar

import numpy as np
from PIL import Image, ImageMode, ImageOps, UnidentifiedImageError

# Pillow's own decompression-bomb threshold (~89 MP, a 9459x9459 image): larger files are skipped with
# a reason instead of a warning now and an exception later; a 48 MP camera photo stays well inside.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)  # we report these as skips

# high-bit-depth pixels go to uint8 this many at a time, in float32: 4 MB of scratch instead of whole-image
# float64 copies (a 16-bit 6000x6000 PNG took ~960 MB and 2.8 s that way, for an 8x8 model input)
_CONVERT_CHUNK = 1 << 20  # pixels
_DEEP_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})  # more than 8 bits a sample
# what an errno-carrying OSError means for a file we were asked to read, and how to fix it
_READ_FIXES = {errno.EACCES: "permission denied; give this user read access (chmod a+r)",
               errno.EPERM: "permission denied; give this user read access (chmod a+r)",
               errno.EISDIR: "it is a directory, not an image file; remove it or name a file",
               errno.ENOENT: "no such file; check the path (was it moved or deleted?)",
               errno.EIO: "input/output error; the disk or network share failed, check it and retry"}
IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
Resize = Literal["squash", "crop", "pad", "center"]
CENTER_BLEED = (1 - 0.875) / 2  # "center": 6.25% off each edge, then a square: shorter side to size / 0.875 and a
# centre crop, ImageNet evaluation's preprocessing (256 px then 224), with bicubic resampling as its weights saw


class DecodeError(Exception):
    """A file that is not a usable image; the message is the reason shown to users."""


@dataclass(frozen=True)
class Header:
    width: int
    height: int
    channels: int  # 1 for grayscale modes, else 3
    mode: str  # Pillow's colour mode, as stored in the file

    @property
    def nbytes(self) -> int:
        """Bytes of the decoded pixels: width x height x bands x bytes per sample (16-bit PNG: 2, float TIFF: 4)."""
        desc = ImageMode.getmode(self.mode)
        return self.width * self.height * len(desc.bands) * np.dtype(desc.typestr).itemsize


def is_image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_EXTS


def _unreadable(exc: OSError) -> DecodeError:
    """An error of reading the file (it carries an errno), told apart from Pillow's errors about its content."""
    why = _READ_FIXES.get(exc.errno or 0) or f"{exc.strerror or exc}".lower()
    return DecodeError(f"cannot be read: {why}")


def _damaged(exc: Exception) -> DecodeError:
    if isinstance(exc, OSError) and exc.errno is not None:
        return _unreadable(exc)
    return DecodeError(f"truncated or corrupt ({exc})")


def _open(src: str | Path | bytes) -> Image.Image:
    fp: str | Path | BinaryIO = io.BytesIO(src) if isinstance(src, bytes) else src
    try:
        if isinstance(src, bytes) and not src or not isinstance(src, bytes) and Path(src).stat().st_size == 0:
            raise DecodeError("empty file")
        img = Image.open(fp)
    except UnidentifiedImageError:
        raise DecodeError("not an image (Pillow cannot identify it)") from None
    except Image.DecompressionBombError:
        raise DecodeError(f"too many pixels (over {2 * MAX_PIXELS / 1e6:.0f} MP)") from None
    except OSError as exc:
        raise _damaged(exc) from None
    w, h = img.size
    if w * h > MAX_PIXELS:
        img.close()
        raise DecodeError(f"too many pixels ({w}x{h} = {w * h / 1e6:.0f} MP, limit {MAX_PIXELS / 1e6:.0f} MP)")
    return img


def probe(src: str | Path | bytes) -> Header:
    """Read only the header: size (EXIF orientation applied) and colour mode, without decoding pixels."""
    with _open(src) as img:
        w, h = img.size
        try:
            # the EXIF read so far: PNG's own getexif decodes every pixel to look for an eXIf chunk after them
            # (a 16-bit 36 MP PNG: 70 MB and 0.3 s); writers put it before the pixels
            if Image.Image.getexif(img).get(0x0112, 1) in (5, 6, 7, 8):  # rotated a quarter turn
                w, h = h, w
        except Exception:  # broken EXIF blocks are common; they never make an image unusable
            pass
        return Header(w, h, 1 if img.mode in _GRAY_MODES else 3, img.mode)


def _deep_to_l(img: Image.Image) -> Image.Image:
    """A 16- or 32-bit grayscale image -> mode L: 0..65535 (or 0..255 when no value is above it) onto 0..255,
    rounded; converted a strip of rows at a time in float32, so the scratch memory stays ~4 MB at any size."""
    top = 65535.0 if img.mode.startswith("I;16") or img.getextrema()[1] > 255 else 255.0
    w, h = img.size
    rows = max(1, _CONVERT_CHUNK // w)
    out = np.empty((h, w), np.uint8)
    for y in range(0, h, rows):
        part = np.asarray(img.crop((0, y, w, min(y + rows, h))), dtype=np.float32) * np.float32(255.0 / top)
        out[y:y + rows] = np.rint(np.clip(part, 0, 255, out=part), out=part)  # (rows, W)
    return Image.fromarray(out, "L")


def to_channels(img: Image.Image, channels: int) -> Image.Image:
    if img.mode in _DEEP_MODES:
        img = _deep_to_l(img)
    if img.mode == "P" and "transparency" in img.info or img.mode in ("RGBA", "LA", "La", "PA", "RGBa"):
        # transparent pixels become white, as an image viewer shows them
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return img.convert("L" if channels == 1 else "RGB")


def fit_square(img: Image.Image, size: int, resize: Resize) -> Image.Image:
    if img.size == (size, size) and resize != "center":
        return img
    if resize == "squash":
        return img.resize((size, size), Image.Resampling.BILINEAR)
    if resize == "crop":
        return ImageOps.fit(img, (size, size), Image.Resampling.BILINEAR)
    if resize == "center":
        return ImageOps.fit(img, (size, size), Image.Resampling.BICUBIC, bleed=CENTER_BLEED)
    return ImageOps.pad(img, (size, size), Image.Resampling.BILINEAR, color=0)


def decode_image(src: str | Path | bytes, size: int, channels: int, resize: Resize = "squash") -> np.ndarray:
    """Decode, apply EXIF orientation, convert to `channels`, resize to size x size -> (C, H, W) uint8."""
    with _open(src) as img:
        try:
            if img.format == "JPEG":
                least = math.ceil(size / (1 - 2 * CENTER_BLEED)) if resize == "center" else size  # before the crop
                img.draft(img.mode, (least, least))  # DCT-domain downscale: large photos decode 2-8x faster
            img.seek(0)  # animated images: first frame
            ImageOps.exif_transpose(img, in_place=True)  # no copy: a 16-bit 36 MP image's would be 72 MB
            out = fit_square(to_channels(img, channels), size, resize)
            arr = np.asarray(out, dtype=np.uint8)
        except Image.DecompressionBombError as exc:
            raise DecodeError(f"too many pixels ({exc})") from None
        except (OSError, ValueError, SyntaxError) as exc:
            raise _damaged(exc) from None
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


T = TypeVar("T")


def map_images(fn: Callable[[str | Path | bytes], T], sources: Iterable, load: Callable = lambda s: s,
               workers: int | None = None) -> list[T | DecodeError]:
    """fn(load(s)) for every source on a thread pool (Pillow releases the GIL while decoding);
    a file that fails gives its DecodeError in place of a result, so one bad file never stops the rest."""

    def one(src):
        try:
            return fn(load(src))
        except DecodeError as exc:
            return exc
        except OSError as exc:  # from `load`: reading the file, before any decoding
            return _unreadable(exc)

    with ThreadPoolExecutor(workers or os.cpu_count()) as pool:
        return list(pool.map(one, sources))
