"""STL-10's binary release: uint8 planes stored column by column, labels 1..10, class_names.txt."""

import numpy as np
import pytest

from cnnfit.data.sources import read, resolve
from cnnfit.errors import CnnfitError
from tests.conftest import glyph, upright

NAMES = ["airplane", "bird", "car"]


def _stl10(folder, n_train=30, n_test=9):
    folder.mkdir(parents=True)
    for split, n in (("train", n_train), ("test", n_test)):
        labels = np.arange(n) % 3 + 1  # 1-based, as STL-10's
        planes = np.stack([np.stack([glyph(int(v), 96)] * 3) for v in labels])  # (N, 3, 96, 96) upright
        (folder / f"{split}_X.bin").write_bytes(planes.transpose(0, 1, 3, 2).tobytes())  # stored column-major
        (folder / f"{split}_y.bin").write_bytes(labels.astype(np.uint8).tobytes())
    (folder / "class_names.txt").write_text("\n".join(NAMES) + "\n")
    return folder


def test_stl10_binary_reads_upright_with_its_class_names_and_trains(tmp_path):
    root = tmp_path / "stl10"
    _stl10(root / "stl10_binary")
    ds = read(resolve(str(root)))
    assert ds.classes == NAMES and ds.labels[:4].tolist() == [0, 1, 2, 0]
    assert ds.images.shape == (39, 3, 96, 96) and np.bincount(ds.origin).tolist() == [30, 0, 9]
    assert upright(ds.images[2, 0], 3)
    import cnnfit

    run = cnnfit.train(data=str(root), epochs=1, project=str(tmp_path / "runs"),
                       **{"eval.report": False, "model.name": "simplecnn", "data.imgsz": 32})
    assert run.metrics["classes"] == NAMES and run.metrics["split"] == "test"


def test_a_truncated_stl10_file_is_a_one_line_error(tmp_path):
    folder = _stl10(tmp_path / "stl10_binary", 6, 3)
    x = folder / "test_X.bin"
    x.write_bytes(x.read_bytes()[:-100])
    with pytest.raises(CnnfitError, match="truncated or mismatched") as err:
        read(resolve(str(folder)))
    assert "\n" not in str(err.value)


def test_stl10_downloads_its_archive_without_the_unlabelled_images(tmp_path, monkeypatch):
    import hashlib
    import io
    import tarfile

    from cnnfit.data import download as dl
    from tests.local_server import LocalServer

    folder = _stl10(tmp_path / "made" / "stl10_binary", 6, 3)
    (folder / "unlabeled_X.bin").write_bytes(b"\0" * 27648)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(folder, "stl10_binary")
    body = buf.getvalue()
    server = LocalServer()
    try:
        server.serve("stl10_binary.tar.gz", body)
        listed = [("stl10_binary.tar.gz", hashlib.md5(body).hexdigest())]
        monkeypatch.setitem(dl.OFFICIAL, "stl10", (server.url, listed))
        monkeypatch.setenv("CNNFIT_DATA", str(tmp_path / "root"))
        ds = read(resolve("stl10", download=True))
    finally:
        server.stop()
    assert ds.classes == NAMES and np.bincount(ds.origin).tolist() == [6, 0, 3] and upright(ds.images[0, 0], 1)
    assert not (tmp_path / "root" / "stl10" / "stl10_binary" / "unlabeled_X.bin").exists()
