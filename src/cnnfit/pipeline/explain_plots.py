"""The report's explanations of a classifier's test answers, drawn by evaluate from best.pt as `predictor.Pixels`
(uint8 in, no TTA: Grad-CAM and embeddings explain one view of an image, the one predict sees):

    plots/explain_wrong.png   Grad-CAM of the most confidently wrong test images (12 at most)
    plots/explain_right.png   Grad-CAM of right ones, a seeded sample spread over the classes (12 at most)
    plots/neighbours.png      for up to 6 wrong ones, the 5 most similar training images by embedding

Each figure is optional: a missing Captum, a model with no spatial layer or no `head` Linear skips it with a log
line, and no failure here fails the evaluation."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from cnnfit.data import ImageSet
from cnnfit.errors import CnnfitError
from cnnfit.eval.embed import features, nearest
from cnnfit.eval.explain import UNLOCALISED, gradcam, overlay, target_layer
from cnnfit.eval.plots import pyplot, save_figure
from cnnfit.predictor import pixels_module

log = logging.getLogger(__name__)

FILES = ("explain_wrong.png", "explain_right.png", "neighbours.png")
SHOWN = 12  # images per Grad-CAM figure: 24 backward passes in all, one batch (eval.explain.BATCH is 64)
QUERIES = 6  # wrong test images whose neighbours are drawn
NEIGHBOURS = 5  # training images per query
BANK = 20_000  # training images embedded at most, a seeded sample: ~1 s for simplecnn at 28 px on 2 CPU cores
BANK_BYTES = 256 << 20  # and at most 256 MB of their pixels: all 20,000 at 3x64x64, 1,780 at 3x224x224
SEED = 0  # the sample of right images and of the bank: a re-evaluation draws the same figures
CELL = 1.1  # inches per image in a figure: at 110 dpi an image is ~120 px wide, whether 8 px digits or photos


def draw_explanations(plots: Path, ckpt: dict, device: torch.device, ds: ImageSet, test_idx: np.ndarray,
                      true: np.ndarray, pred: np.ndarray, conf: np.ndarray, train_idx: np.ndarray | None, *,
                      trust_code: bool = False) -> None:
    """FILES in `plots` for the test images ds[test_idx] with their true and predicted classes (N,) and the
    predicted class's probability (N,); the neighbours only when `train_idx` (the run's own training images in
    `ds`) is given. A figure that cannot be drawn is logged and left out. `trust_code` as in evaluate."""
    for name in FILES:  # a figure of an earlier evaluation must not outlive a skip of this one
        (plots / name).unlink(missing_ok=True)
    t0 = time.perf_counter()
    try:
        module = pixels_module(ckpt, device, trust_code=trust_code)
    except CnnfitError as e:
        log.info(f"explanations skipped: {e}")
        return
    wrong = np.flatnonzero(pred != true)
    wrong = wrong[np.argsort(-conf[wrong], kind="stable")]  # (n_wrong,) most confident mistake first
    right = spread_right(true, pred, SHOWN)
    args = (module, ds, test_idx, true, pred, conf, list(ckpt["classes"]), plots)
    heatmaps = _attempt("Grad-CAM", lambda: _gradcam_figures(*args, wrong, right))
    neighbours = (_attempt("nearest training images", lambda: _neighbours_figure(*args, wrong[:QUERIES], train_idx))
                  if train_idx is not None and len(train_idx) and len(wrong) else None)
    done = [d for d in (heatmaps, neighbours) if d]
    if done:
        log.info(f"explanations: {'; '.join(done)} ({time.perf_counter() - t0:.1f} s)")
    if heatmaps and ckpt["model"] in UNLOCALISED:
        log.info(f"{ckpt['model']} pools globally over maps that cover the whole image: its Grad-CAM heatmaps do not "
                 "show where it looked (eval.explain.UNLOCALISED)")


def spread_right(true: np.ndarray, pred: np.ndarray, n: int, seed: int = SEED) -> np.ndarray:
    """Up to `n` positions of right answers, seeded and spread over the classes: one image of each class, the
    classes in a shuffled order, then a second of each, and so on."""
    rng = np.random.default_rng(seed)
    right = np.flatnonzero(true == pred)
    pools = [rng.permutation(right[true[right] == k]) for k in rng.permutation(np.unique(true[right]))]
    picked: list[int] = []
    for i in range(max(map(len, pools), default=0)):  # round i: the i-th image of each class that has one
        picked += [int(pool[i]) for pool in pools if i < len(pool)]
        if len(picked) >= n:
            break
    return np.asarray(picked[:n], dtype=np.int64)


def _attempt(what: str, draw: Callable[[], str]) -> str | None:
    """draw(), which returns what it drew; None, logged, when it could not."""
    try:
        return draw()
    except CnnfitError as e:  # Captum missing, no spatial layer, no head: the model or the install, said plainly
        log.info(f"{what} skipped: {e}")
    except Exception as e:  # an optional figure: the scores, the other plots and the report matter more
        log.warning(f"{what} not drawn ({type(e).__name__}: {e}); the scores and the other plots are unaffected")
    return None


def _gradcam_figures(module: nn.Module, ds: ImageSet, test_idx: np.ndarray, true: np.ndarray, pred: np.ndarray,
                     conf: np.ndarray, classes: list[str], plots: Path, wrong: np.ndarray, right: np.ndarray) -> str:
    """explain_wrong.png and explain_right.png: each tile the image, its Grad-CAM for the predicted class over it,
    and "true X / predicted Y 0.97"."""
    shown = np.r_[wrong[:SHOWN], right].astype(np.int64)  # (n,) positions in the test split, the wrong ones first
    if not len(shown):
        return ""
    images = np.asarray(ds.images[test_idx[shown]])  # (n, C, H, W) uint8
    name, layer = target_layer(module, torch.from_numpy(images[:1]).to(module.mean.device))
    heat = gradcam(module, images, target=pred[shown], layer=layer)  # (n, H, W) in [0, 1]
    tiles = [[_rgb(img), overlay(img, h) / 255.0] for img, h in zip(images, heat)]
    titles = [_answer(classes[true[i]], classes[pred[i]], conf[i]) for i in shown]
    n = min(len(wrong), SHOWN)
    for file, part, colour, heading in (
            ("explain_wrong.png", slice(0, n), "tab:red",
             f"Grad-CAM of the {n} most confidently wrong test images (of {len(wrong)} wrong)"),
            ("explain_right.png", slice(n, None), "tab:green",
             f"Grad-CAM of {len(right)} right test images (a seeded sample over the classes)")):
        if tiles[part]:
            _mosaic(tiles[part], titles[part], [colour] * len(titles[part]), 4,
                    heading + ": red is where the model found the class it named", plots / file)
    return f"Grad-CAM of {n} wrong and {len(right)} right test images at layer {name}"


def _neighbours_figure(module: nn.Module, ds: ImageSet, test_idx: np.ndarray, true: np.ndarray, pred: np.ndarray,
                       conf: np.ndarray, classes: list[str], plots: Path, queries: np.ndarray,
                       train_idx: np.ndarray) -> str:
    """neighbours.png: a row per wrong test image, the image then its most similar training images by embedding
    (cosine), each with its label: red when it is the class the model named, green when it is the true one."""
    per_image = int(np.prod(ds.shape))  # bytes of one uint8 image
    size = min(len(train_idx), BANK, max(NEIGHBOURS, BANK_BYTES // per_image))
    pick = np.sort(np.random.default_rng(SEED).choice(len(train_idx), size, replace=False))  # sorted: memmap reads
    bank_idx = np.asarray(train_idx, dtype=np.int64)[pick]
    bank = features(module, np.asarray(ds.images[bank_idx]))  # (M, D) unit rows
    query_images = np.asarray(ds.images[test_idx[queries]])  # (q, C, H, W) uint8
    ids, sims = nearest(features(module, query_images), bank, min(NEIGHBOURS, len(bank)))  # (q, k) each
    tiles, titles, colours = [], [], []
    for row, i in enumerate(queries):
        tiles.append([_rgb(query_images[row])])
        titles.append(_answer(classes[true[i]], classes[pred[i]], conf[i], fits=17))  # over one image
        colours.append("black")
        for j, sim in zip(ids[row], sims[row]):
            label = int(ds.labels[bank_idx[j]])
            tiles.append([_rgb(np.asarray(ds.images[bank_idx[j]]))])
            titles.append(f"train: {_short(classes[label])}\nsimilarity {sim:.2f}")
            colours.append("tab:red" if label == pred[i] else "tab:green" if label == true[i] else "dimgray")
    k = ids.shape[1]
    _mosaic(tiles, titles, colours, k + 1, f"Wrong test images (left) and their {k} nearest of {len(bank):,} "
            "training images by embedding: red, the class the model named; green, the true class", plots /
            "neighbours.png", divider=True)
    return f"{k} nearest of {len(bank):,} training images for {len(queries)} wrong ones"


def _answer(true: str, pred: str, conf: float, fits: int = 34) -> str:
    """A tile's title: one line when it fits in `fits` characters (34 of 7 pt span two 1.1 in images), else two."""
    line = f"true {_short(true)} / predicted {_short(pred)} {conf:.2f}"
    return line if len(line) <= fits else line.replace(" / ", "\n", 1)


def _short(name: str, width: int = 14) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def _rgb(image: np.ndarray) -> np.ndarray:
    """(C, H, W) uint8, gray or RGB -> (H, W, 3) float in [0, 1]."""
    return np.repeat(image, 3 // len(image), axis=0).transpose(1, 2, 0) / 255.0


def _mosaic(tiles: list[list[np.ndarray]], titles: list[str], colours: list[str], per_row: int, heading: str,
            path: Path, *, divider: bool = False) -> None:
    """Tiles of (H, W, 3) images in [0, 1] side by side, `per_row` tiles a row, each under its title, drawn as one
    image on one axes as eval.plots' image grids are (64 subplots took ~1.5 s to save, one mosaic a tenth of that).
    `divider`: a line after the first column (the query of each row)."""
    plt = pyplot()
    scale = max(1, -(-64 // tiles[0][0].shape[1]))  # small images (8 px digits) upscaled to >= 64 px, nearest
    tiles = [[img.repeat(scale, 0).repeat(scale, 1) for img in tile] for tile in tiles]
    h, w = tiles[0][0].shape[:2]
    k = max(len(tile) for tile in tiles)  # images per tile
    px = w / CELL  # mosaic pixels per inch
    pad, gap, top = max(1, round(0.04 * px)), round(0.25 * px), round(0.36 * px)  # 0.36 in: two lines of 7 pt
    tile_w = k * w + (k - 1) * pad
    cols = min(per_row, len(tiles))
    rows = -(-len(tiles) // cols)
    mosaic = np.ones((rows * (top + h) + gap // 2, cols * (tile_w + gap), 3), dtype=np.float32)  # white (Hm, Wm, 3)
    anchors = []
    for t, tile in enumerate(tiles):
        r, c = divmod(t, cols)
        y0, x0 = r * (top + h) + top, c * (tile_w + gap) + gap // 2
        for j, img in enumerate(tile):
            mosaic[y0:y0 + h, x0 + j * (w + pad):x0 + j * (w + pad) + w] = img
        anchors.append((x0 + tile_w / 2, y0 - 0.06 * top))
    head = 0.3  # inches above the mosaic for the heading
    fig = plt.figure(figsize=(mosaic.shape[1] / px, mosaic.shape[0] / px + head))
    ax = fig.add_axes((0, 0, 1, 1 - head / fig.get_figheight()))
    ax.axis("off")
    ax.imshow(mosaic, interpolation="nearest", aspect="auto")
    for (x, y), title, colour in zip(anchors, titles, colours):
        ax.text(x, y, title, ha="center", va="bottom", fontsize=7, color=colour, linespacing=1.1)
    if divider:
        ax.axvline(tile_w + gap - 0.5, color="grey", linewidth=0.8)
    fig.suptitle(heading, fontsize=8, wrap=True)
    save_figure(fig, path)


__all__ = ["BANK", "FILES", "QUERIES", "SHOWN", "draw_explanations", "spread_right"]
