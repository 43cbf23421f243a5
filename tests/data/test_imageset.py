import numpy as np

from cnnfit.data.imageset import ImageSet, split_indices


def _set(n_per_class=(50, 30, 20), origin=None):
    labels = np.concatenate([np.full(n, i) for i, n in enumerate(n_per_class)])
    return ImageSet(np.zeros((len(labels), 1, 4, 4), np.uint8), labels, ["a", "b", "c"], origin=origin)


def test_split_is_stratified_disjoint_complete_and_seeded():
    ds = _set()
    parts, how = split_indices(ds, 0.15, 0.15, seed=3)
    allidx = np.concatenate(list(parts.values()))
    assert sorted(allidx.tolist()) == list(range(len(ds)))  # disjoint and complete
    for name, frac in (("val", 0.15), ("test", 0.15)):
        counts = np.bincount(ds.labels[parts[name]], minlength=3)
        assert np.abs(counts - np.array([50, 30, 20]) * frac).max() <= 1  # stratified
    again, _ = split_indices(ds, 0.15, 0.15, seed=3)
    other, _ = split_indices(ds, 0.15, 0.15, seed=4)
    assert all((parts[k] == again[k]).all() for k in parts)
    assert not (parts["test"] == other["test"]).all()
    assert "stratified" in how


def test_source_split_is_kept_and_val_carved_from_train():
    origin = np.array([0] * 80 + [2] * 20, dtype=np.int8)
    ds = _set((50, 50), origin=origin)
    ds.classes = ["a", "b"]
    parts, how = split_indices(ds, 0.25, 0.15, seed=0)
    assert (parts["test"] == np.arange(80, 100)).all()
    assert len(parts["val"]) == 20 and len(parts["train"]) == 60
    assert set(parts["val"]).isdisjoint(parts["train"])


def test_missing_test_split_falls_back_to_val_and_says_so():
    origin = np.array([0] * 70 + [1] * 30, dtype=np.int8)
    parts, how = split_indices(_set((50, 50), origin=origin), 0.15, 0.15, seed=0)
    assert (parts["test"] == parts["val"]).all()
    assert "measured on val" in how


def test_tiny_classes_still_split():
    parts, _ = split_indices(_set((3, 3, 1)), 0.15, 0.15, seed=0)
    assert sum(len(v) for v in parts.values()) == 7
    assert len(parts["train"]) >= 3


def test_subsample_is_stratified_seeded_and_capped():
    from cnnfit.data import subsample

    labels = np.repeat(np.arange(3), [100, 50, 10])
    index = np.arange(len(labels))
    half = subsample(labels, index, fraction=0.5, seed=1)
    assert np.bincount(labels[half]).tolist() == [50, 25, 5]
    assert np.array_equal(half, subsample(labels, index, fraction=0.5, seed=1))
    assert not np.array_equal(half, subsample(labels, index, fraction=0.5, seed=2))
    capped = subsample(labels, index, per_class=20, seed=0)
    assert np.bincount(labels[capped]).tolist() == [20, 20, 10]
