"""MNIST-format releases by name: QMNIST's int32 label files, EMNIST's six sets in one archive folder, and the
EMNIST download (its official zip) against a server on 127.0.0.1. (Plain idx folders: test_sources.py.)"""

import gzip
import hashlib
import io
import zipfile

import numpy as np
import pytest

from cnnfit.data import download as dl
from cnnfit.data.sources import read, resolve
from cnnfit.errors import CnnfitError
from tests.conftest import glyph, upright
from tests.local_server import LocalServer


def _idx(arr: np.ndarray, code: int = 0x08) -> bytes:
    header = bytes([0, 0, code, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return gzip.compress(header + arr.astype(">i4" if code == 0x0C else np.uint8).tobytes())


def _emnist_files(name: str, n_train: int = 24, n_test: int = 6, first: int = 1) -> dict[str, bytes]:
    """One EMNIST set as its archive holds it: transposed images, labels from `first`, a mapping file."""
    files = {}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = np.arange(n) % 3 + first
        files[f"{name}-{split}-images-idx3-ubyte.gz"] = _idx(np.stack([glyph(int(v)).T for v in labels]))
        files[f"{name}-{split}-labels-idx1-ubyte.gz"] = _idx(labels)
    files[f"{name}-mapping.txt"] = "".join(f"{v} {48 + v}\n" for v in range(first, first + 3)).encode()
    return files


def test_qmnist_int32_labels_read_their_class_column(tmp_path, monkeypatch):
    folder = tmp_path / "qmnist"
    folder.mkdir()
    for split, n in (("train", 20), ("test", 10)):
        labels = np.arange(n) % 4
        extended = np.stack([labels, labels + 100, np.full(n, 7), *[np.zeros(n)] * 5], axis=1)  # (N, 8), class first
        (folder / f"qmnist-{split}-images-idx3-ubyte.gz").write_bytes(_idx(np.stack([glyph(int(v)) for v in labels])))
        (folder / f"qmnist-{split}-labels-idx2-int.gz").write_bytes(_idx(extended, 0x0C))
    monkeypatch.setenv("CNNFIT_DATA", str(tmp_path))
    ds = read(resolve("qmnist"))
    assert ds.classes == ["0", "1", "2", "3"] and np.bincount(ds.origin).tolist() == [20, 0, 10]
    assert ds.labels[:5].tolist() == [0, 1, 2, 3, 0] and upright(ds.images[3, 0], 3)
    import cnnfit

    run = cnnfit.train(data="qmnist", epochs=1, project=str(tmp_path / "runs"), **{"eval.report": False})
    assert run.metrics["classes"] == ["0", "1", "2", "3"] and run.metrics["split"] == "test"


def test_each_emnist_set_reads_its_own_files_from_the_shared_folder(tmp_path, monkeypatch):
    folder = tmp_path / "emnist" / "gzip"
    folder.mkdir(parents=True)
    for name, blob in {**_emnist_files("emnist-letters"), **_emnist_files("emnist-digits", 12, 3, 0)}.items():
        (folder / name).write_bytes(blob)
    monkeypatch.setenv("CNNFIT_DATA", str(tmp_path))
    letters, digits = read(resolve("emnist-letters")), read(resolve("emnist-digits"))
    assert letters.classes == ["1", "2", "3"] and len(letters) == 30 and upright(letters.images[1, 0], 2)
    assert digits.classes == ["0", "1", "2"] and len(digits) == 15
    with pytest.raises(CnnfitError, match="several idx sets"):
        resolve(str(folder))  # six sets in one folder, given by path: which one is not guessed


def test_emnist_downloads_its_official_zip_checked_and_unpacked(tmp_path, monkeypatch):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, blob in _emnist_files("emnist-balanced").items():
            zf.writestr(f"gzip/{name}", blob)
    body = buf.getvalue()
    server = LocalServer()
    try:
        server.serve("gzip.zip", body)
        monkeypatch.setitem(dl.OFFICIAL, "emnist", (server.url, [("gzip.zip", hashlib.md5(body).hexdigest())]))
        monkeypatch.setenv("CNNFIT_DATA", str(tmp_path / "root"))
        with pytest.raises(CnnfitError, match="data.download=true"):
            resolve("emnist-balanced")
        ds = read(resolve("emnist-balanced", download=True))
        assert len(ds) == 30 and upright(ds.images[0, 0], 1) and np.bincount(ds.origin).tolist() == [24, 0, 6]
        assert server.requests == ["/gzip.zip"]
        server.serve("gzip.zip", body[:-10] + b"0123456789")  # tampered: the md5 no longer matches
        monkeypatch.setenv("CNNFIT_DATA", str(tmp_path / "other"))
        with pytest.raises(CnnfitError, match="corrupt") as err:
            resolve("emnist-letters", download=True)
        assert "\n" not in str(err.value) and not (tmp_path / "other" / "emnist" / "gzip.zip").exists()
    finally:
        server.stop()
