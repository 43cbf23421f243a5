"""Downloads, exercised against a local file:// mirror: the checks, never the network."""

import gzip
import hashlib

import numpy as np
import pytest

from cnnfit.data import download as dl
from cnnfit.data.sources import read, resolve
from cnnfit.errors import CnnfitError


def _idx(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return gzip.compress(header + arr.astype(np.uint8).tobytes())


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A fake 'mnist' whose official checksums are those of small local files."""
    src = tmp_path / "mirror"
    src.mkdir()
    rng = np.random.default_rng(0)
    blobs = {"train-images-idx3-ubyte.gz": _idx(rng.integers(0, 255, (20, 28, 28))),
             "train-labels-idx1-ubyte.gz": _idx(np.arange(20) % 10),
             "t10k-images-idx3-ubyte.gz": _idx(rng.integers(0, 255, (10, 28, 28))),
             "t10k-labels-idx1-ubyte.gz": _idx(np.arange(10) % 10)}
    for name, blob in blobs.items():
        (src / name).write_bytes(blob)
    files = [(n, hashlib.md5(b).hexdigest()) for n, b in blobs.items()]
    monkeypatch.setitem(dl.OFFICIAL, "mnist", ("https://example.invalid/", files))
    monkeypatch.setenv("CNNFIT_MIRROR", src.as_uri())
    monkeypatch.setenv("CNNFIT_DATA", str(tmp_path / "root"))
    return src


def test_named_dataset_downloads_verifies_and_reads(mirror, tmp_path):
    with pytest.raises(CnnfitError, match="data.download=true"):
        resolve("mnist")
    ds = read(resolve("mnist", download=True))
    assert ds.images.shape == (30, 1, 28, 28) and np.bincount(ds.origin).tolist() == [20, 0, 10]
    assert sorted(p.name for p in (tmp_path / "root" / "mnist").iterdir()) == sorted(
        n for n, _ in dl.OFFICIAL["mnist"][1])


def test_corrupt_download_leaves_nothing(mirror, tmp_path):
    (mirror / "t10k-labels-idx1-ubyte.gz").write_bytes(b"tampered")
    with pytest.raises(CnnfitError, match="corrupt"):
        dl.download("mnist", tmp_path / "root")
    assert not (tmp_path / "root" / "mnist" / "t10k-labels-idx1-ubyte.gz").exists()
    assert not [p for p in (tmp_path / "root" / "mnist").iterdir() if p.name.startswith(".")]


def test_unreachable_address_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNFIT_MIRROR", (tmp_path / "nowhere").as_uri())
    with pytest.raises(CnnfitError, match="cannot download"):
        dl.download("fashion-mnist", tmp_path / "root")
