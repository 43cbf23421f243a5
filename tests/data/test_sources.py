import gzip
import pickle
import zipfile

import numpy as np
import pytest
from PIL import Image

from cnnfit.data.sources import read, resolve
from cnnfit.errors import CnnfitError
from tests.conftest import glyph, make_folder, shared_dataset, write_image


def test_folder_of_class_folders(image_folder):
    ds = read(resolve(str(image_folder)), 16)
    assert ds.classes == ["blue", "green", "red"]
    assert ds.images.shape == (90, 3, 16, 16) and ds.images.dtype == np.uint8
    assert ds.origin is None and not ds.skipped
    assert np.bincount(ds.labels).tolist() == [30, 30, 30]


def test_split_folders_hidden_files_and_case(tmp_path):
    root = make_folder(tmp_path / "d", per_class=4, splits=("train", "Valid", "test"))
    rng = np.random.default_rng(0)
    write_image(root / "train" / "red" / "UPPER.JPG", (200, 0, 0), (20, 20), rng)
    write_image(root / "train" / ".hidden" / "x.png", (0, 0, 0), (20, 20), rng)
    write_image(root / "train" / "red" / ".x.png", (0, 0, 0), (20, 20), rng)
    (root / "train" / "notes.txt").write_text("ignored: not an image name")
    ds = read(resolve(str(root)), 16)
    assert ds.classes == ["blue", "green", "red"]
    assert np.bincount(ds.origin).tolist() == [13, 12, 12]  # UPPER.JPG counted, hidden ones not
    assert not ds.skipped


def test_bad_files_are_skipped_and_listed(image_folder):
    (image_folder / "red" / "empty.jpg").write_bytes(b"")
    (image_folder / "red" / "fake.png").write_text("hello")
    good = (image_folder / "green" / "1.jpg").read_bytes()
    (image_folder / "green" / "cut.jpg").write_bytes(good[: len(good) // 2])
    ds = read(resolve(str(image_folder)), 16)
    assert len(ds) == 90  # every good image kept
    assert sorted(f.rsplit("/", 1)[1] for f, _ in ds.skipped) == ["cut.jpg", "empty.jpg", "fake.png"]


def test_zip_with_a_wrapping_folder(tmp_path, image_folder):
    z = tmp_path / "photos.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for f in sorted(image_folder.rglob("*.*")):
            zf.write(f, f"photos/train/{f.relative_to(image_folder)}")
    ds = read(resolve(str(z)), 16)
    ref = read(resolve(str(image_folder)), 16)
    assert ds.classes == ref.classes
    assert (ds.images == ref.images).all()
    assert (ds.origin == 0).all()


def _write_idx(path, arr, gz):
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    (gzip.open(path.with_name(path.name + ".gz"), "wb") if gz else open(path, "wb")).write(data)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_files(tmp_path, gz):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 30), ("t10k", 10)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", rng.integers(0, 255, (n, 28, 28)), gz)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10, gz)
    ds = read(resolve(str(tmp_path)))
    assert ds.images.shape == (40, 1, 28, 28)
    assert np.bincount(ds.origin).tolist() == [30, 0, 10]
    assert ds.labels[:12].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]


def test_emnist_idx_files_read_upright_with_their_class_names_and_train(tmp_path):
    """EMNIST's release: prefixed names, labels from 1, a mapping of label to character, images stored transposed."""
    folder = tmp_path / "emnist"
    folder.mkdir()
    for split, n in (("train", 36), ("test", 12)):
        labels = np.arange(n) % 3 + 1  # letters: 1-based
        images = np.stack([glyph(int(v)).T for v in labels])  # stored as EMNIST stores them: transposed
        _write_idx(folder / f"emnist-letters-{split}-images-idx3-ubyte", images, gz=True)
        _write_idx(folder / f"emnist-letters-{split}-labels-idx1-ubyte", labels, gz=True)
    (folder / "emnist-letters-mapping.txt").write_text("1 65 97\n2 66 98\n3 67 99\n")
    ds = read(resolve(str(folder)))
    assert ds.classes == ["A/a", "B/b", "C/c"] and ds.labels[:4].tolist() == [0, 1, 2, 0]
    assert np.bincount(ds.origin).tolist() == [36, 0, 12]
    assert (ds.images[0, 0] == glyph(1)).all()  # upright: the bar is along the top
    import cnnfit

    run = cnnfit.train(data=str(folder), epochs=1, project=str(tmp_path / "runs"), **{"eval.report": False})
    assert run.metrics["classes"] == ["A/a", "B/b", "C/c"] and run.metrics["split"] == "test"


def test_idx_folders_that_cannot_be_read_say_why_in_one_line(tmp_path):
    rng = np.random.default_rng(0)
    for prefix in ("emnist-digits", "emnist-letters"):
        for split in ("train", "test"):
            _write_idx(tmp_path / f"{prefix}-{split}-images-idx3-ubyte", rng.integers(0, 255, (4, 28, 28)), False)
            _write_idx(tmp_path / f"{prefix}-{split}-labels-idx1-ubyte", np.arange(4), False)
    with pytest.raises(CnnfitError, match="several idx sets"):
        read(resolve(str(tmp_path)))
    one = tmp_path / "one"
    one.mkdir()
    for split in ("train", "test"):
        _write_idx(one / f"{split}-images-idx3-ubyte", rng.integers(0, 255, (4, 28, 28)), False)
        _write_idx(one / f"{split}-labels-idx1-ubyte", np.arange(5), False)
    with pytest.raises(CnnfitError, match="do not belong together"):
        read(resolve(str(one)))
    (one / "test-images-idx3-ubyte").write_bytes(b"\0\0\x08\x03" + b"\0\0\0\x04" * 3 + b"\0" * 10)
    with pytest.raises(CnnfitError, match="truncated"):
        read(resolve(str(one)))


def test_cifar_python_batches(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 255, (4, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 1]}
        (d / name).write_bytes(pickle.dumps(batch))
    (d / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"cat", b"dog", b"ship"]}))
    ds = read(resolve(str(tmp_path)))
    assert ds.images.shape == (24, 3, 32, 32)
    assert ds.classes == ["cat", "dog", "ship"]
    assert np.bincount(ds.origin).tolist() == [20, 0, 4]


def test_npz_channels_last_arrays(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", images=rng.integers(0, 255, (12, 10, 10, 3), dtype=np.uint8),
             labels=np.array([3, 7] * 6))
    ds = read(resolve(str(tmp_path / "d.npz")), 8)
    assert ds.images.shape == (12, 3, 8, 8)
    assert ds.classes == ["3", "7"] and ds.labels.tolist() == [0, 1] * 6


def test_digits_is_built_in():
    ds = read(resolve("digits"))
    assert ds.images.shape == (1797, 1, 8, 8) and ds.images.max() == 255 and len(ds.classes) == 10


@pytest.mark.parametrize("spec, fragment", [
    ("no/such/folder", "not found"),
    ("cifar100", "not found under the data root"),
])
def test_unknown_sources_say_what_was_looked_for(spec, fragment, tmp_path, monkeypatch):
    monkeypatch.setenv("CNNFIT_DATA", str(tmp_path))
    with pytest.raises(CnnfitError, match=fragment):
        resolve(spec)


def test_folder_without_class_folders_is_refused(tmp_path):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(CnnfitError, match="one sub-folder per class"):
        read(resolve(str(tmp_path)))


def test_real_fashion_mnist_reads_with_its_split():
    shared_dataset("fashion-mnist")
    ds = read(resolve("fashion-mnist"))
    assert ds.images.shape == (70000, 1, 28, 28)
    assert np.bincount(ds.origin).tolist() == [60000, 0, 10000]
    assert ds.classes[9] == "Ankle boot" and np.bincount(ds.labels).tolist() == [7000] * 10


def test_real_hymenoptera_keeps_train_val():
    root = shared_dataset("hymenoptera_data")
    ds = read(resolve(str(root)), 32)
    assert ds.classes == ["ants", "bees"]
    assert np.bincount(ds.origin).tolist() == [245 - len(ds.skipped), 153]
    assert len(ds) >= 397


def test_csv_manifest_with_and_without_split(tmp_path, image_folder):
    rows = [f"{f.relative_to(tmp_path)},{f.parent.name}" for f in sorted(image_folder.rglob("*.png"))]
    (tmp_path / "m.csv").write_text("path,label\n" + "\n".join(rows) + "\nphotos/red/missing.png,red\n")
    ds = read(resolve(str(tmp_path / "m.csv")), 16)
    assert len(ds) == 45 and ds.classes == ["blue", "green", "red"] and ds.origin is None
    assert [why for _, why in ds.skipped] and "missing.png" in ds.skipped[0][0]
    split_rows = [f"{r},{'test' if i % 5 == 0 else 'train'}" for i, r in enumerate(rows)]
    (tmp_path / "s.csv").write_text("\n".join(split_rows))
    ds = read(resolve(str(tmp_path / "s.csv")), 16)
    assert np.bincount(ds.origin).tolist() == [36, 0, 9]


def test_csv_manifest_errors(tmp_path):
    (tmp_path / "m.csv").write_text("a.png,cat,train\nb.png,dog\n")
    with pytest.raises(CnnfitError, match="for every row or for none"):
        read(resolve(str(tmp_path / "m.csv")))


def test_empty_class_folders_are_reported_and_exclude_leaves_files_out(image_folder):
    (image_folder / "purple").mkdir()
    ds = read(resolve(str(image_folder)), 16)
    assert ds.classes == ["blue", "green", "red"]
    assert [why for f, why in ds.skipped if f.endswith("purple/")] == ["empty class folder: no images, class left out"]
    fewer = read(resolve(str(image_folder), exclude=("red/1*.png", "*/blue/2.png")), 16)
    assert len(fewer) == len(ds) - 6  # red/10,12,14,16,18.png by relative path, blue/2.png by full path
    assert not [f for f in fewer.files if f.endswith(("red/10.png", "red/12.png"))]


def _manifest(root, rows, header="path,label"):
    """A CSV manifest of tiny generated PNGs: rows are (name, label cell)."""
    rng = np.random.default_rng(0)
    for name, _ in rows:
        write_image(root / name, (120, 60, 200), (8, 8), rng)
    text = ([header] if header else []) + [f"{name},{cell}" for name, cell in rows]
    (root / "labels.csv").write_text("\n".join(text) + "\n")
    return resolve(str(root / "labels.csv"))


def test_csv_with_several_labels_per_row_is_multilabel(tmp_path):
    ref = _manifest(tmp_path, [("a.png", "cat;outdoor"), ("b.png", "dog"), ("c.png", "dog; outdoor;dog")])
    ds = read(ref, 8)
    assert ds.task == "multilabel" and ds.classes == ["cat", "dog", "outdoor"]
    assert ds.labels.dtype == np.uint8 and ds.labels.tolist() == [[1, 0, 1], [0, 1, 0], [0, 1, 1]]


@pytest.mark.parametrize("header, cells, column", [
    ("path,target", ["1", "2", "3"], "target"),  # named by the header: integers too
    ("file,Value", ["0.5", "2", "-1e-1"], "Value"),
    ("", ["0.25", "1", "7.5"], "target"),  # no header: numbers that are not all integers
])
def test_csv_with_numbers_is_regression(tmp_path, header, cells, column):
    ref = _manifest(tmp_path, [(f"{i}.png", c) for i, c in enumerate(cells)], header)
    ds = read(ref, 8)
    assert ds.task == "regress" and ds.classes == [column]
    assert ds.labels.dtype == np.float32 and np.allclose(ds.labels, [float(c) for c in cells])


def test_csv_with_integer_labels_stays_classes(tmp_path):
    ds = read(_manifest(tmp_path, [("a.png", "0"), ("b.png", "1"), ("c.png", "2"), ("d.png", "1")]), 8)
    assert ds.task == "classify" and ds.classes == ["0", "1", "2"] and ds.labels.tolist() == [0, 1, 2, 1]


def test_forced_tasks(tmp_path):
    ref = _manifest(tmp_path, [("a.png", "cat"), ("b.png", "dog"), ("c.png", "cat")])
    one_each = read(ref, 8, task="multilabel")  # single labels are allowed: one per image
    assert one_each.task == "multilabel" and one_each.labels.tolist() == [[1, 0], [0, 1], [1, 0]]
    with pytest.raises(CnnfitError, match=r"labels.csv line 2: target 'cat' is not a number.*task=classify"):
        read(ref, 8, task="regress")
    with pytest.raises(CnnfitError, match="unknown task 'regression'; choose from: auto, classify"):
        read(ref, 8, task="regression")


def test_forcing_classify_on_several_labels_names_the_row(tmp_path):
    ref = _manifest(tmp_path, [("a.png", "cat"), ("b.png", "cat;dog")])
    with pytest.raises(CnnfitError, match="line 3: 'cat;dog' holds 2 labels.*task=multilabel"):
        read(ref, 8, task="classify")


def test_target_header_with_words_says_how_to_fix(tmp_path):
    ref = _manifest(tmp_path, [("a.png", "1.5"), ("b.png", "tall")], header="path,target")
    with pytest.raises(CnnfitError, match="line 3: target 'tall' is not a number.*rename the column to 'label'"):
        read(ref, 8)


def test_class_sources_under_other_tasks(tmp_path):
    folder = tmp_path / "photos"
    rng = np.random.default_rng(0)
    for i, name in enumerate(["a", "b", "a", "c"]):
        write_image(folder / name / f"{i}.png", (90, 90, 90), (8, 8), rng)
    hot = read(resolve(str(folder)), 8, task="multilabel")
    assert hot.task == "multilabel" and hot.labels.tolist() == [[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]
    with pytest.raises(CnnfitError, match="task=regress needs numeric targets.*path,target"):
        read(resolve(str(folder)), 8, task="regress")
