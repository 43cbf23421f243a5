"""HDF5 files of image arrays: split groups, Keras names, an unsplit pair, ambiguity, damage and bombs."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from cnnfit.data.sources import read, resolve
from cnnfit.errors import CnnfitError
from tests.conftest import glyph


def _glyph(label: int, side: int = 16) -> np.ndarray:
    """An upright glyph: a bar along the top rows and `label + 1` dots down the left edge."""
    img = np.zeros((side, side), np.uint8)
    img[1:3, 3:13] = 255  # the top: an image read on its side would have this bar down the left
    img[5: 5 + 3 * (label + 1): 3, 1] = 200
    return img


def _rgb(labels: np.ndarray) -> np.ndarray:
    """(N, 16, 16, 3) uint8, channels last, the glyph in every channel."""
    return np.stack([np.repeat(_glyph(int(v))[..., None], 3, axis=2) for v in labels])


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_split_groups_with_class_names_read_upright_and_train(tmp_path):
    f = tmp_path / "glyphs.h5"
    with h5py.File(f, "w") as h:
        for split, n in (("train", 40), ("test", 12)):
            labels = np.arange(n) % 3
            h.create_dataset(f"{split}/images", data=_rgb(labels), compression="gzip")
            h[f"{split}/labels"] = labels.astype(np.int64)
        h.create_dataset("classes", data=["circle", "square", "star"], dtype=h5py.string_dtype())
    ds = read(resolve(str(f)))
    assert ds.images.shape == (52, 3, 16, 16)
    assert ds.classes == ["circle", "square", "star"] and ds.labels[:4].tolist() == [0, 1, 2, 0]
    assert np.bincount(ds.origin).tolist() == [40, 0, 12]
    assert (ds.images[1, 0] == _glyph(1)).all() and (ds.images[42, 2] == _glyph(2)).all()  # bar on top, dots left
    import cnnfit

    run = cnnfit.train(data=str(f), epochs=1, project=str(tmp_path / "runs"), **{"eval.report": False})
    assert run.metrics["classes"] == ["circle", "square", "star"] and run.metrics["split"] == "test"


def test_keras_names_val_split_and_label_attribute(tmp_path):
    f = tmp_path / "keras.hdf5"
    with h5py.File(f, "w") as h:
        for split, n in (("train", 9), ("val", 3), ("test", 6)):
            h[f"x_{split}"] = np.random.default_rng(n).integers(0, 255, (n, 8, 8), dtype=np.uint8)
            h[f"y_{split}"] = (np.arange(n) % 3 + 1).reshape(n, 1).astype(np.uint8)  # (N, 1), labels 1..3
        h["y_train"].attrs["class_names"] = np.array([b"ant", b"bee", b"cat"])
    ds = read(resolve(str(f)))
    assert ds.images.shape == (18, 1, 8, 8) and ds.classes == ["ant", "bee", "cat"]  # 1-based: the labels reach 3
    assert ds.labels[:3].tolist() == [0, 1, 2] and np.bincount(ds.origin).tolist() == [9, 3, 6]
    with h5py.File(f, "r") as h:
        assert (ds.images[9:12, 0] == h["x_val"][()]).all()


def test_one_unsplit_pair_of_float_images_and_string_labels(tmp_path):
    f = tmp_path / "flat.he5"
    x = np.zeros((6, 12, 12), np.float32)
    x[:, 0, :] = 1.0  # floats in [0, 1]: the top row white
    with h5py.File(f, "w") as h:
        h["group/data"] = x
        h.create_dataset("group/target", data=["no", "yes"] * 3, dtype=h5py.string_dtype())
        h["mean"] = x.mean(0)  # (12, 12): not an image array (2-D)
    ds = read(resolve(str(f)))
    assert ds.origin is None and ds.classes == ["no", "yes"] and ds.labels.tolist() == [0, 1] * 3
    assert ds.images.shape == (6, 1, 12, 12) and ds.images.dtype == np.uint8
    assert (ds.images[:, 0, 0] == 255).all() and (ds.images[:, 0, 1:] == 0).all()


def test_two_image_arrays_ask_for_names_and_the_chosen_one_is_read(tmp_path):
    f = tmp_path / "two.h5"
    rng = np.random.default_rng(0)
    with h5py.File(f, "w") as h:
        h["imgs_a"] = rng.integers(0, 255, (8, 6, 6), dtype=np.uint8)
        h["imgs_b"] = np.full((8, 6, 6, 3), 7, np.uint8)
        h["labels"] = np.arange(8) % 2
    with pytest.raises(CnnfitError) as exc:
        read(resolve(str(f)))
    msg = _one_line(exc)
    assert "imgs_a (8, 6, 6) uint8" in msg and "imgs_b (8, 6, 6, 3) uint8" in msg and "data.h5_images" in msg
    ds = read(resolve(str(f), arrays=("imgs_b", "labels")))
    assert ds.images.shape == (8, 3, 6, 6) and (ds.images == 7).all() and ds.classes == ["0", "1"]
    ds = read(resolve(str(f), arrays=("imgs_a", "")))  # the labels, unique beside it, need no name
    assert ds.images.shape == (8, 1, 6, 6)
    with pytest.raises(CnnfitError, match="several datasets could be the images of the file"):
        read(resolve(str(f), arrays=("", "labels")))  # labels alone do not tell the two image arrays apart
    with pytest.raises(CnnfitError, match="no dataset 'imgs_c'") as exc:
        read(resolve(str(f), arrays=("imgs_c", "labels")))
    assert "imgs_a (8, 6, 6) uint8" in _one_line(exc)


def test_named_arrays_under_a_split_bring_their_siblings(tmp_path):
    f = tmp_path / "named.h5"
    with h5py.File(f, "w") as h:
        for split, n in (("train", 6), ("test", 4)):
            h[f"{split}/glyphs"] = np.zeros((n, 5, 5), np.uint8)
            h[f"{split}/glyphs_small"] = np.zeros((n, 3, 3), np.uint8)
            h[f"{split}/y"] = np.arange(n) % 2
        h["y_all"] = np.arange(10) % 2  # unsplit: never a sibling
    with pytest.raises(CnnfitError, match="several datasets could be the images of the train split") as exc:
        read(resolve(str(f)))
    assert "train/glyphs, train/glyphs_small" in _one_line(exc)
    ds = read(resolve(str(f), arrays=("/train/glyphs", "train/y")))
    assert ds.images.shape == (10, 1, 5, 5) and np.bincount(ds.origin).tolist() == [6, 0, 4]


def test_files_with_one_side_or_bad_pixels_say_what_they_hold(tmp_path):
    f = tmp_path / "pcam_x.h5"
    with h5py.File(f, "w") as h:
        h["x"] = np.zeros((4, 9, 9, 3), np.uint8)
    with pytest.raises(CnnfitError, match="images only") as exc:
        read(resolve(str(f)))
    assert "x (4, 9, 9, 3) uint8" in _one_line(exc)
    g = tmp_path / "pcam_y.h5"
    with h5py.File(g, "w") as h:
        h["y"] = np.zeros((4, 1, 1, 1), np.uint8)  # PCam's labels: one per image, as (N, 1, 1, 1)
    with pytest.raises(CnnfitError, match="labels only") as exc:
        read(resolve(str(g)))
    _one_line(exc)
    o = tmp_path / "objects.h5"
    with h5py.File(o, "w") as h:
        h.create_dataset("x", (4, 3, 3), dtype=h5py.string_dtype())
        h["y"] = np.arange(4)
    with pytest.raises(CnnfitError, match="not numbers") as exc:
        read(resolve(str(o), arrays=("x", "y")))
    _one_line(exc)
    with pytest.raises(CnnfitError, match=r"x \(str\) and no numeric image array") as exc:
        read(resolve(str(o)))
    _one_line(exc)


def test_an_unlabelled_test_split_is_left_out_and_listed(tmp_path):
    f = tmp_path / "kaggle.h5"
    with h5py.File(f, "w") as h:
        h["train_images"] = np.zeros((6, 4, 4, 3), np.uint8)
        h["train_labels"] = np.array([b"cat", b"dog"] * 3)
        h["test_images"] = np.zeros((5, 4, 4, 3), np.uint8)
    ds = read(resolve(str(f)))
    assert ds.classes == ["cat", "dog"] and np.bincount(ds.origin).tolist() == [6]
    assert len(ds.skipped) == 1 and "test_images" in ds.skipped[0][1]


def test_truncated_and_non_hdf5_files_are_one_line_errors(tmp_path):
    f = tmp_path / "cut.h5"
    with h5py.File(f, "w") as h:
        h["images"] = np.random.default_rng(0).integers(0, 255, (64, 16, 16), dtype=np.uint8)
        h["labels"] = np.arange(64) % 4
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(CnnfitError, match="not a readable HDF5 file") as exc:
        read(resolve(str(f)))
    assert "save it again with h5py" in _one_line(exc)
    g = tmp_path / "fake.h5"
    g.write_bytes(b"PK\x03\x04 not hdf5 at all" * 10)
    with pytest.raises(CnnfitError, match="not a readable HDF5 file") as exc:
        read(resolve(str(g)))
    _one_line(exc)


def test_damaged_chunks_are_a_one_line_error(tmp_path):
    f = tmp_path / "chunks.h5"
    x = np.random.default_rng(0).integers(0, 255, (32, 16, 16), dtype=np.uint8)
    with h5py.File(f, "w") as h:
        h.create_dataset("images", data=x, compression="gzip", chunks=(8, 16, 16))
        h["labels"] = np.arange(32) % 2
        offset = h["images"].id.get_chunk_info(0).byte_offset
    raw = bytearray(f.read_bytes())
    raw[offset: offset + 64] = b"\xff" * 64  # the first chunk's deflate stream, garbled
    f.write_bytes(bytes(raw))
    with pytest.raises(CnnfitError, match="not a readable HDF5 file") as exc:
        read(resolve(str(f)))
    _one_line(exc)


def test_compression_bomb_is_refused_before_it_inflates(tmp_path, monkeypatch):
    f = tmp_path / "bomb.h5"
    with h5py.File(f, "w") as h:
        h.create_dataset("images", data=np.zeros((160, 512, 512), np.uint8), compression="gzip", chunks=(16, 512, 512))
        h["labels"] = np.arange(160) % 2  # 40 MB of zeros stored in ~40 KB: over 100:1 and over 4 MB
    assert f.stat().st_size < 1 << 20
    read_calls = []
    monkeypatch.setattr(h5py.Dataset, "__getitem__", lambda *a: read_calls.append(a))
    with pytest.raises(CnnfitError, match="bomb") as exc:
        read(resolve(str(f)))
    assert "images" in _one_line(exc) and not read_calls  # refused on the declared sizes, nothing read


def test_over_the_total_limit_is_refused(tmp_path, monkeypatch):
    import cnnfit.data.arrays as arrays

    f = tmp_path / "big.h5"
    with h5py.File(f, "w") as h:
        h["images"] = np.random.default_rng(0).integers(0, 255, (8, 32, 32), dtype=np.uint8)
        h["labels"] = np.arange(8) % 2
    monkeypatch.setattr(arrays, "MAX_ARCHIVE_BYTES", 4096)
    with pytest.raises(CnnfitError, match="inflated") as exc:
        read(resolve(str(f)))
    _one_line(exc)


def test_the_config_keys_choose_the_arrays_for_a_run(tmp_path):
    f = tmp_path / "glyphs.h5"
    labels = np.arange(30) % 3
    with h5py.File(f, "w") as h:
        h["train/glyphs"] = np.stack([glyph(int(v)) for v in labels])
        h["train/noise"] = np.zeros((30, 28, 28), np.uint8)
        h["train/y"] = labels
        h["test/glyphs"] = np.stack([glyph(int(v)) for v in labels[:9]])
        h["test/noise"] = np.zeros((9, 28, 28), np.uint8)
        h["test/y"] = labels[:9]
    import cnnfit

    with pytest.raises(CnnfitError, match="data.h5_images"):
        cnnfit.train(data=str(f), epochs=1, project=str(tmp_path / "runs"))
    run = cnnfit.train(data=str(f), epochs=1, project=str(tmp_path / "runs"),
                       **{"eval.report": False, "data.h5_images": "train/glyphs", "data.h5_labels": "train/y"})
    assert run.metrics["classes"] == ["0", "1", "2"] and run.metrics["split"] == "test"
    from cnnfit.engine import load_checkpoint

    assert load_checkpoint(run.dir / "best.pt")["mean"][0] > 0.05  # the glyphs were read, not the blank arrays
