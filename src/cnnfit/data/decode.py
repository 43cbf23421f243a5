"""One image file -> uint8 (C, H, W). Training, eval and predict all decode through `decode_image`,
so a file gives the same pixels whichever command reads it."""

from __future__ import annotations

import io
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Literal, TypeVar

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Pillow's own decompression-bomb threshold (~89 MP, a 9459x9459 image): larger files are skipped with
# a reason instead of a warning now and an exception later; a 48 MP camera photo stays well inside.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)  # we report these as skips

IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
Resize = Literal["squash", "crop", "pad"]


class DecodeError(Exception):
    """A file that is not a usable image; the message is the reason shown to users."""


@dataclass(frozen=True)
class Header:
    width: int
    height: int
    channels: int  # 1 for grayscale modes, else 3
    mode: str  # Pillow's colour mode, as stored in the file


def is_image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_EXTS


def _open(src: str | Path | bytes) -> Image.Image:
    fp: str | Path | BinaryIO = io.BytesIO(src) if isinstance(src, bytes) else src
    if isinstance(src, bytes) and not src or not isinstance(src, bytes) and Path(src).stat().st_size == 0:
        raise DecodeError("empty file")
    try:
        img = Image.open(fp)
    except UnidentifiedImageError:
        raise DecodeError("not an image (Pillow cannot identify it)") from None
    except Image.DecompressionBombError:
        raise DecodeError(f"too many pixels (over {2 * MAX_PIXELS / 1e6:.0f} MP)") from None
    except OSError as exc:
        raise DecodeError(f"truncated or corrupt ({exc})") from None
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
            if img.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # rotated a quarter turn
                w, h = h, w
        except Exception:  # broken EXIF blocks are common; they never make an image unusable
            pass
        return Header(w, h, 1 if img.mode in _GRAY_MODES else 3, img.mode)


def to_channels(img: Image.Image, channels: int) -> Image.Image:
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr * (255.0 / top), 0, 255).round().astype(np.uint8), "L")
    if img.mode == "P" and "transparency" in img.info or img.mode in ("RGBA", "LA", "La", "PA", "RGBa"):
        # transparent pixels become white, as an image viewer shows them
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return img.convert("L" if channels == 1 else "RGB")


def fit_square(img: Image.Image, size: int, resize: Resize) -> Image.Image:
    if img.size == (size, size):
        return img
    if resize == "squash":
        return img.resize((size, size), Image.Resampling.BILINEAR)
    if resize == "crop":
        return ImageOps.fit(img, (size, size), Image.Resampling.BILINEAR)
    return ImageOps.pad(img, (size, size), Image.Resampling.BILINEAR, color=0)


def decode_image(src: str | Path | bytes, size: int, channels: int, resize: Resize = "squash") -> np.ndarray:
    """Decode, apply EXIF orientation, convert to `channels`, resize to size x size -> (C, H, W) uint8."""
    with _open(src) as img:
        try:
            if img.format == "JPEG":
                img.draft(img.mode, (size, size))  # DCT-domain downscale: large photos decode 2-8x faster
            img.seek(0)  # animated images: first frame
            out = fit_square(to_channels(ImageOps.exif_transpose(img), channels), size, resize)
            arr = np.asarray(out, dtype=np.uint8)
        except Image.DecompressionBombError as exc:
            raise DecodeError(f"too many pixels ({exc})") from None
        except (OSError, ValueError, SyntaxError) as exc:
            raise DecodeError(f"truncated or corrupt ({exc})") from None
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
        except OSError as exc:
            return DecodeError(f"unreadable ({exc})")

    with ThreadPoolExecutor(workers or os.cpu_count()) as pool:
        return list(pool.map(one, sources))
