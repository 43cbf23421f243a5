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
