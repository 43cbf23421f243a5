"""MATLAB .mat files (SVHN's release and any v5 file of arrays), written with scipy.io.savemat."""

import numpy as np
import pytest
import scipy.io

from cnnfit.data.sources import read, resolve
from cnnfit.errors import CnnfitError
from tests.conftest import glyph, upright


def _svhn_file(path, labels):
    """SVHN's layout: X (32, 32, 3, N) uint8, y (N, 1) with the digit 0 labelled 10."""
    x = np.stack([np.repeat(glyph(v % 10, 32)[:, :, None], 3, axis=2) for v in labels], axis=3)
    scipy.io.savemat(path, {"X": x, "y": np.asarray(labels, np.uint8)[:, None]})


def test_an_svhn_folder_reads_upright_digits_with_0_for_10_and_trains(tmp_path):
    folder = tmp_path / "svhn"
    folder.mkdir()
    _svhn_file(folder / "train_32x32.mat", [10, 1, 2] * 12)
    _svhn_file(folder / "test_32x32.mat", [10, 1, 2] * 4)
    ref = resolve(str(folder))
    assert ref.kind == "svhn"
    ds = read(ref)
    assert ds.classes == ["0", "1", "2"] and ds.labels[:3].tolist() == [0, 1, 2]
    assert ds.images.shape == (48, 3, 32, 32) and np.bincount(ds.origin).tolist() == [36, 0, 12]
    assert upright(ds.images[1, 0], 1) and upright(ds.images[2, 1], 2)
    import cnnfit

    run = cnnfit.train(data=str(folder), epochs=1, project=str(tmp_path / "runs"), **{"eval.report": False})
    assert run.metrics["classes"] == ["0", "1", "2"] and run.metrics["split"] == "test"


def test_the_named_svhn_set_reads_from_the_data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNFIT_DATA", str(tmp_path))
    with pytest.raises(CnnfitError, match="data.download=true"):
        resolve("svhn")
    (tmp_path / "svhn").mkdir()
    _svhn_file(tmp_path / "svhn" / "train_32x32.mat", [1, 2, 3])
    _svhn_file(tmp_path / "svhn" / "test_32x32.mat", [3])
    assert len(read(resolve("svhn"))) == 4


def test_one_mat_file_of_images_and_labels_reads_without_a_split(tmp_path):
    f = tmp_path / "parts.mat"
    images = np.stack([glyph(v, 20) for v in (1, 2) * 5]).astype(np.float64) / 255  # (N, H, W) in [0, 1]
    scipy.io.savemat(f, {"images": images, "labels": np.array(["bolt", "nut"] * 5)})
    ds = read(resolve(str(f)))
    assert ds.classes == ["bolt", "nut"] and ds.origin is None and ds.images.shape == (10, 1, 20, 20)
    assert upright(ds.images[0, 0], 1)


def test_damaged_or_unfit_mat_files_are_one_line_errors(tmp_path):
    good = tmp_path / "train_32x32.mat"
    _svhn_file(good, [1, 2, 3, 4])
    cut = tmp_path / "cut.mat"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    junk = tmp_path / "junk.mat"
    junk.write_bytes(b"MATLAB 5.0 MAT-file, but nothing after it")
    other = tmp_path / "other.mat"
    scipy.io.savemat(other, {"weights": np.zeros(3)})
    for f, why in ((cut, "not a readable MATLAB file"), (junk, "not a readable MATLAB file"),
                   (other, "needs an images array")):
        with pytest.raises(CnnfitError, match=why) as err:
            read(resolve(str(f)))
        assert "\n" not in str(err.value)
