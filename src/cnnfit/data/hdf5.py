"""HDF5 files of image arrays (.h5, .hdf5, .he5), read through h5py. The layouts read:

- one images array and one labels array anywhere in the file (images/labels, x/y, X/Y, data/targets...): no split
- split groups: train/images + train/labels, val/..., test/... (groups train, val, valid, validation, test)
- split names: Keras' x_train/y_train/x_test/y_test, train_x/train_y, train_images/train_labels
- images (N, H, W), (N, H, W, C) or (N, C, H, W) of any numeric type; labels (N,), (N, 1) or (N, 1, 1, 1) of whole
  numbers or strings
- class names: a `classes`/`class_names`/`label_names` attribute of the labels, or a string dataset so named,
  indexed by the label value
- datasets named by the user (data.h5_images=NAME, data.h5_labels=NAME); see `read_hdf5` for their splits

Datasets are told apart by shape (images 3-D or 4-D, labels one entry per image) and then by name. A file with only
one side (PCam keeps its images and labels in separate files) is refused, saying what it holds; a split whose images
have no labels (an unlabelled test set) is left out and listed among the skipped. HDF5 is data only:
nothing is unpickled, and arrays kept in other files (external or virtual storage) are refused. Every dataset's
declared size is checked before it is read, against its stored size too, so a compression bomb never inflates."""

from __future__ import annotations

import re
from dataclasses import dataclass
from math import prod
from pathlib import Path

import numpy as np

from cnnfit.data.arrays import as_nchw, class_values, from_array, inflation, over_total
from cnnfit.data.imageset import ImageSet
from cnnfit.errors import CnnfitError, one_line

_FIX = "save it again with h5py"
_HINT = "set data.h5_images=NAME and data.h5_labels=NAME"
# a split word standing alone in a name part: x_train, train/x, train-images; not trainx or contest
_SPLIT = re.compile(r"(?i)(?<![a-z0-9])(train|training|val|valid|validation|test|testing)(?![a-z0-9])")
_ORIGIN = {"train": 0, "training": 0, "val": 1, "valid": 1, "validation": 1, "test": 2, "testing": 2}
_IMAGES = ("x", "images", "image", "imgs", "data", "inputs", "features")  # compared lower-case: X, Images too
_LABELS = ("y", "labels", "label", "targets", "target", "class", "classes")
_NAMES = ("classes", "class_names", "label_names")  # a list of K class names, indexed by the label value
_SHOWN = 24  # datasets listed in one message: more would not read as one line
_READ_ERRORS = (OSError, KeyError, ValueError, RuntimeError, TypeError)  # what h5py raises on a damaged file


@dataclass(frozen=True)
class _Set:
    """One dataset of the file, as listed before any of it is read."""

    name: str  # its path in the file, without the leading /
    shape: tuple[int, ...]
    dtype: str  # as shown to the user
    numeric: bool  # integers, floats or booleans: the only pixels read
    text: bool  # fixed or variable length strings

    @property
    def split(self) -> int | None:
        """0 train, 1 val, 2 test from the first split word in the name, or None."""
        m = _SPLIT.search(self.name)
        return _ORIGIN[m.group(1).lower()] if m else None

    @property
    def stem(self) -> str:
        """The name with its split word as *: train/x and test/x share */x, x_train and x_test share x_*."""
        return _SPLIT.sub("*", self.name, count=1)

    @property
    def parent(self) -> str:
        return self.stem.rpartition("/")[0]

    @property
    def role(self) -> str:
        """The last name part without split word and separators, lower-case: 'x' for X_train, train/x, train_x."""
        return re.sub(r"[*_\-. ]", "", self.stem.rpartition("/")[2]).lower()

    @property
    def n(self) -> int:
        return self.shape[0] if self.shape else 0

    @property
    def flat(self) -> bool:
        """One entry per row: (N,), (N, 1), or PCam's (N, 1, 1, 1)."""
        return len(self.shape) >= 1 and prod(self.shape[1:]) == 1

    @property
    def images_like(self) -> bool:
        return self.numeric and len(self.shape) in (3, 4) and not self.flat

    @property
    def labels_like(self) -> bool:
        return self.flat and (self.numeric or self.text)

    @property
    def names_list(self) -> bool:
        return self.text and len(self.shape) == 1 and self.name.rpartition("/")[2].lower() in _NAMES

    def __str__(self) -> str:
        return f"{self.name} {self.shape} {self.dtype}"


def _unreadable(path: Path, exc: BaseException) -> CnnfitError:
    return CnnfitError(f"{path} is not a readable HDF5 file ({one_line(exc)}); {_FIX}")


def _walk(path: Path, f) -> list[_Set]:
    """Every dataset of the file, in the file's order; links to other files are not followed."""
    import h5py

    found: list[_Set] = []

    def visit(name: str, obj) -> None:
        if not isinstance(obj, h5py.Dataset):
            return
        try:
            shape, dtype = tuple(obj.shape or ()), obj.dtype
        except _READ_ERRORS:  # a type numpy has no name for (bitfield, opaque): listed, never read
            found.append(_Set(name, (), "unreadable", False, False))
            return
        text = h5py.check_string_dtype(dtype) is not None
        numeric = dtype.kind in "biuf" and h5py.check_vlen_dtype(dtype) is None
        found.append(_Set(name, shape, "str" if text else str(dtype), numeric, text))

    try:
        f.visititems(visit)
    except _READ_ERRORS as exc:
        raise _unreadable(path, exc) from None
    return found


def _listing(sets: list[_Set]) -> str:
    shown = ", ".join(str(s) for s in sets[:_SHOWN])
    more = f" and {len(sets) - _SHOWN} more" if len(sets) > _SHOWN else ""
    return f"it holds {shown}{more}" if sets else "it holds no datasets"


def _best(path: Path, candidates: list[_Set], rank, what: str, sets: list[_Set]) -> _Set | None:
    """The one candidate ranked first, None when there is none; a tie is the user's to settle."""
    ranked = sorted(candidates, key=rank)
    if len(ranked) > 1 and rank(ranked[0]) == rank(ranked[1]):
        tied = ", ".join(s.name for s in ranked if rank(s) == rank(ranked[0]))
        raise CnnfitError(f"{path}: several datasets could be the {what} ({tied}); {_listing(sets)}; {_HINT}")
    return ranked[0] if ranked else None


def _image_rank(s: _Set) -> tuple[bool]:
    return (s.role not in _IMAGES,)


def _label_rank(img: _Set):
    """Labels next to their images first, then a labels-like name; a list of class names last."""
    return lambda s: (s.names_list, s.parent != img.parent, s.role not in _LABELS)


def _images_of(path: Path, sets: list[_Set], split: int | None, labels: _Set, where: str) -> _Set | None:
    fits = [s for s in sets if s.images_like and s.split == split and s.n == labels.n]
    return _best(path, fits, _image_rank, f"images of {where}", sets)


def _labels_of(path: Path, sets: list[_Set], split: int | None, images: _Set, where: str) -> _Set | None:
    fits = [s for s in sets if s.labels_like and s.split == split and s.n == images.n and s != images]
    return _best(path, fits, _label_rank(images), f"labels of {where}", sets)


def _where(split: int | None) -> str:
    return "the file" if split is None else f"the {('train', 'val', 'test')[split]} split"


def _found_nothing(path: Path, sets: list[_Set]) -> CnnfitError:
    """Why no (images, labels) pair was found, saying what the file holds."""
    imgs = [s for s in sets if s.images_like]
    labs = [s for s in sets if s.labels_like and not s.names_list]
    typed = [s for s in sets if len(s.shape) in (3, 4) and not s.numeric and not s.flat]
    if typed and not imgs:
        why = (f"holds {', '.join(f'{s.name} ({s.dtype})' for s in typed)} and no numeric image array; images must "
               "be numbers (object, string, reference and compound types are not pixels)")
    elif imgs and not labs:
        why = (f"holds images only ({', '.join(s.name for s in imgs)}) and no labels array (one whole number or name "
               "per image); PCam-style files keep labels in a separate file: put both arrays in one file")
    elif labs and not imgs:
        why = (f"holds labels only ({', '.join(s.name for s in labs)}) and no image array (numbers shaped (N, H, W), "
               "(N, H, W, C) or (N, C, H, W)); PCam-style files keep images in a separate file: put both in one file")
    elif imgs:
        why = "holds no labels array with one entry per image (in the same split)"
    else:
        why = "holds no image array (numbers shaped (N, H, W), (N, H, W, C) or (N, C, H, W))"
    return CnnfitError(f"{path} {why}; {_listing(sets)}; {_HINT}")


def _auto(path: Path, sets: list[_Set]) -> dict[int | None, tuple[_Set, _Set]]:
    """(images, labels) per split, told by shape then name; a split with images but no labels is left out."""
    pairs: dict[int | None, tuple[_Set, _Set]] = {}
    labs = [s for s in sets if s.labels_like]
    for split in sorted({s.split for s in sets if s.images_like}, key=lambda v: -1 if v is None else v):
        pairable = [s for s in sets if s.images_like and s.split == split
                    and any(lab.split == split and lab.n == s.n and lab != s for lab in labs)]
        img = _best(path, pairable, _image_rank, f"images of {_where(split)}", sets)
        if img is not None:
            pairs[split] = (img, _labels_of(path, sets, split, img, _where(split)))
    if None in pairs and len(pairs) > 1:
        split = ", ".join(f"{i.name} + {lab.name}" for s, (i, lab) in pairs.items() if s is not None)
        raise CnnfitError(f"{path} holds an unsplit pair ({pairs[None][0].name}, {pairs[None][1].name}) and split ones "
                          f"({split}); {_listing(sets)}; {_HINT}")
    if not pairs:
        raise _found_nothing(path, sets)
    return pairs


def _named(path: Path, sets: list[_Set], images: str, labels: str) -> dict[int | None, tuple[_Set, _Set]]:
    """The user's datasets, and their same-named siblings in the other split groups (train/x -> test/x), so that
    a file's split is kept; a split lacking either sibling is left out."""
    by_name = {s.name: s for s in sets}
    given: list[_Set | None] = []
    for name, key in ((images, "data.h5_images"), (labels, "data.h5_labels")):
        if name and name.strip("/") not in by_name:
            raise CnnfitError(f"{path} has no dataset '{name}' ({key}); {_listing(sets)}; {_HINT}")
        given.append(by_name[name.strip("/")] if name else None)
    img, lab = given
    if img is not None and not img.numeric:
        raise CnnfitError(f"{path}: dataset '{img.name}' holds {img.dtype}, not numbers; images must be numeric "
                          f"arrays (object, string and reference types are not pixels); {_HINT}")
    anchor = img or lab
    splits = [anchor.split] + sorted({s.split for s in sets if anchor.split is not None and s.stem == anchor.stem
                                      and s.split not in (None, anchor.split)})
    pairs: dict[int | None, tuple[_Set, _Set]] = {}
    for split in splits:
        i, ell = img, lab
        if split != anchor.split:
            i, ell = (None if x is None else next((s for s in sets if s.stem == x.stem and s.split == split
                                                   and s.numeric >= x.numeric), None) for x in (img, lab))
            if (img is not None and i is None) or (lab is not None and ell is None):
                continue
        if i is None:
            i = _images_of(path, sets, split, ell, _where(split))
        if ell is None and i is not None:
            ell = _labels_of(path, sets, split, i, _where(split))
        if i is None or ell is None:
            if split != anchor.split:
                continue
            side, other = ("images", lab) if i is None else ("labels", i)
            raise CnnfitError(f"{path}: no {side} array fits '{other.name}' {other.shape} (one entry per image, same "
                              f"split); {_listing(sets)}; {_HINT}")
        pairs[split] = (i, ell)
    return dict(sorted(pairs.items(), key=lambda kv: -1 if kv[0] is None else kv[0]))


def _check(path: Path, f, chosen: list[_Set]) -> None:
    """Refuse, before any is read, what would read other files or inflate past the limits."""
    total = 0
    for s in chosen:
        ds = f[s.name]
        if ds.external or ds.is_virtual:  # external raw files or virtual maps would read other files on this disk
            raise CnnfitError(f"{path}: dataset '{s.name}' keeps its data in other files (external or virtual "
                              f"storage); {_FIX}, with the arrays inside the file")
        declared = ds.size * ds.dtype.itemsize
        # stored bytes: the compressed chunks; 0 for a dataset never written, which reads as fill values
        if why := inflation(declared, ds.id.get_storage_size()):
            raise CnnfitError(f"{path}: dataset '{s.name}' {why}; {_FIX}")
        total += declared
    if why := over_total(total):
        raise CnnfitError(f"{path}: {why}; {_FIX}")


def _read(f, s: _Set) -> np.ndarray:
    ds = f[s.name]
    if s.text:
        return np.asarray(ds.asstr(errors="replace")[()], dtype=str).reshape(-1)
    x = ds[()]
    if s.flat:
        x = x.reshape(-1)
    return x.astype(np.uint8) if x.dtype == bool and s.flat else x  # class_values takes whole numbers, not bools


def _class_names(path: Path, f, sets: list[_Set], labels: _Set) -> list[str] | None:
    """Class names from the labels' attribute, or from a names dataset beside the labels or at the top."""
    attrs = f[labels.name].attrs
    for key in _NAMES:
        value = attrs.get(key)
        if isinstance(value, np.ndarray) and value.ndim == 1 and value.size:
            return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in value.tolist()]
    lists = [s for s in sets if s.names_list and s != labels]
    near = [s for s in lists if s.parent in (labels.parent, "")] or (lists if len(lists) == 1 else [])
    if not near:
        return None
    near.sort(key=lambda s: s.parent != labels.parent)
    _check(path, f, near[:1])
    return [str(v) for v in _read(f, near[0]).tolist()]


def _with_names(raw: np.ndarray, names: list[str] | None, where: str) -> tuple[np.ndarray, list[str]]:
    """Labels 0..K-1 and class names: K listed names index the label value (0-based, or 1-based when the labels
    reach K), else the distinct values in sorted order."""
    labels, found = class_values(raw, where)  # checks them: whole numbers or names, one per image
    if names and np.issubdtype(raw.dtype, np.number) and raw.size:
        values = raw.astype(np.int64)
        if values.min() >= 0 and values.max() < len(names):
            return values, names
        if values.min() >= 1 and values.max() == len(names):
            return values - 1, names
    return labels, found


def read_hdf5(path: Path, size: int | None, channels: int | None, images: str = "", labels: str = "") -> ImageSet:
    """An HDF5 file of images and labels, its split kept when its datasets sit in (or are named for) train, val or
    test. `images` and `labels` name the datasets (data.h5_images, data.h5_labels) when shapes and names do not tell
    them; either alone is enough when the other is unique beside it. Given names under a split ('train/x', or
    'x_train') bring their same-named siblings of the other splits ('test/x', 'x_test') when both sides exist there,
    so the split is kept; an unsplit name reads that pair alone. A file whose pairs include no train split is read
    without a split (origin None): there would be nothing to train on."""
    import h5py

    where = str(path)
    try:
        f = h5py.File(path, "r", locking=False)  # HDF5 locks even to read; read-only and NFS mounts refuse (errno 38)
    except _READ_ERRORS as exc:
        raise _unreadable(path, exc) from None
    with f:
        sets = _walk(path, f)
        pairs = _named(path, sets, images, labels) if images or labels else _auto(path, sets)
        try:
            _check(path, f, [s for pair in pairs.values() for s in pair])
            parts = [(as_nchw(_read(f, i), f"{where}:{i.name}"), _read(f, lab)) for i, lab in pairs.values()]
            names = _class_names(path, f, sets, next(iter(pairs.values()))[1])
        except CnnfitError:
            raise
        except _READ_ERRORS as exc:
            raise _unreadable(path, exc) from None
    for (i, lab), (x, y) in zip(pairs.values(), parts):
        if len(x) != len(y):
            raise CnnfitError(f"{path}: '{i.name}' holds {len(x)} images and '{lab.name}' {len(y)} labels; they must "
                              f"be one label per image; {_HINT}")
    if len({x.shape[1:] for x, _ in parts}) > 1:
        shapes = ", ".join(f"{i.name} {x.shape[1:]}" for (i, _), (x, _) in zip(pairs.values(), parts))
        raise CnnfitError(f"{path}: the splits' images differ in shape (C, H, W): {shapes}; {_FIX}, one shape for all")
    split = None not in pairs and 0 in pairs
    origin = np.concatenate([np.full(len(y), s, np.int8) for s, (_, y) in zip(pairs, parts)]) if split else None
    y, classes = _with_names(np.concatenate([y for _, y in parts]), names, where)
    ds = from_array(np.concatenate([x for x, _ in parts]), y, classes, origin, size, channels)
    ds.skipped = [(where, f"dataset '{s.name}' {s.shape}: images without a labels array in their split, not read")
                  for s in sets if s.images_like and s.split is not None and s.split not in pairs and split]
    return ds


__all__ = ["read_hdf5"]
