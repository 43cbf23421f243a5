"""A first look at a source before it is decoded: how many images, in colour or not, and how large. The defaults
that change how the data is decoded (input size, channels, an ImageNet backbone's 224 px) are chosen from it.

    seen = look("./my_images")  # Look(images=412, train=412, channels=3, side=375, mixed=True)

Files (folder, zip, CSV manifest) are judged on the headers of an evenly spaced sample of them, with no pixel
decoded; array sources (digits, MNIST's idx files, CIFAR's batches, a .npz) are opened as training will open them,
so the look costs nothing but the cache hit."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from cnnfit.data.cache import exclude_patterns, open_dataset
from cnnfit.data.decode import DecodeError, map_images, probe
from cnnfit.data.sources import SPLITS, file_entries, resolve

SAMPLE = 64  # headers read: the median size of 64 files is within a few pixels of all of them for real photo sets


@dataclass(frozen=True)
class Look:
    images: int  # usable image files, or array rows
    train: int  # of them, those in a train split, or all when the source is not split
    channels: int  # 3 when any sampled image has colour, else 1
    side: int  # median shorter side of the sampled images, px
    mixed: bool  # sampled images differ in size


def look(source: str, *, exclude: str | list[str] = (), allow_outside: bool = False, imgsz: int | None = None,
         channels: int | None = None, resize: str = "squash", cache: bool = True, task: str = "auto",
         download: bool = False, arrays: tuple[str, str] = ("", "")) -> Look:
    """What `source` holds, cheaply; `imgsz`, `channels`, `resize`, `cache` and `task` are the run's own, so an
    array source is opened exactly as training will open it (the cache then serves both)."""
    ref = resolve(source, download=download, exclude=exclude_patterns(exclude), allow_outside=allow_outside,
                  arrays=arrays)
    if ref.kind in ("folder", "zip", "csv", "hf"):
        entries, _, load, _, _ = file_entries(ref)
        step = max(1, len(entries) // SAMPLE)
        headers = [h for h in map_images(probe, [e[0] for e in entries[::step][:SAMPLE]], load)
                   if not isinstance(h, DecodeError)]
        if not headers:  # nothing readable: the decode that follows says so, with the reasons
            return Look(len(entries), len(entries), 3, 0, False)
        in_train = sum(e[1] == SPLITS.index("train") for e in entries)
        return Look(len(entries), in_train or len(entries), 3 if any(h.channels == 3 for h in headers) else 1,
                    int(statistics.median(min(h.width, h.height) for h in headers)),
                    len({(h.width, h.height) for h in headers}) > 1)
    ds, _, _ = open_dataset(source, imgsz=imgsz, channels=channels, resize=resize, cache=cache, task=task,
                             download=download, allow_outside=allow_outside, arrays=arrays)
    train = int((ds.origin == SPLITS.index("train")).sum()) if ds.origin is not None else len(ds)
    c, h, w = ds.shape
    return Look(len(ds), train or len(ds), c, min(h, w), False)


__all__ = ["SAMPLE", "Look", "look"]
