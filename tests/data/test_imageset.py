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


def test_multilabel_split_keeps_a_rare_label_in_every_split_and_is_seeded():
    from cnnfit.data import class_counts

    rng = np.random.default_rng(0)
    hot = (rng.random((200, 4)) < [0.5, 0.4, 0.3, 0.0]).astype(np.uint8)
    hot[:20, 3] = 1  # a rare label on 10% of the images
    ds = ImageSet(np.zeros((200, 1, 2, 2), np.uint8), hot, list("abcd"), task="multilabel")
    parts, how = split_indices(ds, 0.15, 0.15, seed=1)
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(200))
    assert [class_counts(ds, parts[k])[3] for k in ("train", "val", "test")] == [14, 3, 3]
    assert "rarest label" in how
    again, _ = split_indices(ds, 0.15, 0.15, seed=1)
    assert all(np.array_equal(parts[k], again[k]) for k in parts)


def test_regression_split_spans_the_targets_and_is_seeded():
    y = np.linspace(0, 100, 200).astype(np.float32)
    ds = ImageSet(np.zeros((200, 1, 2, 2), np.uint8), y, ["age"], task="regress")
    parts, how = split_indices(ds, 0.15, 0.15, seed=0)
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(200))
    assert len(parts["test"]) == 30 and "10 target quantile bins" in how
    assert np.histogram(y[parts["test"]], bins=10, range=(0, 100))[0].tolist() == [3] * 10  # every decile
    again, _ = split_indices(ds, 0.15, 0.15, seed=0)
    other, _ = split_indices(ds, 0.15, 0.15, seed=1)
    assert np.array_equal(parts["test"], again["test"]) and not np.array_equal(parts["test"], other["test"])


def test_subsample_and_counts_for_other_tasks():
    import pytest

    from cnnfit.data import class_counts, label_text, subsample
    from cnnfit.errors import CnnfitError

    y = np.linspace(0, 1, 100).astype(np.float32)
    half = subsample(y, np.arange(100), fraction=0.5, seed=0)
    assert len(half) == 50 and np.array_equal(half, subsample(y, np.arange(100), fraction=0.5, seed=0))
    with pytest.raises(CnnfitError, match="use data.fraction"):
        subsample(y, np.arange(100), per_class=5)
    hot = np.array([[1, 0], [1, 1], [0, 0]], np.uint8)
    ml = ImageSet(np.zeros((3, 1, 2, 2), np.uint8), hot, ["cat", "dog"], task="multilabel")
    assert class_counts(ml).tolist() == [2, 1] and [label_text(ml, i) for i in range(3)] == ["cat", "cat;dog", ""]
    reg = ImageSet(np.zeros((3, 1, 2, 2), np.uint8), np.array([1.5, 2, 3], np.float32), ["age"], task="regress")
    assert label_text(reg, 0) == "1.5"
    with pytest.raises(CnnfitError, match="no classes to count"):
        class_counts(reg)
