import os

import numpy as np

from cnnfit.data.cache import cache_root, load_imageset
from cnnfit.data.sources import resolve
from tests.conftest import write_image


def test_second_load_is_a_memmapped_hit_with_identical_content(image_folder):
    ref = resolve(str(image_folder))
    first, hit1 = load_imageset(ref, 16)
    second, hit2 = load_imageset(ref, 16)
    assert (hit1, hit2) == (False, True)
    assert isinstance(second.images, np.memmap)
    assert (np.asarray(first.images) == np.asarray(second.images)).all()
    assert second.files == first.files and second.classes == first.classes


def test_auto_size_hits_the_resolved_entry_too(image_folder):
    ref = resolve(str(image_folder))
    auto, _ = load_imageset(ref)  # mixed sizes -> the automatic photo size
    size = auto.shape[1]
    _, hit = load_imageset(ref, size, auto.shape[0])
    assert hit


def test_changed_content_misses(image_folder):
    ref = resolve(str(image_folder))
    load_imageset(ref, 16)
    (image_folder / "red" / "0.png").unlink()
    ds, hit = load_imageset(resolve(str(image_folder)), 16)
    assert not hit and len(ds) == 89


def test_no_temporary_entries_left_behind(image_folder):
    load_imageset(resolve(str(image_folder)), 12)
    assert not [p for p in os.listdir(cache_root()) if p.startswith(".")]


def _csv(tmp_path, cells, header="path,label"):
    rng = np.random.default_rng(0)
    for i in range(len(cells)):
        write_image(tmp_path / f"{i}.png", (30 * i % 255, 80, 120), (8, 8), rng)
    (tmp_path / "m.csv").write_text("\n".join([header] + [f"{i}.png,{c}" for i, c in enumerate(cells)]) + "\n")
    return resolve(str(tmp_path / "m.csv"))


def test_multilabel_and_regression_round_trip(tmp_path):
    (tmp_path / "ml").mkdir(), (tmp_path / "reg").mkdir()
    for ref in (_csv(tmp_path / "ml", ["cat;sky", "dog", "sky"]), _csv(tmp_path / "reg", ["0.5", "1.25", "3"])):
        first, hit1 = load_imageset(ref, 8)
        second, hit2 = load_imageset(ref, 8)
        assert (hit1, hit2) == (False, True)
        assert second.task == first.task and second.classes == first.classes
        assert second.labels.dtype == first.labels.dtype and np.array_equal(second.labels, first.labels)
    assert second.task == "regress" and second.labels.dtype == np.float32


def test_forced_task_is_part_of_the_key(tmp_path):
    ref = _csv(tmp_path, ["1", "2", "2"])
    classes, _ = load_imageset(ref, 8)
    targets, hit = load_imageset(ref, 8, task="regress")
    assert not hit and classes.task == "classify" and targets.task == "regress"
    assert targets.labels.tolist() == [1.0, 2.0, 2.0] and classes.labels.tolist() == [0, 1, 1]
    again, hit = load_imageset(ref, 8, task="regress")
    assert hit and again.task == "regress"


def test_an_array_kept_beside_the_cache_is_read_back_without_recomputing(image_folder):
    from cnnfit.data.cache import remembered_array

    ds, _ = load_imageset(resolve(str(image_folder)), size=16)
    calls = []

    def compute():
        calls.append(1)
        return np.arange(12, dtype=np.float32).reshape(3, 4)

    first, hit_first = remembered_array(ds, "weights-a", "features", compute)
    second, hit_second = remembered_array(ds, "weights-a", "features", compute)
    other, hit_other = remembered_array(ds, "weights-b", "features", compute)
    assert (hit_first, hit_second, hit_other) == (False, True, False) and len(calls) == 2
    assert np.array_equal(first, second) and second.dtype == np.float32
    saved = sorted(p for p in os.listdir(os.path.dirname(ds.images.filename)) if p.startswith("features-"))
    assert len(saved) == 2 and all(p.endswith(".npy") for p in saved)
