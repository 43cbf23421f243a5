"""CIFAR's binary version: records of label bytes and 3x32x32 pixels (the python version: test_sources.py)."""

import numpy as np
import pytest

from cnnfit.data.sources import read, resolve
from cnnfit.errors import CnnfitError
from tests.conftest import glyph, upright


def _records(labels, label_bytes):
    rows = []
    for v in labels:
        pixels = np.stack([glyph(int(v) + 1, 32)] * 3).tobytes()  # red, green, blue planes, row by row
        rows.append(bytes([int(v) // 2] * (label_bytes - 1) + [int(v)]) + pixels)  # CIFAR-100: coarse, fine
    return b"".join(rows)


def _cifar10_binary(folder, per_batch=6):
    folder.mkdir(parents=True)
    for f in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        (folder / f).write_bytes(_records(np.arange(per_batch) % 3, 1))
    (folder / "batches.meta.txt").write_text("airplane\nautomobile\nbird\n\n")
    return folder


def test_cifar10_binary_batches_read_upright_with_their_split_and_train(tmp_path):
    root = tmp_path / "cifar"
    _cifar10_binary(root / "cifar-10-batches-bin")
    ds = read(resolve(str(root)))
    assert ds.classes == ["airplane", "automobile", "bird"]
    assert ds.images.shape == (36, 3, 32, 32) and np.bincount(ds.origin).tolist() == [30, 0, 6]
    assert upright(ds.images[2, 2], 3)
    import cnnfit

    run = cnnfit.train(data=str(root), epochs=1, project=str(tmp_path / "runs"), **{"eval.report": False})
    assert run.metrics["classes"] == ["airplane", "automobile", "bird"] and run.metrics["split"] == "test"


def test_cifar100_binary_reads_the_fine_labels(tmp_path, monkeypatch):
    folder = tmp_path / "cifar100" / "cifar-100-binary"
    folder.mkdir(parents=True)
    (folder / "train.bin").write_bytes(_records([0, 1, 2, 3], 2))
    (folder / "test.bin").write_bytes(_records([3, 2], 2))
    (folder / "fine_label_names.txt").write_text("apple\nbed\ncamel\ndolphin\n")
    (folder / "coarse_label_names.txt").write_text("fruit\nthings\n")
    monkeypatch.setenv("CNNFIT_DATA", str(tmp_path))
    ds = read(resolve("cifar100"))
    assert ds.classes == ["apple", "bed", "camel", "dolphin"] and ds.labels.tolist() == [0, 1, 2, 3, 3, 2]
    assert np.bincount(ds.origin).tolist() == [4, 0, 2] and upright(ds.images[1, 0], 2)


def test_a_truncated_or_mislabelled_binary_batch_is_a_one_line_error(tmp_path):
    cut = _cifar10_binary(tmp_path / "cut")
    (cut / "data_batch_3.bin").write_bytes((cut / "data_batch_3.bin").read_bytes()[:-7])
    bad = _cifar10_binary(tmp_path / "bad")
    (bad / "test_batch.bin").write_bytes(_records([9], 1))  # label 9 with three class names
    for folder, why in ((cut, "not a whole number of 3073-byte CIFAR records"), (bad, "labels run to 9")):
        with pytest.raises(CnnfitError, match=why) as err:
            read(resolve(str(folder)))
        assert "\n" not in str(err.value)


def test_cifar10_python_batches_read_upright_and_train(tmp_path):
    import pickle

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for f in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = [0, 1, 2, 0, 1, 2]
        rows = np.stack([np.stack([glyph(v + 1, 32)] * 3).reshape(-1) for v in labels])  # (N, 3072) as CIFAR's
        (folder / f).write_bytes(pickle.dumps({b"data": rows, b"labels": labels}, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"cat", b"dog", b"ship"]}, protocol=2))
    ds = read(resolve(str(tmp_path)))
    assert ds.classes == ["cat", "dog", "ship"] and np.bincount(ds.origin).tolist() == [30, 0, 6]
    assert upright(ds.images[1, 0], 2)
    import cnnfit

    run = cnnfit.train(data=str(tmp_path), epochs=1, project=str(tmp_path / "runs"), **{"eval.report": False})
    assert run.metrics["classes"] == ["cat", "dog", "ship"] and run.metrics["split"] == "test"
