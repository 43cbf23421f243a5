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
import re
import zipfile
import zlib
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
# Archives are checked on their declared sizes before a byte is inflated (zip bombs: a 1 MB zip can hold 1 GiB).
MAX_MEMBER_BYTES = 64 << 20  # an image file over 64 MB is not a photo (a 48 MP JPEG is ~20 MB): skipped unread
MAX_RATIO = 100  # deflate packs photos ~1:1 and MNIST's sparse digits ~5:1; 100:1 is a run of repeated bytes
MIN_BOMB_BYTES = 4 << 20  # under 4 MB any ratio is harmless (a blank 1000x1000 BMP, 3 MB, packs ~1000:1)
MAX_ARCHIVE_BYTES = 32 << 30  # inflated from one zip, npz or idx file: ~180x CIFAR-10's 184 MB; unzip larger sets
CIFAR_FILES = {"cifar10": ("batches.meta", "test_batch", *(f"data_batch_{i}" for i in range(1, 6))),
               "cifar100": ("meta", "test", "train")}  # the complete sets the official archives unpack to


def data_root() -> Path:
    return Path(os.environ.get("CNNFIT_DATA", Path.home() / ".cache" / "cnnfit" / "data")).expanduser()


@dataclass(frozen=True)
class SourceRef:
    kind: str  # digits | idx | cifar | folder | zip | npz | csv
    path: Path | None
    name: str  # what the user typed, for messages
    exclude: tuple[str, ...] = ()  # glob patterns of files to leave out (relative or absolute paths)
    allow_outside: bool = False  # read files that links or CSV rows place outside the data folder

    def fingerprint(self) -> str:
        """Cheap identity of the source's content: names, sizes and mtimes of every file."""
        h = hashlib.sha256(f"{self.kind}:{self.name}:{self.exclude}".encode("utf-8", "surrogateescape"))
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


_IDX_KIND = {"images": re.compile(r"images[-_.]?idx3"), "labels": re.compile(r"labels[-_.]?idx1")}
_IDX_SPLIT = re.compile(r"(?:^|[-_.])(train|test|t10k)[-_.]")  # MNIST's t10k-, EMNIST's emnist-letters-test-


def _idx_files(d: Path) -> dict[tuple[str, str], Path]:
    """{(train|test, images|labels): file} of the MNIST-format idx files in `d`, whatever their prefix (EMNIST's
    emnist-letters-, QMNIST's qmnist-), `.gz` or not, `-ubyte` or `.idx3`. Several sets in one folder are refused:
    which one a run trains on must not depend on the order of names."""
    found: dict[tuple[str, str], list[Path]] = {}
    for path in sorted(p for p in d.iterdir() if p.is_file()) if d.is_dir() else []:
        name = path.name.lower()
        kind = next((k for k, pattern in _IDX_KIND.items() if pattern.search(name)), None)
        split = _IDX_SPLIT.search(name)
        if kind and split:
            found.setdefault(("train" if split.group(1) == "train" else "test", kind), []).append(path)
    many = {key: paths for key, paths in found.items() if len(paths) > 1}
    if many:
        (split, kind), paths = next(iter(many.items()))
        raise CnnfitError(f"{d} holds several idx sets ({', '.join(p.name for p in paths)} are all {split} {kind}); "
                          "put each set in a folder of its own")
    return {key: paths[0] for key, paths in found.items()}


def _idx_dir(d: Path) -> bool:
    files = _idx_files(d)
    return ("train", "images") in files and ("train", "labels") in files


def _idx_classes(d: Path, values: np.ndarray) -> list[str]:
    """Class names for the label values: a `*mapping*.txt` beside the files (EMNIST's `label code [code ...]`, the
    characters' Unicode code points) names them; else the values themselves."""
    names = {}
    for mapping in sorted(d.glob("*mapping*.txt"))[:1]:
        for line in mapping.read_text(errors="replace").splitlines()[:100_000]:
            parts = line.split()
            if len(parts) >= 2 and all(p.isdigit() for p in parts):
                chars = [chr(int(c)) for c in parts[1:] if int(c) < 0x110000 and chr(int(c)).isprintable()]
                if chars:
                    names[int(parts[0])] = "/".join(dict.fromkeys(chars))
    return [names.get(int(v), str(int(v))) for v in values]


def _cifar_dir(d: Path) -> Path | None:
    """The folder holding one of CIFAR's complete file sets; a lone file named `train` is not CIFAR."""
    for sub in (d, d / "cifar-10-batches-py", d / "cifar-100-python"):
        if any(all((sub / f).is_file() for f in files) for files in CIFAR_FILES.values()):
            return sub
    return None


def resolve(spec: str, download: bool = False, exclude: tuple[str, ...] | list[str] = (), *,
            allow_outside: bool = False) -> SourceRef:
    """Turn `data=...` into a SourceRef, or say exactly what was looked for and where.
    With `download`, a missing named dataset is fetched from its official address first. `allow_outside`
    reads images that a folder's links or a manifest's rows place outside the folder (refused by default)."""
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
        return SourceRef("folder", path, spec, tuple(exclude), allow_outside)
    if (kind := path.suffix.lower().lstrip(".")) in ("zip", "npz", "csv"):
        return SourceRef(kind, path, spec, () if kind == "npz" else tuple(exclude), allow_outside)
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


def _over_total(declared: int) -> str | None:
    if declared > MAX_ARCHIVE_BYTES:
        return f"{declared / 2**30:.1f} GiB inflated, over the {MAX_ARCHIVE_BYTES >> 30} GiB read from one archive"
    return None


def _inflation(declared: int, stored: int) -> str | None:
    """Why `declared` bytes inflated from `stored` are not read, or None when they may be."""
    if why := _over_total(declared):
        return why
    if declared > MIN_BOMB_BYTES and declared > MAX_RATIO * max(stored, 1):
        return (f"{declared / 2**20:.0f} MB packed into {stored / 2**20:.2f} MB (over {MAX_RATIO}:1): "
                "a compression bomb, not image data")
    return None


def member_problem(info: zipfile.ZipInfo) -> str | None:
    """Why a zip member is skipped unread (by its declared sizes), or None: zipfile never inflates past them."""
    if info.file_size > MAX_MEMBER_BYTES:
        return f"{info.file_size / 2**20:.0f} MB, over the {MAX_MEMBER_BYTES >> 20} MB an image file may take"
    return _inflation(info.file_size, info.compress_size)


def _read_idx_file(path: Path) -> np.ndarray:
    """An idx array of bytes; a .gz is inflated only up to the size its header declares, once that size is
    checked against the file's (a gzip bomb is refused before it inflates)."""
    fix = "download it again (data.download=true) or replace it"
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[:3] != b"\0\0\x08" or not 1 <= head[3] <= 4:
                raise CnnfitError(f"{path} is not an idx file of unsigned bytes (as MNIST's are); {fix}")
            dims = [int.from_bytes(f.read(4), "big") for _ in range(head[3])]
            size = int(np.prod(dims, dtype=object))
            if why := _inflation(size, path.stat().st_size):
                raise CnnfitError(f"{path} declares {dims}: {why}; {fix}")
            raw = f.read(size)
    except (OSError, EOFError, zlib.error) as exc:
        raise CnnfitError(f"{path} cannot be read ({exc}); {fix}") from None
    if len(raw) != size:
        raise CnnfitError(f"{path} is truncated: {len(raw)} of the {size} bytes its header declares; {fix}")
    return np.frombuffer(raw, dtype=np.uint8).reshape(dims)


def _read_idx(ref: SourceRef, size, channels) -> ImageSet:
    files = _idx_files(ref.path)
    missing = [f"{split} {kind}" for split in ("train", "test") for kind in ("images", "labels")
               if (split, kind) not in files]
    if missing:
        raise CnnfitError(f"no idx file of the {', '.join(missing)} in {ref.path}; MNIST-format data needs four: "
                          "train and test images (idx3) and labels (idx1)")
    parts = [(_read_idx_file(files[split, "images"]), _read_idx_file(files[split, "labels"]))
             for split in ("train", "test")]
    for (images, labels), split in zip(parts, ("train", "test")):
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise CnnfitError(f"{files[split, 'images'].name} holds {images.shape} and {files[split, 'labels'].name} "
                              f"{labels.shape}: not N images of H x W with N labels; the files do not belong together")
    images = np.concatenate([p[0] for p in parts])[:, None]  # (N, 1, 28, 28)
    if files["train", "images"].name.lower().startswith("emnist"):  # EMNIST stores each image transposed
        images = np.ascontiguousarray(images.transpose(0, 1, 3, 2))
    values, labels = np.unique(np.concatenate([p[1] for p in parts]), return_inverse=True)  # EMNIST letters: 1..26
    origin = np.concatenate([np.full(len(parts[0][1]), 0), np.full(len(parts[1][1]), 2)]).astype(np.int8)
    classes = _MNIST_CLASSES.get(ref.name) if ref.name in _MNIST_CLASSES and len(values) == 10 else None
    return _from_array(images, labels.astype(np.int64), classes or _idx_classes(ref.path, values), origin, size,
                       channels)


def _latin1(text: str, encoding: str = "latin1") -> bytes:
    """How protocol-2 pickles spell bytes (`_codecs.encode(text, 'latin1')`); no other codec is looked up."""
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"codec '{encoding}'")
    return text.encode("latin1")


def _from_data(kind: type) -> Callable:
    """bytes/bytearray built from data only: `bytes(10**10)` in a 30-byte pickle would take 10 GB."""
    def build(source: object = b"", *args: str) -> object:
        if isinstance(source, int):
            raise pickle.UnpicklingError(f"{kind.__name__}({source}): a size, not data")
        return kind(source, *args)
    return build


_NUMPY_REBUILD = ("multiarray._reconstruct", "multiarray.scalar", "numeric._frombuffer")  # how numpy arrays pickle
# the only names a CIFAR batch may rebuild: containers, numbers, text, bytes and numpy arrays; never a function
_CIFAR_NAMES = frozenset(
    [("builtins", n) for n in ("dict", "list", "tuple", "set", "frozenset", "str", "int", "float", "complex", "bool")]
    + [(f"{pkg}.{mod}", name) for pkg in ("numpy.core", "numpy._core")
       for mod, name in (n.split(".") for n in _NUMPY_REBUILD)]
    + [("numpy", "ndarray"), ("numpy", "dtype")])
_CIFAR_BUILDERS = {("_codecs", "encode"): _latin1, ("builtins", "bytes"): _from_data(bytes),
                   ("builtins", "bytearray"): _from_data(bytearray)}


class _CifarUnpickler(pickle.Unpickler):
    """pickle.Unpickler that builds data only: any other name in the file stops the load."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in _CIFAR_BUILDERS:
            return _CIFAR_BUILDERS[module, name]
        if (module, name) not in _CIFAR_NAMES:
            raise CnnfitError(f"refusing to load '{module}.{name}': a CIFAR batch holds arrays, lists and text, "
                              "never code; use the files of the official CIFAR archive")
        return super().find_class(module, name)


def _cifar_batch(path: Path, keys: tuple[bytes, ...]) -> dict:
    """A CIFAR python batch (a pickled dict) through _CifarUnpickler, with `keys` checked."""
    try:
        with open(path, "rb") as f:
            batch = _CifarUnpickler(f, encoding="bytes").load()
    except CnnfitError as exc:
        raise CnnfitError(f"{path}: {exc}") from None
    except Exception as exc:  # any malformed pickle: UnpicklingError, EOFError, ValueError, TypeError, ...
        raise CnnfitError(f"{path} is not a CIFAR python batch ({type(exc).__name__}: {exc}); "
                          "use the files of the official CIFAR archive") from None
    if not isinstance(batch, dict) or not all(k in batch for k in keys):
        raise CnnfitError(f"{path} is not a CIFAR python batch: it needs the keys {[k.decode() for k in keys]}")
    if b"data" in keys:
        data = batch[b"data"]
        try:
            labels = np.asarray(batch[keys[-1]], dtype=np.int64)  # (N,)
        except (TypeError, ValueError, OverflowError):
            labels = None
        if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072
                and labels is not None and labels.shape == (len(data),)):
            raise CnnfitError(f"{path}: 'data' must be uint8 rows of 3x32x32 pixels, one label each, as CIFAR's are")
        batch[keys[-1]] = labels
    return batch


def _read_cifar(ref: SourceRef, size, channels) -> ImageSet:
    if all((ref.path / f).is_file() for f in CIFAR_FILES["cifar10"]):
        files = (*CIFAR_FILES["cifar10"][2:], "test_batch")  # the five training batches, then the test batch
        meta, key, names = "batches.meta", b"labels", b"label_names"
    else:
        files, meta, key, names = ("train", "test"), "meta", b"fine_labels", b"fine_label_names"
    batches = [_cifar_batch(ref.path / f, (b"data", key)) for f in files]
    classes = [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n)
               for n in _cifar_batch(ref.path / meta, (names,))[names]]
    images = np.concatenate([b[b"data"] for b in batches]).reshape(-1, 3, 32, 32)
    labels = np.concatenate([b[key] for b in batches])
    if len(labels) and not 0 <= labels.min() <= labels.max() < len(classes):
        raise CnnfitError(f"{ref.path}: labels run to {labels.max()} but the meta file names {len(classes)} classes")
    origin = np.concatenate([np.full(len(b[key]), 2 if "test" in f else 0) for f, b in zip(files, batches)])
    return _from_array(images, labels, classes, origin.astype(np.int8), size, channels)


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
    fix = "save it again with numpy.savez"
    try:
        z = np.load(path, allow_pickle=False)
        for info in z.zip.infolist():
            if why := _inflation(info.file_size, info.compress_size) or _npy_overstated(z.zip, info):
                raise CnnfitError(f"{path}: array '{info.filename}' {why}; {fix}")
        if why := _over_total(sum(i.file_size for i in z.zip.infolist())):
            raise CnnfitError(f"{path}: {why}; {fix}")
    except CnnfitError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise CnnfitError(f"{path} is not a readable .npz ({exc}); {fix}") from None

    def get(key: str) -> np.ndarray:
        try:
            return z[key]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            raise CnnfitError(f"{path}: array '{key}' cannot be read ({exc}); {fix}") from None

    return set(z.files), get


def _read_npz(ref: SourceRef, size, channels) -> ImageSet:
    keys, get = _npz(ref.path)
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
            raise CnnfitError(f"{ref.path} needs arrays 'images' and 'labels' (or x_train/y_train); "
                              f"found {sorted(keys)}")
        x, y, origin = get(xk), get(yk), None
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)  # NHWC -> NCHW
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise CnnfitError(f"{ref.path}: images must be (N, H, W), (N, H, W, C) or (N, C, H, W) with 1 or 3 channels")
    if x.dtype != np.uint8:
        x = np.clip(x * (255.0 if x.max() <= 1.0 else 1.0), 0, 255).round().astype(np.uint8)
    values, y = np.unique(y, return_inverse=True)
    classes = [str(c) for c in get("classes")] if "classes" in keys else [str(v) for v in values]
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
        if why := member_problem(rel[r]) or _over_total(total + rel[r].file_size):
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
    """(entries, skipped, load, display, label column) for a folder, a zip or a CSV manifest."""
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


__all__ = ["NAMED", "SPLITS", "TASKS", "SourceRef", "data_root", "file_entries", "read", "resolve"]
