"""Where images come from: resolve a `data=` value, fingerprint it for the cache, read it.

Every reader returns an ImageSet of uint8 (N, C, H, W) at the requested size and channels, with
the source's own split in `origin` when it has one. Files of encoded images (a folder, a zip, a CSV
manifest, a Hugging Face dataset) are decoded here; arrays come through their format's module
(idx, cifar, stl10, matlab, npz, hdf5), each ending in arrays.from_array.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from cnnfit.data.arrays import member_problem, over_total
from cnnfit.data.cifar import cifar_dir, read_cifar
from cnnfit.data.decode import DecodeError, decode_image, is_image_name, map_images, probe
from cnnfit.data.idx import EMNIST, MNIST_CLASSES, PREFIXED, is_idx_dir, read_idx
from cnnfit.data.imageset import SPLITS, TASKS, ImageSet, check_task
from cnnfit.data.loader import read_rows
from cnnfit.data.manifest import SPLIT_NAMES, encode_labels, manifest_task, one_hot, read_manifest
from cnnfit.data.npz import read_npz
from cnnfit.errors import CnnfitError

NAMED = ("digits", "mnist", "fashion-mnist", "kmnist", *EMNIST, "qmnist", "cifar10", "cifar100", "svhn", "stl10")
_CHUNK = 1024  # images decoded per batch of work: bounds memory for datasets larger than RAM
AUTO_PHOTO_SIZE = 64  # px for folders of mixed sizes: ~10x cheaper than 224 on CPU; set imgsz to change
HF = "hf:"  # data=hf:owner/name, a Hugging Face Hub dataset


def data_root() -> Path:
    return Path(os.environ.get("CNNFIT_DATA", Path.home() / ".cache" / "cnnfit" / "data")).expanduser()


@dataclass(frozen=True)
class SourceRef:
    kind: str  # digits | idx | cifar | svhn | mat | stl10 | npz | h5 | hf | folder | zip | csv
    path: Path | None
    name: str  # what the user typed, for messages
    exclude: tuple[str, ...] = ()  # glob patterns of files to leave out (relative or absolute paths)
    allow_outside: bool = False  # read files that links or CSV rows place outside the data folder
    arrays: tuple[str, str] = ("", "")  # an HDF5 file's images and labels datasets; empty: told by shape and name

    def fingerprint(self) -> str:
        """Cheap identity of the source's content: names, sizes and mtimes of every file."""
        h = hashlib.sha256(f"{self.kind}:{self.name}:{self.exclude}:{self.arrays}".encode("utf-8", "surrogateescape"))
        h.update(b":outside" if self.allow_outside else b"")
        if self.kind == "digits":
            import sklearn

            h.update(sklearn.__version__.encode())
        elif self.path is not None:
            files = walk(self.path, self.allow_outside)[0] if self.path.is_dir() else {str(self.path): self.path}
            if self.kind == "csv":  # the manifest and every image it names
                files |= {e[0]: Path(e[0]) for e in read_manifest(self.path, self.allow_outside)[0]}
            for name, f in files.items():
                if f.is_file():
                    st = f.stat()
                    h.update(os.fsencode(name) + f"|{st.st_size}|{st.st_mtime_ns}\n".encode())
        return h.hexdigest()[:24]


def walk(root: Path, allow_outside: bool = False) -> tuple[dict[str, Path], list[str], list[tuple[str, str]]]:
    """Every file under `root` by relative name, the sub-folders, and the links refused with why.
    Symbolic links are followed when they stay inside `root` (or `allow_outside`), never round a loop."""
    top = os.path.realpath(root)
    files: dict[str, Path] = {}
    folders: list[str] = []
    refused: list[tuple[str, str]] = []
    stack = [(str(root), "", top, (top,))]  # (path, relative name + "/", real path, real folders walked to it)
    while stack:
        here, rel, real_here, chain = stack.pop()
        with os.scandir(here) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                name = rel + entry.name
                real = os.path.realpath(entry.path) if entry.is_symlink() else os.path.join(real_here, entry.name)
                if entry.is_symlink() and not allow_outside and os.path.commonpath((top, real)) != top:
                    refused.append((entry.path, f"a link to {real}, outside the data folder; set "
                                                "data.allow_outside=true to read it"))
                elif entry.is_dir():
                    if real in chain:
                        refused.append((entry.path, "a link to a folder that contains it: left out"))
                    else:
                        folders.append(name)
                        stack.append((entry.path, name + "/", real, (*chain, real)))
                elif entry.is_file():
                    files[name] = Path(entry.path)
                elif entry.is_symlink():
                    refused.append((entry.path, "a broken link"))
    return files, folders, refused


def _folder_kind(path: Path, prefix: str = "") -> tuple[str, Path] | None:
    """The array format a folder holds (and the folder its files are in), or None for a folder of images."""
    from cnnfit.data.hf import is_hf_dir
    from cnnfit.data.matlab import svhn_dir
    from cnnfit.data.stl10 import stl10_dir

    if is_idx_dir(path, prefix):
        return "idx", path
    for kind, find in (("cifar", cifar_dir), ("svhn", svhn_dir), ("stl10", stl10_dir)):
        if found := find(path):
            return kind, found
    return ("hf", path) if is_hf_dir(path) else None


def _named(spec: str, root: Path, download: bool) -> SourceRef:
    """A named dataset under the data root, fetched first with `download` when it is not there."""
    homes = [root / spec, root / spec.replace("-", "_"), root / spec / "raw"]
    if spec in EMNIST:  # EMNIST's archive unpacks all six sets into one gzip/ folder
        homes += [root / "emnist" / "gzip", root / "emnist", root / "gzip"]
    family = "idx" if spec in MNIST_CLASSES or spec in PREFIXED else spec.rstrip("0123456789")  # cifar, svhn, stl
    for home in homes:
        found = _folder_kind(home, f"{spec}-" if spec in PREFIXED else "") if home.is_dir() else None
        if found and found[0].startswith(family):
            return SourceRef(found[0], found[1], spec)
    if spec == "cifar10":  # the JPEG re-encoding of CIFAR-10, as a zip of class folders
        for cand in (root / "cifar10-jpeg" / "cifar10-jpeg.zip", root / "cifar10-jpeg.zip"):
            if cand.is_file():
                return SourceRef("zip", cand, spec)
    if download:
        from cnnfit.data.download import download as fetch

        fetch(spec, root)
        return _named(spec, root, False)
    raise CnnfitError(f"dataset '{spec}' not found under the data root {root}; put its files in "
                      f"{root / spec}, point CNNFIT_DATA at the folder that holds '{spec}', or add data.download=true")


def _hub(spec: str, root: Path, download: bool) -> SourceRef:
    """data=hf:owner/name: the Hub dataset's files under the data root, fetched first with `download`."""
    from cnnfit.data.hf import is_hf_dir
    from cnnfit.data.hf_hub import hub_folder

    folder = hub_folder(root, spec[len(HF):])
    if not is_hf_dir(folder):
        if not download:
            raise CnnfitError(f"Hugging Face dataset '{spec[len(HF):]}' is not in {folder}; add data.download=true "
                              "to fetch it from the Hub, or save it there with save_to_disk")
        from cnnfit.data.hf_hub import fetch_hub

        fetch_hub(spec[len(HF):], folder)
    return SourceRef("hf", folder, spec)


def resolve(spec: str, download: bool = False, exclude: tuple[str, ...] | list[str] = (), *,
            allow_outside: bool = False, arrays: tuple[str, str] = ("", "")) -> SourceRef:
    """Turn `data=...` into a SourceRef, or say exactly what was looked for and where.
    With `download`, a missing named dataset is fetched from its official address first. `allow_outside`
    reads images that a folder's links or a manifest's rows place outside the folder (refused by default).
    `arrays` names an HDF5 file's images and labels datasets when their shapes do not tell them apart."""
    if spec == "digits":
        return SourceRef("digits", None, spec)
    if spec in NAMED:
        return _named(spec, data_root(), download)
    if spec.startswith(HF):
        return _hub(spec, data_root(), download)
    path = Path(spec).expanduser()
    if not path.exists():
        raise CnnfitError(f"data '{spec}' not found: not an existing path nor a named dataset "
                          f"({', '.join(NAMED)}, or hf:owner/name)")
    if path.is_dir():
        if found := _folder_kind(path):
            return SourceRef(found[0], found[1], spec, allow_outside=allow_outside)
        return SourceRef("folder", path, spec, tuple(exclude), allow_outside)
    kind = path.suffix.lower().lstrip(".")
    kind = {"hdf5": "h5", "he5": "h5", "parquet": "hf"}.get(kind, kind)
    if kind in ("zip", "npz", "csv", "mat", "h5", "hf"):
        return SourceRef(kind, path, spec, tuple(exclude) if kind in ("zip", "csv") else (), allow_outside,
                         arrays if kind == "h5" else ("", ""))
    raise CnnfitError(f"data '{spec}' is a file cnnfit cannot read; use a folder of class folders, a .zip of "
                      "them, a .csv manifest, a .npz, .h5, .mat or .parquet file, or a named dataset")


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


def shown(name: str) -> str:
    """A file name safe to print and write as UTF-8: bytes that are not UTF-8 shown as U+FFFD."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _zip_files(ref: SourceRef) -> tuple[dict[str, zipfile.ZipInfo], Callable, Callable, list[tuple[str, str]]]:
    """Image members by relative name (one wrapping folder stripped), their loader and display, and the
    members skipped unread on their declared sizes."""
    try:
        zf = zipfile.ZipFile(ref.path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise CnnfitError(f"{ref.path} is not a readable zip ({exc}); zip the class folders again") from None
    infos = [i for i in zf.infolist() if not i.is_dir()]
    tops = {Path(i.filename).parts[0] for i in infos}
    strip = len(tops) == 1 and all(len(Path(i.filename).parts) >= 3 for i in infos)  # one wrapping folder
    rel = {(i.filename.split("/", 1)[1] if strip else i.filename): i for i in infos}
    display = lambda r: f"{ref.path.name}:{rel[r].filename}"
    skipped, total = [], 0
    for r in sorted(r for r in rel if is_image_name(r) and not _hidden(r)):
        if why := member_problem(rel[r]) or over_total(total + rel[r].file_size):
            skipped.append((display(r), f"{why}; skipped unread"))
            del rel[r]
        else:
            total += rel[r].file_size
    return rel, lambda r: zf.read(rel[r]), display, skipped


def _folder_files(ref: SourceRef) -> tuple[dict[str, Path], list[str], list[tuple[str, str]]]:
    """Files by relative name, sub-folders, and what is left out: refused links, names that are not UTF-8."""
    files, folders, skipped = walk(ref.path, ref.allow_outside)
    skipped = [(shown(f), why) for f, why in skipped]
    for r in [r for r in files if shown(r) != r]:  # os.fsdecode's surrogates: not UTF-8 on disk
        skipped.append((shown(str(files.pop(r))), "the file name is not valid UTF-8; rename the file"))
    return files, folders, skipped


def file_entries(ref: SourceRef):
    """(entries, skipped, load, display, label column) for a folder, a zip, a CSV manifest or a Hugging Face
    dataset: entries are (name, split index or -1, label), load(name) gives the encoded image's bytes."""
    if ref.kind == "hf":
        from cnnfit.data.hf import hf_entries

        return (*hf_entries(ref.path, ref.allow_outside), "")
    if ref.kind == "csv":
        entries, skipped, column = read_manifest(ref.path, ref.allow_outside)
        entries = [e for e in entries if not _excluded(e[0], e[0], ref.exclude)]
        return entries, skipped, lambda r: r, lambda r: r, column
    if ref.kind == "zip":
        rel, load, display, skipped = _zip_files(ref)
    else:
        rel, folders, skipped = _folder_files(ref)
        load = display = lambda r: str(rel[r])
    names = sorted(r for r in rel if not _hidden(r) and is_image_name(r) and not _excluded(display(r), r, ref.exclude))
    entries, strays = _layout(names)
    skipped += [(display(r), why) for r, why in strays]
    if ref.kind == "folder":  # class folders without a single image: said, not silently dropped
        used = {Path(r).parent.as_posix() for r in names}
        depth = 2 if any(e[1] >= 0 for e in entries) else 1
        for r in folders:
            if len(Path(r).parts) == depth and not _hidden(r) and not any(u == r or u.startswith(r + "/")
                                                                          for u in used):
                skipped.append((shown(str(ref.path / r)) + "/", "empty class folder: no images, class left out"))
    return entries, skipped, load, display, ""


def _excluded(display: str, rel: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(display, p) for p in patterns)


def _in_memory(shape: tuple[int, ...], name: str) -> np.ndarray:
    return np.empty(shape, dtype=np.uint8)


def _read_files(ref: SourceRef, size, channels, resize, workers, alloc=_in_memory, task: str = "auto") -> ImageSet:
    entries, skipped, load, display, column = file_entries(ref)
    if not entries:
        left = f" ({len(skipped)} left out, first {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise CnnfitError(f"no images found in '{ref.name}'{left}; expected one sub-folder per class "
                          f"(e.g. {ref.name}/cats/1.jpg), optionally inside train/ val/ test/" if ref.kind != "csv"
                          else f"no usable rows in '{ref.name}'{left}; expected path,label[,split]")
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


def _read_digits(size: int | None, channels: int | None) -> ImageSet:
    from sklearn.datasets import load_digits

    from cnnfit.data.arrays import from_array

    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # 0..16 -> 0..255, (N, 1, 8, 8)
    return from_array(images, d.target, [str(c) for c in d.target_names], None, size, channels)


def _read_arrays(ref: SourceRef, size: int | None, channels: int | None) -> ImageSet:
    """A source that stores pixels as arrays, each format through its own reader."""
    if ref.kind == "digits":
        return _read_digits(size, channels)
    if ref.kind == "h5":
        from cnnfit.data.hdf5 import read_hdf5

        return read_hdf5(ref.path, size, channels, *ref.arrays)
    if ref.kind in ("svhn", "mat"):
        from cnnfit.data.matlab import read_mat

        return read_mat(ref.path, size, channels)
    if ref.kind == "stl10":
        from cnnfit.data.stl10 import read_stl10

        return read_stl10(ref.path, size, channels)
    readers = {"idx": lambda p, s, c: read_idx(p, ref.name, s, c), "cifar": read_cifar, "npz": read_npz}
    return readers[ref.kind](ref.path, size, channels)


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
    ds = (_read_arrays(ref, size, channels) if ref.kind not in ("folder", "zip", "hf") else
          _read_files(ref, size, channels, resize, workers, alloc))
    return one_hot(ds) if task == "multilabel" else ds


__all__ = ["NAMED", "SPLITS", "TASKS", "SourceRef", "data_root", "file_entries", "read", "resolve"]
