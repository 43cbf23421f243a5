"""Dataset report: counts, sizes, skipped files, duplicates and leaks between splits.

Nothing here moves or deletes a file. The report says what it found; `write_clean_manifest` writes the list
of images to train on instead (`data=clean_manifest.csv`), and the user decides.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import zipfile
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np

from cnnfit.data.arrays import MAX_MEMBER_BYTES, member_problem
from cnnfit.data.cache import remembered
from cnnfit.data.decode import DecodeError, map_images, probe
from cnnfit.data.exact_duplicates import pixel_keys, same_keys
from cnnfit.data.imageset import SPLITS, ImageSet, class_counts, label_text
from cnnfit.data.manifest import manifest_cell, manifest_header
from cnnfit.data.near_duplicates import (MAX_COLOUR_SHIFT, MAX_EXAMINED, MAX_FOUND, MIN_NEAR_SIDE, MIN_SIMILARITY,
                                         NEAR_THRESHOLD, hamming_pairs as _hamming_pairs, signatures, similarity)
from cnnfit.data.sources import data_root
from cnnfit.errors import CnnfitError

_LISTED = 50  # findings of one kind listed one by one; the rest are counted in one line
_KEPT = 10_000  # duplicate groups and pairs kept in the report; the counts are always complete
_LEVELS = {"error": 0, "warning": 1, "info": 2}
_ZIP_MEMBER = re.compile(r"^(?P<archive>.+?\.zip):(?P<member>.+)$", re.IGNORECASE)  # as sources.py names them


def _add(findings: list[dict], level: str, kind: str, message: str, indices=(), files=()) -> None:
    findings.append({"level": level, "kind": kind, "message": message, "indices": list(indices), "files": list(files)})


# --- splits and counts ------------------------------------------------------------------------------

def _assign_splits(n: int, parts: dict[str, np.ndarray], findings: list[dict]) -> tuple[np.ndarray, list, dict]:
    """Split index of each image (-1: in no part), the split names, and {alias: split} for a part that is the
    very same images as an earlier one (test = val when a source has no test split)."""
    names = [s for s in SPLITS if s in parts] + [s for s in parts if s not in SPLITS]
    split_of = np.full(n, -1, np.int16)
    aliases: dict[str, str] = {}
    for k, name in enumerate(names):
        idx = np.unique(np.asarray(parts[name], dtype=np.int64))
        twin = next((o for o in names[:k] if o not in aliases and len(idx)
                     and np.array_equal(idx, np.unique(parts[o]))), None)
        if twin is not None:
            aliases[name] = twin
            _add(findings, "warning", "shared_split", f"{name} is the same {len(idx)} images as {twin}: its scores "
                 "come from the split that also picked the best epoch")
            continue
        taken = idx[split_of[idx] >= 0]
        for other in np.unique(split_of[taken]):
            both = taken[split_of[taken] == other]
            _add(findings, "error", "split_overlap", f"{len(both)} images are in both {names[other]} and {name}",
                 both.tolist())
        split_of[idx[split_of[idx] < 0]] = k
    return split_of, names, aliases


def _counts(ds: ImageSet, parts: dict, names: list[str], findings: list[dict]) -> tuple[dict, dict | None]:
    """Images per split; per class (classify) or per label (multilabel: the images carrying it) with the
    imbalance among them; for regression a summary of the targets instead, and no imbalance."""
    counts: dict = {"per_split": {s: len(parts[s]) for s in names}}
    if ds.task == "regress":
        counts["target"] = _target_summary(ds, parts, names, findings)
        return counts, None
    what = "class" if ds.task == "classify" else "label"
    per = {s: class_counts(ds, parts[s]) for s in names}
    total = class_counts(ds)
    counts[f"per_{what}"] = {c: {**{s: int(per[s][i]) for s in names}, "total": int(total[i])}
                             for i, c in enumerate(ds.classes)}
    base = "train" if "train" in per and per["train"].sum() else "all"
    n = per["train"] if base == "train" else total
    big, small = int(n.argmax()), int(n.argmin())
    ratio = float(n[big] / n[small]) if n[small] else None
    for i in np.flatnonzero(n == 0):
        _add(findings, "error", f"empty_{what}", f"{what} '{ds.classes[i]}' has no {base} images to learn it from")
    fix = ("consider train.class_weight=balanced or train.sampler=balanced" if ds.task == "classify" else
           "test metrics fit each label's threshold on val; consider train.loss=focal")
    if ratio is not None and ratio >= 3:  # where train.monitor=auto switches to macro F1
        _add(findings, "warning", "imbalance", f"{what} '{ds.classes[big]}' has {ratio:.1f}x the images of "
             f"'{ds.classes[small]}' ({n[big]} vs {n[small]}, {base}); {fix}")
    if ds.task == "multilabel" and (bare := int((ds.labels.sum(1) == 0).sum())):
        _add(findings, "info", "no_labels", f"{bare} images carry no label: negatives for every label")
    return counts, {"ratio": None if ratio is None else round(ratio, 3), "largest": ds.classes[big],
                    "smallest": ds.classes[small], "split": base}


def _moments(y: np.ndarray) -> dict | None:
    return {k: float(f"{f(y):.6g}") for k, f in (("min", np.min), ("max", np.max), ("mean", np.mean),
                                                  ("std", np.std))} if len(y) else None


def _target_summary(ds: ImageSet, parts: dict, names: list[str], findings: list[dict]) -> dict:
    """min/max/mean/std of the targets, overall and per split, and a 10-bin histogram over their range."""
    y = ds.labels.astype(np.float64)
    hist, edges = np.histogram(y, bins=10) if len(y) else (np.zeros(10, np.int64), np.zeros(11))
    if len(y) and y.min() == y.max():
        _add(findings, "error", "constant_target", f"every target is {y[0]:g}: nothing to learn; check the "
             f"'{ds.classes[0]}' column")
    return {"name": ds.classes[0], **(_moments(y) or {}),
            "histogram": {"edges": [float(f"{e:.6g}") for e in edges], "counts": hist.tolist()},
            "per_split": {s: _moments(y[np.asarray(parts[s], dtype=np.int64)]) for s in names}}


# --- files: bytes, headers, sizes ---------------------------------------------------------------------

def _facts(data: bytes) -> tuple[str, int, int, str]:
    """sha256 of the bytes, size as shown (EXIF orientation applied) and colour mode, from the header only."""
    head = probe(data)
    return hashlib.sha256(data).hexdigest(), head.width, head.height, head.mode


def _member(zf: zipfile.ZipFile, name: str) -> bytes:
    try:
        info = zf.getinfo(name)
    except KeyError:
        raise DecodeError(f"no member {name} in {zf.filename}") from None
    if why := member_problem(info):  # checked on its declared sizes before a byte is inflated
        raise DecodeError(why)
    return zf.read(info)


def _file_bytes(path: str) -> bytes:
    if (size := os.stat(path).st_size) > MAX_MEMBER_BYTES:
        raise DecodeError(f"{size / 2**20:.0f} MB, over the {MAX_MEMBER_BYTES >> 20} MB an image file may take")
    return Path(path).read_bytes()


def _records(source: Path | None) -> tuple[dict[str, str], Callable[[str], bytes] | None]:
    """A Hugging Face dataset's records ({name as the ImageSet gives it: key}, and their loader): rows of a table,
    reopened through it rather than as files."""
    from cnnfit.data.hf import hf_entries, is_hf_dir

    if source is None or not is_hf_dir(source):
        return {}, None
    entries, _, load, display = hf_entries(source, allow_outside=True)  # only names the ImageSet kept are asked
    return {display(e[0]): e[0] for e in entries}, load


def _file_facts(files: list[str], source: Path | None, workers: int | None) -> list:
    """_facts of every file, or its DecodeError. Files on disk go through the thread pool (waiting on the disk
    releases the GIL); zip members are read in one pass per archive because zipfile serialises reads on one
    lock: the 60k CIFAR members took 4.6 s on two threads, 0.8 s in one pass."""
    out: list = [None] * len(files)
    plain, members = [], {}
    keys, load = _records(source)
    if rows := [i for i, name in enumerate(files) if name in keys]:
        for i, f in zip(rows, map_images(_facts, [keys[files[i]] for i in rows], load, workers)):
            out[i] = f
    for i, name in enumerate(files):
        m = _ZIP_MEMBER.match(name)
        if name in keys:
            continue
        if m is None or Path(name).exists():
            plain.append(i)
        else:
            members.setdefault(m["archive"], []).append((i, m["member"]))
    for i, f in zip(plain, map_images(_facts, [files[i] for i in plain], _file_bytes, workers)):
        out[i] = f
    for archive, items in members.items():
        # names carry the archive's file name only: `source` when it is that archive, else the working folder
        # or where named datasets live (cifar10 is data_root()/cifar10-jpeg/cifar10-jpeg.zip)
        name = Path(archive).name
        found = [p for p in (source, Path(archive), data_root() / name, data_root() / Path(name).stem / name)
                 if p is not None and p.name == name and p.is_file()]
        try:
            zf = zipfile.ZipFile(found[0] if found else archive)
        except (OSError, zipfile.BadZipFile) as exc:
            for i, _ in items:
                out[i] = DecodeError(f"archive not readable ({exc}); pass source= the zip's path")
            continue
        with zf:
            for (i, _), f in zip(items, map_images(_facts, [m for _, m in items], lambda m: _member(zf, m), 1)):
                out[i] = f
    return out


def _spread(v: np.ndarray, digits: int = 0) -> dict:
    return {k: round(float(f(v)), digits) if digits else int(round(float(f(v))))
            for k, f in (("min", np.min), ("median", np.median), ("max", np.max))}


def _histogram(values: np.ndarray, edges: list[float], labels: list[str]) -> dict[str, int]:
    return {label: int(c) for label, c in zip(labels, np.histogram(values, bins=[*edges, np.inf])[0])}


def _size_stats(facts: list, decoded: tuple[int, int, int], findings: list[dict]) -> dict:
    ok = [f for f in facts if not isinstance(f, DecodeError)]
    modes = Counter(f[3] for f in ok)
    stats = {"read": len(ok), "unreadable": len(facts) - len(ok), "decoded_as": list(decoded),
             "modes": dict(modes.most_common())}
    if not ok:
        return stats
    w, h = np.array([f[1] for f in ok], dtype=np.float64), np.array([f[2] for f in ok], dtype=np.float64)
    stats |= {"width": _spread(w), "height": _spread(h), "aspect": _spread(w / h, 3),
              "longer_side": _histogram(np.maximum(w, h), [0, 32, 64, 128, 256, 512, 1024, 2048],
                                        ["<32", "32-63", "64-127", "128-255", "256-511", "512-1023", "1024-2047",
                                         ">=2048"]),
              "aspect_hist": _histogram(w / h, [0, 0.5, 0.8, 0.95, 1.05, 1.25, 2],
                                        ["<0.5 tall", "0.5-0.8", "0.8-0.95", "0.95-1.05 square", "1.05-1.25",
                                         "1.25-2", ">=2 wide"])}
    gray = sum(c for m, c in modes.items() if m in ("1", "L", "LA", "I", "I;16", "F"))
    if 0 < gray < len(ok):
        _add(findings, "info", "mixed_modes", f"{gray} of {len(ok)} files are grayscale ("
             f"{', '.join(f'{m} {c}' for m, c in modes.most_common())}); all become {decoded[0]} channel(s)")
    if small := int((np.minimum(w, h) < decoded[1]).sum()):
        _add(findings, "info", "upscaled", f"{small} images have a side under the {decoded[1]} px input: upscaled")
    return stats


# --- duplicates -----------------------------------------------------------------------------------------

def _entry(idx: list[int], ds: ImageSet, names: list[str], split_of: np.ndarray, findings: list[dict], near: bool,
           **extra) -> dict:
    """A duplicate group or pair, classified (leak across splits, label_conflict, else a plain duplicate) and
    added to `findings`."""
    e = {"indices": idx, "files": [ds.files[i] for i in idx] if ds.files is not None else [],
         "splits": [names[split_of[i]] if split_of[i] >= 0 else None for i in idx],
         "labels": [label_text(ds, i) for i in idx], **extra}
    e["kinds"] = ([k for k, hit in (("leak", len({s for s in e["splits"] if s}) > 1),
                                    ("label_conflict", len(set(e["labels"])) > 1)) if hit]
                  or ["near_duplicate" if near else "exact_duplicate"])
    shown = ", ".join(f"{e['files'][k] if e['files'] else f'image #{i}'} ({e['splits'][k]}, {e['labels'][k]})"
                      for k, i in enumerate(e["indices"][:4]))
    shown += f" and {len(e['indices']) - 4} more" * (len(e["indices"]) > 4)
    what = (f"near-identical (dHash {e['distance']}/64, corr {e['similarity']:.3f})" if near
            else f"{len(e['indices'])} identical {'files' if e['files'] else 'images'}")
    order = {s: k for k, s in enumerate(SPLITS)}
    splits = " and ".join(sorted({s for s in e["splits"] if s}, key=lambda s: (order.get(s, 9), s))) or "no split"
    for kind in e["kinds"]:
        level, where = {"leak": ("error", f"across {splits}"),  # evaluation would score images trained on
                        "label_conflict": ("error", f"labelled {' and '.join(sorted(set(e['labels'])))}"),
                        "exact_duplicate": ("warning", f"in {splits}"),  # counted several times in training
                        "near_duplicate": ("info", f"in {splits}")}[kind]
        _add(findings, level, kind, f"{what} {where}: {shown}", e["indices"], e["files"])
    return e


def _drops(groups: list[dict], pairs: list[dict], split_of: np.ndarray) -> list[int]:
    """Images to leave out so no duplicate crosses splits or labels. The copy in the later split stays (test
    over val over train: the evaluation split is the reference, the training copy is the leak), else the first."""
    dropped: set[int] = set()
    for g in groups:
        if {"leak", "label_conflict"} & set(g["kinds"]):
            label = dict(zip(g["indices"], g["labels"]))  # as label_text writes them: any task compares
            members = sorted(g["indices"], key=lambda i: (-split_of[i], i))
            head = (split_of[members[0]], label[members[0]])
            dropped |= {i for i in members if (split_of[i], label[i]) != head}
    for p in pairs:
        i, j = p["indices"]  # i < j
        if {"leak", "label_conflict"} & set(p["kinds"]) and i not in dropped and j not in dropped:
            dropped.add(i if split_of[i] < split_of[j] else j)
    return sorted(dropped)


def _capped(findings: list[dict]) -> list[dict]:
    """Errors first; at most _LISTED of each kind, the rest summed up in one line of the same level."""
    out, seen, total = [], Counter(), Counter(f["kind"] for f in findings)
    for f in sorted(findings, key=lambda f: _LEVELS[f["level"]]):
        seen[f["kind"]] += 1
        if seen[f["kind"]] <= _LISTED:
            out.append(f)
        elif seen[f["kind"]] == _LISTED + 1:
            more = f"... and {total[f['kind']] - _LISTED} more '{f['kind']}' (see duplicates and skipped)"
            out.append(dict(f, message=more, indices=[], files=[]))
    return out


# --- the report -------------------------------------------------------------------------------------------

def _near_pairs(images: np.ndarray, reps: np.ndarray, near_threshold: int) -> tuple[list[list], bool]:
    """[[i, j, hash distance, similarity], ...] of near-identical images among `reps`, in index order, and whether
    the search ran to the end."""
    if not len(reps):
        return [], True
    hashes, thumbs, means = signatures(images)
    a, b, complete = _hamming_pairs(hashes[reps], near_threshold)
    a, b = reps[a], reps[b]
    sim = similarity(thumbs, means, a, b)
    ok = sim >= MIN_SIMILARITY
    return [[i, j, int(np.bitwise_count(hashes[i] ^ hashes[j])), s]
            for i, j, s in sorted(zip(a[ok].tolist(), b[ok].tolist(), sim[ok].tolist()))], bool(complete)


def inspect_dataset(ds: ImageSet, parts: dict[str, np.ndarray], *, near_threshold: int = NEAR_THRESHOLD,
                    workers: int | None = None, source: str | Path | None = None) -> dict:
    """A JSON-serialisable report on `ds` split as `parts` ({'train': idx, 'val': idx, 'test': idx}).

    `source` is the folder or zip the images came from; only needed to reopen zip members, whose names
    (`photos.zip:cats/1.jpg`) carry the archive's file name but not its folder, when the zip is neither in the
    working folder nor under the data root.
    """
    if not 0 <= near_threshold <= 16:
        raise CnnfitError(f"near_threshold={near_threshold}: use 0-16 bits of the 64-bit hash "
                          f"(default {NEAR_THRESHOLD})")
    n, findings = len(ds), []
    split_of, names, aliases = _assign_splits(n, parts, findings)
    counts, imbalance = _counts(ds, parts, names, findings)
    counts |= {"aliases": aliases, "unassigned": int((split_of < 0).sum())}

    # exact duplicates: the same bytes (the same pixels without a file); one member of each searches for near ones
    files = None
    if ds.files is not None:  # one read per file gives the sha256 and the header for sizes and modes
        facts = _file_facts(ds.files, Path(source) if source is not None else None, workers)
        files = _size_stats(facts, ds.shape, findings)
        keys = [None if isinstance(f, DecodeError) else "file:" + f[0] for f in facts]
        if bad := [i for i, f in enumerate(facts) if isinstance(f, DecodeError)]:
            _add(findings, "warning", "unreadable", f"{len(bad)} files could not be reopened (moved since caching?); "
                 f"their decoded pixels are compared instead; {ds.files[bad[0]]}: {facts[bad[0]]}",
                 bad, [ds.files[i] for i in bad])
        same = same_keys(pixel_keys(ds.images, keys))
    else:  # the pixels alone decide: remembered with the cache, so a new seed's split skips the hashing
        same = remembered(ds, "pixels-sha256", "exact", lambda: same_keys(pixel_keys(ds.images, [None] * n)))
    skipped = [{"file": f, "reason": why} for f, why in ds.skipped]
    for s in skipped:
        _add(findings, "warning", "skipped", f"skipped {s['file']}: {s['reason']}", files=[s["file"]])
    members = {g[0]: g for g in same}
    groups = [_entry(g, ds, names, split_of, findings, near=False) for g in sorted(members.values())]

    # near duplicates: dHash within near_threshold bits, confirmed by thumbnails; pairs of groups pair all members
    reps = np.setdiff1d(np.arange(n, dtype=np.int64), [i for g in same for i in g[1:]])  # each group's first
    pairs: list[dict] = []
    side = min(ds.shape[1:]) if ds.native is None else min(ds.native, *ds.shape[1:])
    if side < MIN_NEAR_SIDE:  # a 9x8 hash of an 8x8 image says nothing, upscaled or not: digits all match
        reps = reps[:0]
        what = (f"the source's images are {ds.native} px (upscaled here to {ds.shape[1]})" if side < min(ds.shape[1:])
                else f"images of {ds.shape[1]} px are")
        _add(findings, "info", "near_search_skipped", f"near duplicates not searched: {what} under the "
             f"{MIN_NEAR_SIDE} px a perceptual hash needs; exact duplicates are complete")
    # the search depends on the images alone, not the split: remembered with the cache, each new seed skips it
    near, complete = remembered(ds, np.concatenate([reps, [near_threshold, -1]]), "near",
                                lambda: _near_pairs(ds.images, reps, near_threshold))
    for i, j, d, s in near:
        for x in members.get(i, [i]):
            for y in members.get(j, [j]):
                pairs.append(_entry(sorted((x, y)), ds, names, split_of, findings, near=True, distance=d,
                                    similarity=round(s, 4)))
    if not complete:
        _add(findings, "warning", "near_search_stopped", f"near-duplicate search stopped after {MAX_EXAMINED:,} "
             f"candidates or {MAX_FOUND:,} matches: too many images look alike at 9x8 pixels (digits on a plain "
             "background?); exact duplicates are complete")

    drop = _drops(groups, pairs, split_of)
    kinds = Counter(k for e in groups + pairs for k in e["kinds"])
    findings = _capped(findings)
    return {
        "images": n, "task": ds.task, "classes": list(ds.classes), "shape": list(ds.shape),
        "counts": counts, "imbalance": imbalance, "files": files, "skipped": skipped,
        "duplicates": {
            "exact_by": "file bytes (sha256)" if ds.files is not None else "decoded pixels (sha256)",
            "near_by": f"64-bit dHash within {near_threshold} bits, 16x16 correlation >= {MIN_SIMILARITY}, "
                       f"channel means within {MAX_COLOUR_SHIFT:.0f} levels",
            "near_complete": complete, "exact_groups": groups[:_KEPT], "near_pairs": pairs[:_KEPT]},
        "findings": findings,
        "summary": {**{f"{level}s": sum(f["level"] == level for f in findings) for level in _LEVELS},
                    "skipped": len(skipped), "exact_groups": len(groups),
                    "exact_extra_copies": sum(len(g["indices"]) - 1 for g in groups), "near_pairs": len(pairs),
                    "leaks": kinds["leak"], "label_conflicts": kinds["label_conflict"], "to_drop": len(drop)},
        "clean": {"drop": drop, "splits": [names[s] if s >= 0 else "" for s in split_of.tolist()]},
    }


def format_report(report: dict) -> list[str]:
    """Short lines for the console: an overview, the findings (errors first), and a one-line verdict."""
    s, c, imb, f = report["summary"], report["counts"], report["imbalance"], report["files"]
    splits = " / ".join(f"{k} {v:,}" + (f" (= {c['aliases'][k]})" if k in c["aliases"] else "")
                        for k, v in c["per_split"].items())
    key = next(k for k in ("per_class", "per_label", "target") if k in c)
    head = f"decoded {'x'.join(map(str, report['shape']))}; {splits}" + (
        f"; {c['unassigned']:,} in no split" if c["unassigned"] else "")
    if key == "target":  # regression: the targets' range and spread instead of counts
        t, hist = c["target"], c["target"]["histogram"]
        lines = [f"{report['images']:,} images, target '{t['name']}', {head}"]
        if "mean" in t:
            lines.append(f"target: {t['min']:g} to {t['max']:g}, mean {t['mean']:g}, std {t['std']:g}; "
                         f"10 bins from {hist['edges'][0]:g} to {hist['edges'][-1]:g}: "
                         + " ".join(map(str, hist["counts"])))
    else:
        what = "classes" if key == "per_class" else "labels"
        per = sorted(c[key].items(), key=lambda kv: -kv[1]["total"])
        lines = [f"{report['images']:,} images, {len(per)} {what}, {head}",
                 f"{what}: " + ", ".join(f"{k} {v['total']:,}" for k, v in per[:12]) + " ..." * (len(per) > 12),
                 f"imbalance ({imb['split']}): " + (f"{imb['ratio']:.1f}x, '{imb['largest']}' / '{imb['smallest']}'"
                                                    if imb["ratio"] is not None else f"'{imb['smallest']}' is empty")]
    if f and "width" in f:
        lines.append(f"sizes: {f['width']['min']}-{f['width']['max']} x {f['height']['min']}-{f['height']['max']} px "
                     f"(median {f['width']['median']}x{f['height']['median']}), aspect {f['aspect']['min']}-"
                     f"{f['aspect']['max']}; modes " + ", ".join(f"{m} {k:,}" for m, k in f["modes"].items()))
    lines.append(f"duplicates: {s['exact_groups']:,} exact groups ({s['exact_extra_copies']:,} extra copies), "
                 f"{s['near_pairs']:,} near pairs; {s['leaks']:,} across splits, {s['label_conflicts']:,} with "
                 f"conflicting labels; {s['skipped']:,} files skipped")
    lines += [f"{x['level']}: {x['message']}" for x in report["findings"][:40]]
    if len(report["findings"]) > 40:
        lines.append(f"... {len(report['findings']) - 40} more findings in the report")
    lines.append(f"{s['errors']} errors, {s['warnings']} warnings, {s['infos']} notes"
                 + (f"; leaving out {s['to_drop']:,} images removes every leak and label conflict "
                    "(write_clean_manifest)" if s["to_drop"] else ""))
    return lines


def write_clean_manifest(report: dict, ds: ImageSet, path: str | Path) -> Path:
    """Write `path,label,split` (`path,target,split` for regression) for every image the report keeps, labels as
    label_text writes them, so the manifest reads back as the same task; returns the CSV's path.

    `path` is the CSV file or a folder for `clean_manifest.csv`. Paths are written absolute so the manifest can
    move; zip members keep their `archive.zip:member` names, images without a file their index.
    """
    path = Path(path)
    if path.is_dir() or not path.suffix:
        path = path / "clean_manifest.csv"
    drop, splits = set(report["clean"]["drop"]), report["clean"]["splits"]
    if len(splits) != len(ds):
        raise CnnfitError(f"the report covers {len(splits)} images, the dataset {len(ds)}: inspect this dataset again")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(manifest_header(ds.task))
        for i in range(len(ds)):
            if i not in drop:
                f = i if ds.files is None else ds.files[i]
                on_disk = not isinstance(f, int) and not _ZIP_MEMBER.match(f) and Path(f).exists()
                out.writerow([Path(f).absolute() if on_disk else f,  # a zip member, a dataset's row, an index
                              manifest_cell(label_text(ds, i), ds.task), splits[i]])
    return path


__all__ = ["NEAR_THRESHOLD", "format_report", "inspect_dataset", "write_clean_manifest"]
