"""Where images come from: resolve a `data=` value, fingerprint it for the cache, read it.

Every reader returns an ImageSet of uint8 (N, C, H, W) at the requested size and channels, with
the source's own split in `origin` when it has one.
"""

from __future__ import annotations

import fnmatch
import gzip
import hashlib
import os
import pickle
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from cnnfit.data.decode import DecodeError, decode_image, is_image_name, map_images, probe
from cnnfit.data.imageset import SPLITS, TASKS, ImageSet, check_task
from cnnfit.data.loader import read_rows
from cnnfit.data.manifest import SPLIT_NAMES, encode_labels, manifest_task, one_hot, read_manifest
from cnnfit.errors import CnnfitError

NAMED = ("digits", "mnist", "fashion-mnist", "kmnist", "cifar10", "cifar100")
_MNIST_CLASSES = {
    "mnist": [str(i) for i in range(10)],
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                      "Bag", "Ankle boot"],
    "kmnist": ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"],
}
_CHUNK = 1024  # images decoded per batch of work: bounds memory for datasets larger than RAM
AUTO_PHOTO_SIZE = 64  # px for folders of mixed sizes: ~10x cheaper than 224 on CPU; set imgsz to change


def data_root() -> Path:
    return Path(os.environ.get("CNNFIT_DATA", Path.home() / ".cache" / "cnnfit" / "data")).expanduser()


@dataclass(frozen=True)
class SourceRef:
    kind: str  # digits | idx | cifar | folder | zip | npz | csv
    path: Path | None
    name: str  # what the user typed, for messages
    exclude: tuple[str, ...] = ()  # glob patterns of files to leave out (relative or absolute paths)

    def fingerprint(self) -> str:
        """Cheap identity of the source's content: names, sizes and mtimes of every file."""
        h = hashlib.sha256(f"{self.kind}:{self.name}:{self.exclude}".encode())
        if self.kind == "digits":
            import sklearn

            h.update(sklearn.__version__.encode())
        elif self.path is not None:
            files = sorted(self.path.rglob("*")) if self.path.is_dir() else [self.path]
            if self.kind == "csv":  # the manifest and every image it names
                files += [Path(e[0]) for e in read_manifest(self.path)[0]]
            for f in files:
                if f.is_file():
                    st = f.stat()
                    name = f.relative_to(self.path) if self.path.is_dir() else f
                    h.update(f"{name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        return h.hexdigest()[:24]


def _idx_dir(d: Path) -> bool:
    return any(d.glob("train-images*idx3-ubyte*")) and any(d.glob("train-labels*idx1-ubyte*"))


def _cifar_dir(d: Path) -> Path | None:
    for sub in (d, d / "cifar-10-batches-py", d / "cifar-100-python"):
        if (sub / "data_batch_1").exists() or (sub / "train").is_file():
            return sub
    return None


def resolve(spec: str, download: bool = False, exclude: tuple[str, ...] | list[str] = ()) -> SourceRef:
    """Turn `data=...` into a SourceRef, or say exactly what was looked for and where.
    With `download`, a missing named dataset is fetched from its official address first."""
    if spec == "digits":
        return SourceRef("digits", None, spec)
    root = data_root()
    if spec in NAMED:
        for cand in (root / spec, root / spec.replace("-", "_"), root / spec / "raw"):
            if spec in _MNIST_CLASSES and cand.is_dir() and _idx_dir(cand):
                return SourceRef("idx", cand, spec)
            if spec.startswith("cifar") and cand.is_dir() and _cifar_dir(cand):
                return SourceRef("cifar", _cifar_dir(cand), spec)
        if spec == "cifar10":  # the JPEG re-encoding of CIFAR-10, as a zip of class folders
            for cand in (root / "cifar10-jpeg" / "cifar10-jpeg.zip", root / "cifar10-jpeg.zip"):
                if cand.is_file():
                    return SourceRef("zip", cand, spec)
        if download:
            from cnnfit.data.download import download as fetch

            fetch(spec, root)
            return resolve(spec)
        raise CnnfitError(f"dataset '{spec}' not found under the data root {root}; put its files in "
                          f"{root / spec}, point CNNFIT_DATA at the folder that holds '{spec}', "
                          "or add data.download=true")
    path = Path(spec).expanduser()
    if not path.exists():
        raise CnnfitError(f"data '{spec}' not found: not an existing path nor a named dataset "
                          f"({', '.join(NAMED)})")
    if path.is_dir():
        if _idx_dir(path):
            return SourceRef("idx", path, spec)
        if _cifar_dir(path):
            return SourceRef("cifar", _cifar_dir(path), spec)
        return SourceRef("folder", path, spec, tuple(exclude))
    if (kind := path.suffix.lower().lstrip(".")) in ("zip", "npz", "csv"):
        return SourceRef(kind, path, spec, () if kind == "npz" else tuple(exclude))
    raise CnnfitError(f"data '{spec}' is a file cnnfit cannot read; use a folder of class folders, a .zip of "
                      "them, a .npz, or a named dataset")


# --- array sources -------------------------------------------------------------------------

def _from_array(images: np.ndarray, labels: np.ndarray, classes: list[str], origin: np.ndarray | None,
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


def _read_digits(ref: SourceRef, size, channels) -> ImageSet:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # 0..16 -> 0..255, (N, 1, 8, 8)
    return _from_array(images, d.target, [str(c) for c in d.target_names], None, size, channels)


def _read_idx_file(path: Path) -> np.ndarray:
    raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _read_idx(ref: SourceRef, size, channels) -> ImageSet:
    def find(pattern: str) -> Path:
        hits = sorted(ref.path.glob(pattern))
        if not hits:
            raise CnnfitError(f"no file matching '{pattern}' in {ref.path}; MNIST-style data needs the four idx files")
        return hits[0]

    parts = [(_read_idx_file(find(f"{p}-images*idx3-ubyte*")), _read_idx_file(find(f"{p}-labels*idx1-ubyte*")))
             for p in ("train", "t10k")]
    images = np.concatenate([p[0] for p in parts])[:, None]  # (N, 1, 28, 28)
    labels = np.concatenate([p[1] for p in parts])
    origin = np.concatenate([np.full(len(parts[0][1]), 0), np.full(len(parts[1][1]), 2)]).astype(np.int8)
    classes = _MNIST_CLASSES.get(ref.name, [str(i) for i in range(int(labels.max()) + 1)])
    return _from_array(images, labels, classes, origin, size, channels)


def _read_cifar(ref: SourceRef, size, channels) -> ImageSet:
    def load(name: str) -> dict:
        with open(ref.path / name, "rb") as f:
            return pickle.load(f, encoding="bytes")

    if (ref.path / "data_batch_1").exists():
        files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        meta, key, names = load("batches.meta"), b"labels", b"label_names"
    else:
        files, meta, key, names = ["train", "test"], load("meta"), b"fine_labels", b"fine_label_names"
    batches = [load(f) for f in files]
    images = np.concatenate([b[b"data"] for b in batches]).reshape(-1, 3, 32, 32)
    labels = np.concatenate([np.asarray(b[key]) for b in batches])
    origin = np.concatenate([np.full(len(b[key]), 2 if "test" in f else 0) for f, b in zip(files, batches)])
    return _from_array(images, labels, [n.decode() for n in meta[names]], origin.astype(np.int8), size, channels)


def _read_npz(ref: SourceRef, size, channels) -> ImageSet:
    z = np.load(ref.path, allow_pickle=False)
    keys = set(z.files)
    if {"x_train", "y_train"} <= keys:
        xs, ys = [z["x_train"]], [z["y_train"]]
        if {"x_test", "y_test"} <= keys:
            xs.append(z["x_test"]), ys.append(z["y_test"])
        origin = np.concatenate([np.full(len(y), 2 * i) for i, y in enumerate(ys)]).astype(np.int8)
        x, y = np.concatenate(xs), np.concatenate(ys)
    else:
        xk = next((k for k in ("images", "x", "X") if k in keys), None)
        yk = next((k for k in ("labels", "y", "Y") if k in keys), None)
        if xk is None or yk is None:
            raise CnnfitError(f"{ref.path} needs arrays 'images' and 'labels' (or x_train/y_train); found {sorted(keys)}")
        x, y, origin = z[xk], z[yk], None
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)  # NHWC -> NCHW
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise CnnfitError(f"{ref.path}: images must be (N, H, W), (N, H, W, C) or (N, C, H, W) with 1 or 3 channels")
    if x.dtype != np.uint8:
        x = np.clip(x * (255.0 if x.max() <= 1.0 else 1.0), 0, 255).round().astype(np.uint8)
    values, y = np.unique(y, return_inverse=True)
    classes = [str(c) for c in z["classes"]] if "classes" in keys else [str(v) for v in values]
    return _from_array(x, y, classes, origin, size, channels)


# --- file sources (folder, zip, CSV manifest: see manifest.py) ------------------------------

def _layout(names: list[str]) -> tuple[list[tuple[str, int, str]], list[tuple[str, str]]]:
    """(name, split index or -1, class) for every image file name, and files outside any class folder."""
    parts = [Path(n).parts for n in names]
    split_layout = any(len(p) >= 3 and p[0].lower() in SPLIT_NAMES for p in parts)
    entries, strays = [], []
    for name, p in zip(names, parts):
        if split_layout and len(p) >= 3 and p[0].lower() in SPLIT_NAMES:
            entries.append((name, SPLIT_NAMES[p[0].lower()], p[1]))
        elif not split_layout and len(p) >= 2:
            entries.append((name, -1, p[0]))
        else:
            strays.append((name, "not inside a class folder" + (" of train/val/test" if split_layout else "")))
    return entries, strays


def _hidden(rel: str) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in Path(rel).parts)


def _file_entries(ref: SourceRef):
    """(entries, skipped, load, display, label column) for a folder, a zip or a CSV manifest."""
    if ref.kind == "csv":
        entries, skipped, column = read_manifest(ref.path)
        entries = [e for e in entries if not _excluded(e[0], e[0], ref.exclude)]
        return entries, skipped, lambda r: r, lambda r: r, column
    if ref.kind == "zip":
        zf = zipfile.ZipFile(ref.path)
        names = [i.filename for i in zf.infolist() if not i.is_dir()]
        tops = {Path(n).parts[0] for n in names}
        strip = len(tops) == 1 and all(len(Path(n).parts) >= 3 for n in names)  # one wrapping folder
        rel = {(n.split("/", 1)[1] if strip else n): n for n in names}
        load: Callable[[str], str | bytes] = lambda r: zf.read(rel[r])
        display = lambda r: f"{ref.path.name}:{rel[r]}"
    else:
        rel = {p.relative_to(ref.path).as_posix(): p for p in ref.path.rglob("*") if p.is_file()}
        load = display = lambda r: str(rel[r])
    names = sorted(r for r in rel if not _hidden(r) and is_image_name(r) and not _excluded(display(r), r, ref.exclude))
    entries, skipped = _layout(names)
    skipped = [(display(r), why) for r, why in skipped]
    if ref.kind == "folder":  # class folders without a single image: said, not silently dropped
        used = {Path(r).parent.as_posix() for r in names}
        for d in sorted(p for p in ref.path.rglob("*") if p.is_dir()):
            r = d.relative_to(ref.path).as_posix()
            depth = 2 if any(e[1] >= 0 for e in entries) else 1
            if len(Path(r).parts) == depth and not _hidden(r) and not any(u == r or u.startswith(r + "/") for u in used):
                skipped.append((str(d) + "/", "empty class folder: no images, class left out"))
    return entries, skipped, load, display, ""


def _excluded(display: str, rel: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(display, p) for p in patterns)


def _in_memory(shape: tuple[int, ...], name: str) -> np.ndarray:
    return np.empty(shape, dtype=np.uint8)


def _read_files(ref: SourceRef, size, channels, resize, workers, alloc=_in_memory, task: str = "auto") -> ImageSet:
    entries, skipped, load, display, column = _file_entries(ref)
    if not entries:
        raise CnnfitError(f"no images found in '{ref.name}'; expected one sub-folder per class "
                          f"(e.g. {ref.name}/cats/1.jpg), optionally inside train/ val/ test/"
                          if ref.kind != "csv" else f"no usable rows in '{ref.name}'; expected path,label[,split]")
    # the task is settled from every row before any decoding, so a bad row fails in a second, not after an hour
    task = manifest_task(entries, task, column, ref.path.name) if ref.kind == "csv" else "classify"
    headers = map_images(probe, [e[0] for e in entries], load, workers)
    good = [(e, h) for e, h in zip(entries, headers) if not isinstance(h, DecodeError)]
    skipped += [(display(e[0]), str(h)) for e, h in zip(entries, headers) if isinstance(h, DecodeError)]
    if not good:
        raise CnnfitError(f"none of the {len(entries)} image files in '{ref.name}' could be decoded")
    if channels is None:
        channels = 3 if any(h.channels == 3 for _, h in good) else 1
    if size is None:
        dims = {(h.width, h.height) for _, h in good}
        size = max(dims.pop()) if len(dims) == 1 else AUTO_PHOTO_SIZE
    # decode in chunks straight into the output (a file when caching): memory stays bounded
    images = alloc((len(good), channels, size, size), "images.npy")  # (N, C, H, W) uint8
    ok = np.ones(len(good), dtype=bool)
    for start in range(0, len(good), _CHUNK):
        chunk = good[start: start + _CHUNK]
        arrays = map_images(lambda b: decode_image(b, size, channels, resize), [e[0] for e, _ in chunk], load, workers)
        buf = np.zeros((len(chunk), channels, size, size), dtype=np.uint8)
        for j, ((e, _), a) in enumerate(zip(chunk, arrays)):
            if isinstance(a, DecodeError):
                ok[start + j] = False
                skipped.append((display(e[0]), str(a)))
            else:
                buf[j] = a
        images[start: start + len(chunk)] = buf
    kept = [e for (e, _), keep in zip(good, ok) if keep]
    if not kept:
        raise CnnfitError(f"none of the {len(entries)} image files in '{ref.name}' could be decoded")
    if not ok.all():  # drop the rows of files that failed, chunk by chunk
        source = images.reader() if hasattr(images, "reader") else images
        compact = alloc((len(kept), channels, size, size), "images-kept.npy")
        rows = np.flatnonzero(ok)
        for start in range(0, len(rows), _CHUNK):
            compact[start: start + _CHUNK] = read_rows(source, rows[start: start + _CHUNK])
        images = compact
    labels, classes = encode_labels([e[2] for e in kept], task, column)
    origin = np.array([e[1] for e in kept], dtype=np.int8)
    return ImageSet(images=images, labels=labels, classes=classes, files=[display(e[0]) for e in kept],
                    origin=None if (origin < 0).all() else np.where(origin < 0, 0, origin).astype(np.int8),
                    skipped=sorted(skipped), task=task)


def read(ref: SourceRef, size: int | None = None, channels: int | None = None, resize: str = "squash",
         workers: int | None = None, alloc=_in_memory, *, task: str = "auto") -> ImageSet:
    """Decode a source to uint8 (N, C, H, W); None for size/channels keeps the source's own.
    File sources write into `alloc(shape, name)` (the cache passes an on-disk array).
    `task` (auto, classify, multilabel, regress): a CSV manifest detects its own under auto; every other
    source holds classes, which task=multilabel turns into one-hot rows."""
    check_task(task)
    if ref.kind == "csv":
        return _read_files(ref, size, channels, resize, workers, alloc, task)
    if task == "regress":  # refused before decoding anything
        raise CnnfitError(f"task=regress needs numeric targets, and '{ref.name}' holds classes; give a CSV manifest "
                          "with rows path,target, or use task=auto")
    arrays = {"digits": _read_digits, "idx": _read_idx, "cifar": _read_cifar, "npz": _read_npz}
    ds = (arrays[ref.kind](ref, size, channels) if ref.kind in arrays else
          _read_files(ref, size, channels, resize, workers, alloc))
    return one_hot(ds) if task == "multilabel" else ds


__all__ = ["NAMED", "SPLITS", "TASKS", "SourceRef", "data_root", "read", "resolve"]
