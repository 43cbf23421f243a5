import csv
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from cnnfit.data.imageset import ImageSet, split_indices
from cnnfit.data.inspect import _hamming_pairs, format_report, inspect_dataset, write_clean_manifest
from cnnfit.data.sources import data_root, read, resolve
from cnnfit.errors import CnnfitError
from cnnfit.eval.plots import plot_samples
from tests.conftest import make_folder


def _scene(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """A photo-like image: a colour gradient, 3-6 random shapes and sensor noise, so no two look alike."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    ramp = np.cos(a := rng.uniform(0, 2 * np.pi)) * xx + np.sin(a) * yy
    ramp = (ramp - ramp.min()) / max(np.ptp(ramp), 1e-6)
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    img = Image.fromarray((c0 + (c1 - c0) * ramp[..., None]).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(rng.integers(3, 7)):
        x0, y0 = rng.uniform(-w / 4, w), rng.uniform(-h / 4, h)
        box = [x0, y0, x0 + rng.uniform(w / 6, w / 2), y0 + rng.uniform(h / 6, h / 2)]
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape(box, fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    noisy = np.asarray(img, np.float64) + rng.normal(0, 8, (h, w, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def _by_kind(report: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for f in report["findings"]:
        out.setdefault(f["kind"], []).append(f)
    return out


def test_exact_duplicate_label_conflict_and_skipped_files(tmp_path):
    root = make_folder(tmp_path / "photos", per_class=10)
    shutil.copy(root / "red" / "1.jpg", root / "red" / "copy.jpg")  # the same file twice in one class
    shutil.copy(root / "red" / "2.png", root / "blue" / "from_red.png")  # the same image under another label
    (root / "green" / "broken.jpg").write_text("not an image")
    ds = read(resolve(str(root)), 32)
    report = inspect_dataset(ds, {"train": np.arange(len(ds))})
    kinds = _by_kind(report)
    copy = {str(root / "red" / "1.jpg"), str(root / "red" / "copy.jpg")}
    conflict = {str(root / "red" / "2.png"), str(root / "blue" / "from_red.png")}
    assert [set(f["files"]) for f in kinds["exact_duplicate"]] == [copy]
    assert [set(f["files"]) for f in kinds["label_conflict"]] == [conflict]
    assert kinds["exact_duplicate"][0]["level"] == "warning" and kinds["label_conflict"][0]["level"] == "error"
    assert not {"leak", "near_duplicate"} & kinds.keys()  # one split, and no two distinct images alike
    assert [s["file"] for s in report["skipped"]] == [str(root / "green" / "broken.jpg")]
    assert "not an image" in report["skipped"][0]["reason"] and kinds["skipped"][0]["level"] == "warning"
    assert {c: v["train"] for c, v in report["counts"]["per_class"].items()} == {"blue": 11, "green": 10, "red": 11}
    assert report["imbalance"]["ratio"] == 1.1
    files = report["files"]
    assert files["read"] == 32 and files["modes"] == {"RGB": 32}
    assert 24 <= files["width"]["min"] <= files["width"]["median"] <= files["width"]["max"] < 80
    assert sum(files["longer_side"].values()) == 32
    assert report["summary"]["label_conflicts"] == 1 and report["summary"]["exact_groups"] == 2
    assert report["clean"]["drop"] == [ds.files.index(str(root / "red" / "2.png"))]  # keep the first of a conflict
    json.dumps(report, allow_nan=False)
    lines = format_report(report)
    assert any(line.startswith("error: ") and "labelled blue and red" in line for line in lines)


def test_leak_after_jpeg_reencoding_found_exactly_and_cleaned(tmp_path):
    rng = np.random.default_rng(0)
    root, classes = tmp_path / "shapes", ("cat", "dog", "fox")
    for split, n in (("train", 80), ("test", 20)):
        for c in classes:
            for i in range(n):
                path = root / split / c / f"{i}.{'png' if i % 2 else 'jpg'}"
                path.parent.mkdir(parents=True, exist_ok=True)
                _scene(rng, (int(rng.integers(40, 97)), int(rng.integers(40, 97)))).save(path, quality=92)
    leaked = []  # 20 test images copied into train, re-encoded as JPEG quality 75
    for k in range(20):
        src = root / "test" / classes[k % 3] / f"{k}.{'png' if k % 2 else 'jpg'}"
        dst = root / "train" / classes[k % 3] / f"leak{k}.jpg"
        Image.open(src).save(dst, quality=75)
        leaked.append((str(src), str(dst)))
    ds = read(resolve(str(root)), 32)
    parts, _ = split_indices(ds, 0.15, 0.15, seed=0)  # the folders' split, val carved from train
    report = inspect_dataset(ds, parts)

    pairs = report["duplicates"]["near_pairs"]
    assert {frozenset(p["files"]) for p in pairs} == {frozenset(p) for p in leaked}  # all 20, and nothing else
    assert all(p["kinds"] == ["leak"] and "test" in p["splits"] for p in pairs)
    leaks = _by_kind(report)["leak"]
    assert len(leaks) == 20 and all(f["level"] == "error" for f in leaks)
    assert report["summary"]["exact_groups"] == 0 and report["summary"]["leaks"] == 20
    per_class = report["counts"]["per_class"]
    assert [per_class[c]["test"] for c in classes] == [20, 20, 20]
    assert [per_class[c]["train"] + per_class[c]["val"] for c in classes] == [87, 87, 86]
    assert report["counts"]["per_split"]["test"] == 60 and report["counts"]["unassigned"] == 0

    manifest = write_clean_manifest(report, ds, tmp_path)
    assert manifest == tmp_path / "clean_manifest.csv"
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    kept = {r["path"] for r in rows}
    assert len(rows) == len(ds) - 20 and not kept & {dst for _, dst in leaked} and {src for src, _ in leaked} <= kept
    assert {r["split"] for r in rows} == {"train", "val", "test"} and set(rows[0]) == {"path", "label", "split"}
    assert all(Path(f).exists() for f in ds.files)  # nothing is ever moved or deleted


def test_arrays_without_files_shared_test_split_and_imbalance(tmp_path):
    rng = np.random.default_rng(1)
    labels = np.array([0] * 40 + [1] * 15 + [2] * 5)
    images = rng.integers(0, 256, (60, 1, 16, 16), dtype=np.uint8)
    images[48] = images[1]  # same pixels: a train image again in val, under another label
    ds = ImageSet(images, labels, ["a", "b", "c"])
    idx = np.arange(60)
    val = idx[idx % 4 == 0]
    report = inspect_dataset(ds, {"train": idx[idx % 4 != 0], "val": val, "test": val})  # no test: test is val
    kinds = _by_kind(report)
    assert report["counts"]["aliases"] == {"test": "val"} and "shared_split" in kinds
    assert report["counts"]["per_split"] == {"train": 45, "val": 15, "test": 15}
    assert [f["indices"] for f in kinds["leak"]] == [f["indices"] for f in kinds["label_conflict"]] == [[1, 48]]
    train_counts = np.bincount(labels[idx % 4 != 0])
    assert report["imbalance"]["ratio"] == round(train_counts.max() / train_counts.min(), 3)
    assert kinds["imbalance"][0]["level"] == "warning"
    assert report["files"] is None and report["duplicates"]["exact_by"].startswith("decoded pixels")
    assert report["clean"]["drop"] == [1]  # the val copy is kept, the train copy goes
    assert report["findings"][0]["level"] == "error"
    with open(write_clean_manifest(report, ds, tmp_path / "clean.csv"), newline="") as f:
        rows = list(csv.reader(f))
    assert len(rows) == 1 + 59 and ["1", "a", "train"] not in rows and ["48", "b", "val"] in rows
    with pytest.raises(CnnfitError, match="near_threshold"):
        inspect_dataset(ds, {"train": idx}, near_threshold=40)
    ds.skipped = [(f"bad{k}.jpg", "empty file") for k in range(60)]  # many findings of a kind: 50, then a count
    skipped = _by_kind(inspect_dataset(ds, {"train": idx}))["skipped"]
    assert len(skipped) == 51 and skipped[-1]["message"].startswith("... and 10 more")


def test_zip_members_are_reopened_through_source(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "photos", per_class=4)
    shutil.copy(root / "red" / "1.jpg", root / "green" / "from_red.jpg")
    archive = tmp_path / "in" / "photos.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(root.rglob("*.*")):
            zf.write(f, f"photos/{f.relative_to(root).as_posix()}")
    ds = read(resolve(str(archive)), 24)
    assert ds.files[0].startswith("photos.zip:")
    monkeypatch.chdir(tmp_path)  # the names hold the archive's file name only, not its folder
    report = inspect_dataset(ds, {"train": np.arange(len(ds))}, source=archive)
    assert report["files"]["read"] == 13 and report["files"]["unreadable"] == 0
    assert [set(f["files"]) for f in _by_kind(report)["label_conflict"]] == [
        {"photos.zip:photos/red/1.jpg", "photos.zip:photos/green/from_red.jpg"}]
    monkeypatch.setenv("CNNFIT_DATA", str(tmp_path / "elsewhere"))
    blind = inspect_dataset(ds, {"train": np.arange(len(ds))})  # archive not found: pixels are compared instead
    assert blind["files"]["unreadable"] == 13 and "unreadable" in _by_kind(blind)
    assert blind["summary"]["label_conflicts"] == 1
    monkeypatch.setenv("CNNFIT_DATA", str(archive.parent))  # where named datasets live is looked at too
    assert inspect_dataset(ds, {"train": np.arange(len(ds))})["files"]["unreadable"] == 0


def test_hamming_search_matches_brute_force():
    rng = np.random.default_rng(2)
    h = rng.integers(0, 256, (4000, 8), dtype=np.uint8).view(np.uint64)[:, 0].copy()  # (4000,) random 64-bit
    for k, d in enumerate(range(0, 9)):  # plant pairs at distances 0..8 around threshold 6
        flip = rng.choice(64, d, replace=False)
        h[2000 + k] = h[k] ^ np.uint64(sum(1 << int(b) for b in flip))
    i, j, complete = _hamming_pairs(h, 6)
    dist = np.bitwise_count(h[:, None] ^ h[None, :])
    bi, bj = np.nonzero(np.triu(dist <= 6, k=1))
    assert complete and sorted(zip(i.tolist(), j.tolist())) == sorted(zip(bi.tolist(), bj.tolist()))
    assert {(k, 2000 + k) for k in range(7)} <= set(zip(i.tolist(), j.tolist()))
    assert not _hamming_pairs(np.zeros(3000, np.uint64), 6, budget=100_000)[2]  # all alike: stops, says so


def test_seventy_thousand_images_bucketed_search():
    rng = np.random.default_rng(3)
    n = 70_000
    texture = np.kron(rng.integers(0, 256, (n, 1, 14, 14)), np.ones((1, 1, 2, 2)))  # (N, 1, 28, 28) blocky noise
    images = np.clip(texture + rng.normal(0, 4, texture.shape), 0, 255).astype(np.uint8)
    images[-20:] = np.clip(images[:20] + rng.normal(0, 3, (20, 1, 28, 28)), 0, 255).astype(np.uint8)  # noisy copies
    idx = np.arange(n)
    ds = ImageSet(images, idx % 10, list("0123456789"))
    report = inspect_dataset(ds, {"train": idx[:60_000], "test": idx[60_000:]})  # ~1 s; all pairs would take ~12 s
    assert [p["indices"] for p in report["duplicates"]["near_pairs"]] == [[k, n - 20 + k] for k in range(20)]
    assert report["summary"]["leaks"] == 20 and report["duplicates"]["near_complete"]


def test_no_false_near_duplicates_among_real_photos(tmp_path):
    full = data_root() / "cifar10-jpeg" / "cifar10-jpeg.zip"
    if not full.is_file():
        pytest.skip(f"{full} not found (CNNFIT_DATA): no real photos to check against")
    small = tmp_path / "cifar-small.zip"
    with zipfile.ZipFile(full) as src, zipfile.ZipFile(small, "w") as dst:
        taken: dict[str, int] = {}
        for name in sorted(n for n in src.namelist() if n.endswith(".jpg") and "/train/" in n):
            cls = name.split("/")[-2]
            if taken.get(cls, 0) < 100:
                taken[cls] = taken.get(cls, 0) + 1
                dst.writestr(name, src.read(name))
    ds = read(resolve(str(small)))
    parts, _ = split_indices(ds, 0.15, 0.15, seed=0)
    report = inspect_dataset(ds, parts, source=small)
    assert len(ds) == 1000 and report["files"]["read"] == 1000 and report["files"]["modes"] == {"RGB": 1000}
    assert report["duplicates"]["near_pairs"] == [] and report["duplicates"]["exact_groups"] == []


def test_plot_samples_writes_a_grid(tmp_path):
    images, labels = torch.rand(70, 3, 32, 32), torch.randint(0, 3, (70,))
    plot_samples(images, labels, ["cat", "dog", "fox"], tmp_path / "samples.png")
    with Image.open(tmp_path / "samples.png") as img:
        assert 800 < img.width < 2000 and 800 < img.height < 2000  # 8 x 8 tiles of ~140 px
    soft = np.eye(2)[[0, 1, 1, 0, 1]]  # mixup-style soft labels show their top class
    plot_samples(np.random.default_rng(0).random((5, 1, 28, 28)), soft, ["0", "1"], tmp_path / "gray.png")
    with Image.open(tmp_path / "gray.png") as img:
        assert img.width > 2 * img.height  # one row of five


@pytest.mark.parametrize("size", [None, 16, 32])
def test_tiny_images_skip_the_near_search_instead_of_flagging_lookalikes(size):
    """8x8 digits: every "3" looks like every other "3" to a perceptual hash, and still does upscaled (at 16 px
    the search used to flag 10,171 leaks); the decoded size is not the information the images hold."""
    ds = read(resolve("digits"), size=size)
    assert ds.native == (8 if size else None)
    parts, _ = split_indices(ds, 0.15, 0.15, seed=0)
    report = inspect_dataset(ds, parts)
    assert report["summary"]["errors"] == 0 and report["duplicates"]["near_pairs"] == []
    (skipped,) = _by_kind(report)["near_search_skipped"]
    assert ("upscaled here to" in skipped["message"]) == (size is not None)


def _manifest(root, rows, header):
    """A CSV manifest of distinct generated photos; a repeated name is the same file under a second row."""
    rng = np.random.default_rng(4)
    for name in dict.fromkeys(n for n, _ in rows):
        _scene(rng, (32, 32)).save(root / name)
    (root / "m.csv").write_text("\n".join([header] + [f"{n},{cell}" for n, cell in rows]) + "\n")
    return resolve(str(root / "m.csv"))


def test_multilabel_report_counts_labels_and_cleans_conflicts(tmp_path):
    rows = [(f"{i}.png", ("cat", "cat;dog", "dog", "cat;bird")[i % 4]) for i in range(24)]
    rows.append(("0.png", "dog"))  # the same file under another label set: a conflict to leave out
    ds = read(_manifest(tmp_path, rows, "path,label"), 32, task="multilabel")
    report = inspect_dataset(ds, {"train": np.arange(len(ds))})
    assert report["task"] == "multilabel"
    assert {k: v["train"] for k, v in report["counts"]["per_label"].items()} == {"bird": 6, "cat": 18, "dog": 13}
    assert report["imbalance"]["ratio"] == 3.0 and _by_kind(report)["imbalance"][0]["message"].startswith("label 'cat'")
    assert any("labelled cat and dog" in line for line in format_report(report))
    assert report["clean"]["drop"] == [len(ds) - 1]
    again = read(resolve(str(write_clean_manifest(report, ds, tmp_path / "clean.csv"))), 32)
    assert again.task == "multilabel" and again.classes == ds.classes  # single labels written 'cat;'
    assert again.labels.tolist() == ds.labels[:-1].tolist()


def test_regression_report_summarizes_targets_and_reads_back(tmp_path):
    rows = [(f"{i}.png", f"{i * 2.5:g}") for i in range(20)] + [("3.png", "99")]  # a copy with another target
    ds = read(_manifest(tmp_path, rows, "path,target"), 32)
    report = inspect_dataset(ds, {"train": np.arange(15), "test": np.arange(15, 21)})
    target = report["counts"]["target"]
    assert report["task"] == "regress" and report["imbalance"] is None and "imbalance" not in _by_kind(report)
    assert (target["min"], target["max"], sum(target["histogram"]["counts"])) == (0.0, 99.0, 21)
    assert target["per_split"]["test"]["max"] == 99.0 and len(target["histogram"]["edges"]) == 11
    assert report["summary"]["leaks"] == 1 and report["clean"]["drop"] == [3]  # the test copy stays
    assert any(line.startswith("target: 0 to 99") for line in format_report(report))
    manifest = write_clean_manifest(report, ds, tmp_path / "clean.csv")
    assert manifest.read_text().splitlines()[0] == "path,target,split"
    again = read(resolve(str(manifest)), 32)
    assert again.task == "regress" and again.labels.tolist() == np.delete(ds.labels, 3).tolist()


def test_near_duplicate_search_is_remembered_for_other_splits(tmp_path, monkeypatch):
    """The search depends on the images alone: a run with another seed (another val split) reuses it."""
    import cnnfit.data.inspect as inspect_module
    from cnnfit.data.cache import load_imageset

    rng = np.random.default_rng(1)
    root = tmp_path / "shapes"
    for c in ("cat", "dog"):
        for i in range(30):
            path = root / c / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            _scene(rng, (48, 48)).save(path)
    for k in range(4):  # re-encoded copies: near, not exact, duplicates
        Image.open(root / "cat" / f"{k}.png").convert("RGB").save(root / "cat" / f"copy{k}.jpg", quality=75)
    ds, _ = load_imageset(resolve(str(root)), 32)
    first = inspect_dataset(ds, split_indices(ds, 0.2, 0.2, seed=0)[0])
    monkeypatch.setattr(inspect_module, "_near_pairs", lambda *a: pytest.fail("near duplicates searched again"))
    second = inspect_dataset(ds, split_indices(ds, 0.2, 0.2, seed=1)[0])
    pairs = [{frozenset(p["files"]) for p in r["duplicates"]["near_pairs"]} for r in (first, second)]
    assert len(pairs[0]) == 4 and pairs[0] == pairs[1]
