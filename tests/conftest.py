"""Shared fixtures: an isolated cache, generated image folders, and the real-data root."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

COLORS = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (40, 60, 200)}


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Tests never read or write the user's caches (data and weights); one of each per test session."""
    os.environ["CNNFIT_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ["CNNFIT_WEIGHTS"] = str(tmp_path_factory.mktemp("weights"))
    yield


def write_image(path: Path, color: tuple[int, int, int], size: tuple[int, int], rng: np.random.Generator) -> None:
    """A noisy image of one dominant colour, with a darker square in a random spot."""
    w, h = size
    arr = np.clip(np.array(color) + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)
    y, x = rng.integers(0, max(h // 2, 1)), rng.integers(0, max(w // 2, 1))
    arr[y: y + h // 3, x: x + w // 3] //= 2
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def glyph(label: int, side: int = 28) -> np.ndarray:
    """An upright grayscale glyph: a bar across the top band and `label` dots down the left edge, so an image read
    on its side (the bar down the left) or mirrored (the dots on the right) is told apart from an upright one."""
    img = np.zeros((side, side), np.uint8)
    s = side / 28
    img[round(2 * s):round(6 * s), round(4 * s):round(24 * s)] = 255
    for k in range(min(label, 5)):  # up to 5 dots fit below the bar
        img[round((8 + 4 * k) * s), round(2 * s)] = 200
    return img


def upright(img: np.ndarray, label: int) -> bool:
    """Whether a (H, W) image is glyph(label) the right way up (bright bar on top, dots at the left)."""
    side = img.shape[-1]
    s = side / 28
    top, left = img[round(2 * s):round(6 * s), round(4 * s):round(24 * s)], img[round(8 * s), round(2 * s)]
    return top.mean() > 200 and img[round(8 * s):, round(24 * s):].mean() < 60 and (label == 0 or left > 100)


def make_folder(root: Path, per_class: int = 30, seed: int = 0, splits: tuple[str, ...] = ()) -> Path:
    """Class folders of JPEG and PNG images of mixed sizes; inside split folders when `splits` is given."""
    rng = np.random.default_rng(seed)
    for split in splits or ("",):
        for name, color in COLORS.items():
            for i in range(per_class):
                ext = "jpg" if i % 2 else "png"
                size = (int(rng.integers(24, 80)), int(rng.integers(24, 80)))
                write_image(root / split / name / f"{i}.{ext}", color, size, rng)
    return root


@pytest.fixture
def image_folder(tmp_path) -> Path:
    return make_folder(tmp_path / "photos")


@pytest.fixture
def runs(tmp_path) -> Path:
    return tmp_path / "runs"


def shared_dataset(name: str) -> Path:
    """A dataset under the data root, or skip the test saying what is missing."""
    from cnnfit.data import data_root

    path = data_root() / name
    if not path.exists():
        pytest.skip(f"dataset '{name}' not found under CNNFIT_DATA={data_root()}; point CNNFIT_DATA at the datasets folder")
    return path


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium driven by Playwright (no browser download); the test skips, saying why, without either."""
    import shutil

    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("no chromium on PATH (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield b
        b.close()
