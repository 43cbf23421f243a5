"""NumPy .npz files of image arrays, written with numpy.savez (bombs and overstated headers: tests/security)."""

import numpy as np
import pytest

from cnnfit.data.sources import read, resolve
from cnnfit.errors import CnnfitError
from tests.conftest import glyph, upright


def test_keras_style_arrays_keep_their_split_read_upright_and_train(tmp_path):
    f = tmp_path / "glyphs.npz"
    y_train, y_test = np.arange(30) % 3, np.arange(9) % 3
    np.savez(f, x_train=np.stack([glyph(int(v)) for v in y_train]), y_train=y_train,
             x_test=np.stack([glyph(int(v)) for v in y_test]), y_test=y_test)
    ds = read(resolve(str(f)))
    assert ds.classes == ["0", "1", "2"] and np.bincount(ds.origin).tolist() == [30, 0, 9]
    assert ds.images.shape == (39, 1, 28, 28) and upright(ds.images[2, 0], 2)
    import cnnfit

    run = cnnfit.train(data=str(f), epochs=1, project=str(tmp_path / "runs"), **{"eval.report": False})
    assert run.metrics["classes"] == ["0", "1", "2"] and run.metrics["split"] == "test"


def test_a_truncated_npz_is_a_one_line_error(tmp_path):
    f = tmp_path / "cut.npz"
    np.savez(f, images=np.zeros((20, 8, 8), np.uint8), labels=np.arange(20) % 2)
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(CnnfitError, match="not a readable .npz") as err:
        read(resolve(str(f)))
    assert "\n" not in str(err.value)
