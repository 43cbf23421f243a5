"""Hugging Face datasets: the layouts `datasets` and the Hub write, read as encoded image files and class names.

Layouts read (the image bytes as the `Image` feature stores them; cnnfit's own decoder decodes them):
- a save_to_disk Dataset: dataset_info.json, state.json and data-*.arrow (no split)
- a save_to_disk DatasetDict: dataset_dict.json and one such folder per split (train, validation, test)
- parquet files as the Hub lays them out: data/train-00000-of-00001.parquet, default/test/0000.parquet, test.parquet
- parquet files without split names, or one .parquet file (Dataset.to_parquet): no split
- hf:owner/name: the Hub dataset's parquet files, fetched by hf_hub.py into <data root>/hf/owner/name

Usage: cnnfit train data=hf:ylecun/mnist data.download=true   (or data=path/to/saved_dataset)
"""

from __future__ import annotations

import bisect
import importlib.util
import logging
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable

from cnnfit.errors import CnnfitError, one_line

log = logging.getLogger(__name__)

# split names as datasets and the Hub spell them -> index into imageset.SPLITS
HF_SPLITS = {"train": 0, "training": 0, "validation": 1, "valid": 1, "val": 1, "dev": 1, "test": 2, "testing": 2}
LABEL_NAMES = ("label", "labels", "fine_label", "class", "target")  # label columns by name, most likely first
_SCAN_DEPTH = 3  # folders below the given one searched for parquet: config/split/0000.parquet is the deepest layout
_SCAN_ENTRIES = 20_000  # directory entries looked at, at most, before deciding a folder holds no parquet
_CACHED_GROUPS = 4  # parquet row groups held decoded per file: the reader threads work within a few of them

Entry = tuple[str, int, str]  # (key, split index or -1, class name)


# --- finding a dataset ----------------------------------------------------------------------------

def _is_saved(path: Path) -> bool:
    """A save_to_disk folder: a DatasetDict's dataset_dict.json, or a Dataset's state, info and arrow files."""
    if (path / "dataset_dict.json").is_file():
        return True
    return ((path / "state.json").is_file() and (path / "dataset_info.json").is_file()
            and any(f.suffix == ".arrow" for f in path.iterdir()))


def _has_parquet(path: Path) -> bool:
    """A .parquet file within `_SCAN_DEPTH` folders; a folder that holds images is not searched further,
    so a folder of a million photos costs one directory entry per class folder."""
    from cnnfit.data.decode import is_image_name

    level, seen = [path], 0
    for _ in range(_SCAN_DEPTH + 1):
        below = []
        for folder in level:
            images = 0
            with os.scandir(folder) as entries:
                for entry in entries:
                    seen += 1
                    if seen > _SCAN_ENTRIES:
                        return False
                    if entry.name.startswith("."):
                        continue
                    if entry.name.lower().endswith(".parquet") and entry.is_file():
                        return True
                    images += is_image_name(entry.name)
                    if images > 8:  # a folder of images (a class folder), not a repo with a sample picture
                        break
                    if entry.is_dir():
                        below.append(entry.path)
        level = below
    return False


def is_hf_dir(path: Path) -> bool:
    """True for a save_to_disk folder, a folder with .parquet files a few levels down, or a .parquet file.
    Cheap (no heavy imports, bounded listing) and never raises: it is asked of every folder given as data."""
    try:
        path = Path(path)
        if path.is_file():
            return path.suffix.lower() == ".parquet"
        return path.is_dir() and (_is_saved(path) or _has_parquet(path))
    except (OSError, ValueError):  # unreadable folder, a name the OS refuses: not a dataset of ours
        return False


# --- reading ---------------------------------------------------------------------------------------

def _unreadable(path: Path, exc: BaseException) -> CnnfitError:
    return CnnfitError(f"{path} is not a readable Hugging Face dataset ({one_line(exc)}); save it again with "
                       "save_to_disk or download it again")


def _read_errors() -> tuple[type[BaseException], ...]:
    """What a damaged arrow, parquet or JSON file raises from pyarrow and datasets (JSON and Unicode errors are
    ValueErrors, pyarrow's are ArrowExceptions): told in one line, never as a traceback."""
    import pyarrow as pa

    return OSError, ValueError, KeyError, TypeError, IndexError, pa.ArrowException


class _TableRows:
    """Rows of a memory-mapped arrow table (save_to_disk): random access costs nothing to read ahead."""

    def __init__(self, table) -> None:
        self.table = table
        self.rows = table.num_rows

    def batches(self, columns: list[str]):
        yield from self.table.select(columns).to_batches(max_chunksize=4096)

    def value(self, i: int, column: str) -> Any:
        return self.table.column(column)[i].as_py()


class _ParquetRows:
    """Rows of a parquet file, read one row group at a time and a few kept: memory stays bounded by row groups,
    not by the dataset. Reads are serialised (a ParquetFile is not safe to share between threads)."""

    def __init__(self, path: Path) -> None:
        import pyarrow.parquet as pq

        self.path = path
        self.file = pq.ParquetFile(path)
        sizes = [self.file.metadata.row_group(k).num_rows for k in range(self.file.num_row_groups)]
        self.starts = [sum(sizes[:k]) for k in range(len(sizes))]
        self.rows = sum(sizes)
        self.lock = threading.Lock()
        self.cache: OrderedDict[tuple[int, str], Any] = OrderedDict()

    def batches(self, columns: list[str]):
        for k in range(self.file.num_row_groups):
            try:
                yield self.file.read_row_group(k, columns=columns)
            except _read_errors() as exc:
                raise _unreadable(self.path, exc) from None

    def value(self, i: int, column: str) -> Any:
        k = bisect.bisect_right(self.starts, i) - 1
        with self.lock:
            group = self.cache.get((k, column))
            if group is None:
                try:
                    group = self.file.read_row_group(k, columns=[column]).column(column)
                except _read_errors() as exc:
                    raise _unreadable(self.path, exc) from None
                self.cache[(k, column)] = group
                if len(self.cache) > _CACHED_GROUPS:
                    self.cache.popitem(last=False)
            else:
                self.cache.move_to_end((k, column))
        return group[i - self.starts[k]].as_py()


@dataclass
class _Part:
    """One table of records: a split of a DatasetDict, a Dataset, or one parquet file."""
    rows: _TableRows | _ParquetRows
    split: int  # index into SPLITS, or -1
    name: str  # the split's own name for messages ("validation"), "" without one
    base: int  # the row number of this part's first record within its split (a split may span several files)
    image: str = ""
    label: str = ""
    names: list[str] | None = field(default=None)  # ClassLabel names, when the label column has them


def _columns(part: _Part, schema, where: Path) -> None:
    """Choose the image and label columns of `part` from its arrow schema and the datasets features in it."""
    import datasets
    import pyarrow as pa

    try:
        features = datasets.Features.from_arrow_schema(schema)  # the `huggingface` metadata, or inferred from types
    except _read_errors() as exc:
        raise _unreadable(where, exc) from None
    kinds = {n: schema.field(n).type for n in schema.names}
    images = [n for n, f in features.items() if isinstance(f, datasets.Image)]
    images += [n for n, t in kinds.items() if pa.types.is_struct(t) and t.get_field_index("bytes") >= 0]
    images += [n for n, t in kinds.items() if pa.types.is_binary(t) or pa.types.is_large_binary(t)]
    classes = [n for n, f in features.items() if isinstance(f, datasets.ClassLabel)]
    named = [n for want in LABEL_NAMES for n in schema.names if n.lower() == want]
    rank = {n: LABEL_NAMES.index(n.lower()) if n.lower() in LABEL_NAMES else len(LABEL_NAMES) for n in classes}
    labels = sorted(classes, key=rank.get) + named  # CIFAR-100: fine_label before coarse_label
    if not images or not labels:
        need = "an image column (an Image feature, a struct of bytes/path, or binary)" if not images else ""
        need += " and " if not images and not labels else ""
        need += f"a label column (a ClassLabel, or one named {'/'.join(LABEL_NAMES)})" if not labels else ""
        raise CnnfitError(f"{where} has columns {', '.join(schema.names) or '(none)'}; cnnfit needs {need}")
    part.image, part.label = images[0], labels[0]
    label_type = kinds[part.label]
    if pa.types.is_list(label_type) or pa.types.is_large_list(label_type) or pa.types.is_struct(label_type):
        raise CnnfitError(f"{where}: the label column '{part.label}' holds several values per record; cnnfit reads "
                          "one class per image (give a CSV manifest with task=multilabel for more)")
    if part.label in classes:
        part.names = list(features[part.label].names)


def _split_of(rel: PurePosixPath) -> tuple[str | None, str]:
    """(split name or None, the folder of its configuration) from a parquet file's path in the Hub's layouts:
    data/train-00000-of-00001.parquet, config/train/0000.parquet, default/partial-train/0000.parquet, test.parquet."""
    stem = rel.name[: -len(".parquet")]
    parent = rel.parent.name.lower().removeprefix("partial-")
    if m := re.match(r"(.+?)-\d+-of-\d+", stem):
        return m[1].lower(), str(rel.parent)
    if stem.lower() in HF_SPLITS:
        return stem.lower(), str(rel.parent)
    if parent in HF_SPLITS or (parent and stem.isdigit()):  # split folders: train/0000.parquet
        return parent, str(rel.parent.parent)
    return None, str(rel.parent)


def _assign(names: list[str | None], where: Path) -> list[int | None]:
    """Split index for each split name, None for one left out (said in a warning); no known name: all -1."""
    if not any(n in HF_SPLITS for n in names):
        return [-1] * len(names)
    other = sorted({n or "(no split name)" for n in names if n not in HF_SPLITS})
    if other:
        log.warning("%s: left out the splits %s; cnnfit reads train, validation and test", where, ", ".join(other))
    return [HF_SPLITS.get(n) if n else None for n in names]


def _saved_parts(path: Path) -> list[_Part]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path), keep_in_memory=False)  # memory-mapped arrow files
        splits = {"": loaded} if isinstance(loaded, datasets.Dataset) else dict(loaded)
        tables = {name: d.data.table for name, d in splits.items()}
    except CnnfitError:
        raise
    except _read_errors() as exc:
        raise _unreadable(path, exc) from None
    names = list(tables)
    splits = [-1] if names == [""] else _assign([n.lower() for n in names], path)
    parts = []
    for name, split in zip(names, splits):
        if split is not None:
            parts.append(_Part(_TableRows(tables[name]), split, name, 0))
            _columns(parts[-1], tables[name].schema, path / name if name else path)
    return parts


def _parquet_files(path: Path) -> list[Path]:
    """Every .parquet file below `path`, in name order (shards in order), hidden files and folders left out."""
    found = []
    for here, folders, files in os.walk(path):
        folders[:] = sorted(f for f in folders if not f.startswith("."))
        found += [Path(here) / f for f in files if f.lower().endswith(".parquet") and not f.startswith(".")]
    return sorted(found, key=lambda f: f.relative_to(path).as_posix())


def _parquet_parts(path: Path) -> list[_Part]:
    files = [path] if path.is_file() else _parquet_files(path)
    if path.is_file():
        names: list[str | None] = [None]  # one file is the whole dataset, whatever its name
    else:
        found = [_split_of(PurePosixPath(f.relative_to(path).as_posix())) for f in files]
        configs = sorted({config for name, config in found if name in HF_SPLITS})
        if len(configs) > 1:  # configurations of one repo are different datasets: never mixed
            raise CnnfitError(f"{path} holds several Hugging Face configurations ({', '.join(configs)}); give one "
                              f"of their folders as data, e.g. data={path / configs[0]}")
        names = [name for name, _ in found]
    parts, rows_before = [], {}
    for f, name, split in zip(files, names, _assign(names, path)):
        if split is None:
            continue
        try:
            rows = _ParquetRows(f)
            schema = rows.file.schema_arrow
        except _read_errors() as exc:
            raise _unreadable(f, exc) from None
        key = name if split >= 0 else ""
        parts.append(_Part(rows, split, key, rows_before.get(key, 0)))
        rows_before[key] = rows_before.get(key, 0) + rows.rows
        _columns(parts[-1], schema, f)
    return parts


def _label(value: Any, names: list[str] | None) -> tuple[str | None, str]:
    """(class name, "") or (None, why the record is left out)."""
    if value is None:
        return None, "no label"
    if names is not None and isinstance(value, int) and not isinstance(value, bool):
        if value == -1:  # ClassLabel's "no label", as in test splits published without answers
            return None, "no label (-1)"
        if not 0 <= value < len(names):
            return None, f"label {value} is not one of the {len(names)} classes"
        return names[value], ""
    text = value.strip() if isinstance(value, str) else str(value)
    return (text, "") if text else (None, "empty label")


def _image_file(root: Path, path: str) -> Path:
    return Path(path) if os.path.isabs(path) else root / path


def _outside(root: Path, path: str) -> bool:
    real, top = os.path.realpath(_image_file(root, path)), os.path.realpath(root)
    return os.path.commonpath((top, real)) != top


def _scan(p: int, part: _Part, root: Path, allow_outside: bool, display: Callable[[str], str],
          entries: list[Entry], skipped: list[tuple[str, str]]) -> None:
    """Entries for the usable records of `part`, reasons for the others; image bytes are looked at, not kept."""
    import pyarrow as pa
    import pyarrow.compute as pc

    row = 0
    for batch in part.rows.batches([part.image, part.label]):
        images, labels = batch.column(part.image), batch.column(part.label).to_pylist()
        present = pc.is_valid(images).to_pylist()  # a record whose image is None
        paths = None
        if pa.types.is_struct(images.type):
            with_bytes = pc.is_valid(pc.struct_field(images, "bytes")).to_pylist()
            if images.type.get_field_index("path") >= 0:
                paths = pc.struct_field(images, "path")
        else:
            with_bytes = present
        for j, (there, ok, value) in enumerate(zip(present, with_bytes, labels)):
            key = f"{p}:{row + j}"
            name, why = _label(value, part.names)
            ok = there and ok
            path = paths[j].as_py() if there and not ok and paths is not None else None
            if not ok and not path:
                why = "no image bytes nor path"
            elif not ok and "\0" in path:
                why = "its image path is not a valid file name"
            elif not ok and not allow_outside and _outside(root, path):
                why = f"its image {path} is outside the dataset folder; set data.allow_outside=true to read it"
            if why:
                skipped.append((display(key), why))
            else:
                entries.append((key, part.split, name))
        row += batch.num_rows


def hf_entries(path: Path, allow_outside: bool) -> tuple[list[Entry], list[tuple[str, str]], Callable[[str], bytes],
                                                          Callable[[str], str]]:
    """(entries, skipped, load, display) for a save_to_disk folder, a folder of parquet files or one parquet file.
    Entries are (key, split index or -1, class name); load(key) gives the image's encoded bytes, undecoded;
    display(key) names the record ("mnist/train[17]"). Images stored by path are read relative to the folder."""
    path = Path(path)
    root = path if path.is_dir() else path.parent
    if importlib.util.find_spec("datasets") is None:  # an optional extra; it brings pyarrow
        raise CnnfitError(f"{path} is a Hugging Face dataset, and reading it needs the datasets package: "
                          "pip install 'cnnfit[hf]'")
    try:
        parts = _saved_parts(path) if path.is_dir() and _is_saved(path) else _parquet_parts(path)
    except OSError as exc:  # a folder that cannot be listed
        raise _unreadable(path, exc) from None

    def locate(key: str) -> tuple[_Part, int]:
        p, i = key.split(":")
        return parts[int(p)], int(i)

    def display(key: str) -> str:
        part, i = locate(key)
        return f"{path.name}/{part.name}[{part.base + i}]" if part.name else f"{path.name}[{part.base + i}]"

    def load(key: str) -> bytes:
        part, i = locate(key)
        value = part.rows.value(i, part.image)
        if isinstance(value, dict):
            value = value["bytes"] if value.get("bytes") is not None else _image_file(root, value["path"]).read_bytes()
        return value

    entries: list[Entry] = []
    skipped: list[tuple[str, str]] = []
    for p, part in enumerate(parts):
        _scan(p, part, root, allow_outside, display, entries, skipped)
    return entries, skipped, load, display


__all__ = ["hf_entries", "is_hf_dir"]
