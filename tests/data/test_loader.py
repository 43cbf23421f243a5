import numpy as np
import torch

from cnnfit.data.loader import DeviceLoader, channel_stats, normalize


def test_channel_stats_match_numpy():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (50, 3, 6, 6), dtype=np.uint8)
    mean, std = channel_stats(images, chunk=7)
    f = images.astype(np.float64) / 255
    assert np.allclose(mean, f.mean((0, 2, 3))) and np.allclose(std, f.std((0, 2, 3)))


def test_batches_are_normalized_and_cover_every_image_once():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (103, 1, 5, 5), dtype=np.uint8)
    labels = np.arange(103)
    mean, std = channel_stats(images)
    loader = DeviceLoader(images, labels, batch=16, device=torch.device("cpu"), mean=mean, std=std, shuffle=True)
    seen, xs = [], []
    for x, y in loader:
        assert x.dtype == torch.float32 and x.shape[1:] == (1, 5, 5)
        seen += y.tolist()
        xs.append(x)
    assert len(loader) == 7 and sorted(seen) == list(range(103)) and seen != list(range(103))
    allx = torch.cat(xs)
    assert abs(allx.mean().item()) < 1e-4 and abs(allx.std().item() - 1) < 1e-2
    first = next(iter(DeviceLoader(images, labels, batch=4, device=torch.device("cpu"), mean=mean, std=std)))
    expected = (torch.from_numpy(images[:4]).float() / 255 - mean[0]) / std[0]
    assert torch.allclose(first[0], expected, atol=1e-5)


def test_normalize_is_the_loaders_op_order_bit_for_bit():
    images = np.random.default_rng(0).integers(0, 256, (6, 3, 4, 4), dtype=np.uint8)
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.3, 0.7]
    x, _ = next(iter(DeviceLoader(images, np.arange(6), batch=6, device=torch.device("cpu"), mean=mean, std=std)))
    m, inv_std = torch.tensor(mean).view(1, 3, 1, 1), 1.0 / torch.tensor(std).view(1, 3, 1, 1)
    raw = torch.from_numpy(images)
    assert torch.equal(x, (raw.float() / 255.0 - m) * inv_std) and torch.equal(normalize(raw, m, inv_std), x)


def test_channels_last_layout():
    images = np.zeros((8, 3, 4, 4), np.uint8)
    loader = DeviceLoader(images, np.zeros(8), batch=8, device=torch.device("cpu"), mean=[0.5] * 3, std=[0.5] * 3,
                          channels_last=True)
    x, _ = next(iter(loader))
    assert x.is_contiguous(memory_format=torch.channels_last)


def test_balanced_sampler_draws_classes_equally():
    labels = np.array([0] * 900 + [1] * 100)
    images = np.zeros((1000, 1, 2, 2), np.uint8)
    loader = DeviceLoader(images, labels, batch=100, device=torch.device("cpu"), mean=[0.0], std=[1.0],
                          shuffle=True, balanced=True)
    drawn = torch.cat([y for _, y in loader])
    assert len(drawn) == 1000
    assert 0.4 < drawn.float().mean().item() < 0.6  # minority drawn about half the time, not 10%


def test_minority_only_augmentation_leaves_majority_untouched():
    labels = np.array([0] * 50 + [1] * 50)
    images = np.random.default_rng(0).integers(0, 255, (100, 1, 4, 4), dtype=np.uint8)
    flip_all = lambda x, g: x.flip(-1)  # noqa: E731
    loader = DeviceLoader(images, labels, batch=100, device=torch.device("cpu"), mean=[0.0], std=[1.0],
                          augment=flip_all, augment_classes=[1])
    x, y = next(iter(loader))
    raw = torch.from_numpy(images).float() / 255
    assert torch.allclose(x[y == 0], raw[:50]) and torch.allclose(x[y == 1], raw[50:].flip(-1))


def _memmap(tmp_path, n=300):
    images = np.random.default_rng(0).integers(0, 256, (n, 3, 6, 6), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)
    return images, np.load(tmp_path / "images.npy", mmap_mode="r")


def test_read_rows_from_disk_keeps_the_callers_order(tmp_path):
    from cnnfit.data.loader import read_rows

    images, mm = _memmap(tmp_path)
    rows = np.array([5, 3, 4, 299, 0, 1, 2, 150])
    assert (read_rows(mm, rows) == images[rows]).all()


def test_streaming_serves_the_same_batches_as_in_memory(tmp_path):
    images, mm = _memmap(tmp_path)
    labels = np.arange(300) % 7
    index = np.arange(0, 300, 2)
    kw = dict(batch=32, device=torch.device("cpu"), mean=[0.5] * 3, std=[0.2] * 3, index=index)
    streamed = list(DeviceLoader(mm, labels, stream=True, **kw))
    in_memory = list(DeviceLoader(mm, labels, stream=False, **kw))
    assert len(streamed) == len(in_memory) == 5
    for (xs, ys), (xm, ym) in zip(streamed, in_memory):
        assert torch.equal(xs, xm) and torch.equal(ys, ym)
    shuffled = DeviceLoader(mm, labels, stream=True, shuffle=True, **kw)
    seen = torch.cat([y for _, y in shuffled])
    assert sorted(seen.tolist()) == sorted(labels[index].tolist())
    mean, std = channel_stats(mm, index)
    assert np.allclose(mean, (images[index] / 255).mean((0, 2, 3)))


def test_multi_hot_and_float_labels_are_served_as_float():
    import pytest

    from cnnfit.errors import CnnfitError

    images = np.zeros((10, 1, 2, 2), np.uint8)
    hot = (np.arange(30).reshape(10, 3) % 4 == 0).astype(np.uint8)
    kw = dict(batch=4, device=torch.device("cpu"), mean=[0.0], std=[1.0])
    ys = [y for _, y in DeviceLoader(images, hot, index=np.arange(2, 10), **kw)]
    assert ys[0].dtype == torch.float32 and ys[0].shape == (4, 3)
    assert torch.equal(torch.cat(ys), torch.from_numpy(hot[2:]).float())
    targets = np.linspace(-1, 1, 10).astype(np.float32)
    y = next(iter(DeviceLoader(images, targets, stream=False, **kw)))[1]
    assert y.dtype == torch.float32 and y.shape == (4,) and torch.allclose(y, torch.from_numpy(targets[:4]))
    with pytest.raises(CnnfitError, match="sampler=balanced.*multilabel; set train.sampler=shuffle"):
        DeviceLoader(images, hot, balanced=True, **kw)
    with pytest.raises(CnnfitError, match="only_minority.*regress; set aug.only_minority=false"):
        DeviceLoader(images, targets, augment_classes=[1], **kw)


def test_streamed_multi_hot_matches_in_memory(tmp_path):
    _, mm = _memmap(tmp_path, n=40)
    hot = (np.arange(120).reshape(40, 3) % 3 == 0).astype(np.uint8)
    kw = dict(batch=16, device=torch.device("cpu"), mean=[0.5] * 3, std=[0.2] * 3, shuffle=True, seed=3)
    streamed = torch.cat([y for _, y in DeviceLoader(mm, hot, stream=True, **kw)])
    in_memory = torch.cat([y for _, y in DeviceLoader(mm, hot, stream=False, **kw)])
    assert streamed.shape == (40, 3) and torch.equal(streamed, in_memory)


def test_drop_last_serves_only_full_batches_and_a_different_remainder_each_epoch():
    images = np.zeros((100, 1, 2, 2), np.uint8)
    loader = DeviceLoader(images, np.arange(100), batch=32, device=torch.device("cpu"), mean=[0.0], std=[1.0],
                          shuffle=True, drop_last=True)
    epochs = [[y for _, y in loader.iterate(loader.new_order(), epoch=e)] for e in range(2)]
    assert len(loader) == 3 and loader.num_images == 96
    assert all([len(y) for y in ys] == [32, 32, 32] for ys in epochs)
    left_out = [set(range(100)) - set(torch.cat(ys).tolist()) for ys in epochs]
    assert all(len(s) == 4 for s in left_out) and left_out[0] != left_out[1]


def test_alternate_flip_shows_every_image_both_ways_over_two_epochs():
    n = 200
    images = np.zeros((n, 1, 1, 2), np.uint8)
    images[:, 0, 0, 0] = 255  # a bright left pixel: flipped, it is on the right
    loader = DeviceLoader(images, np.arange(n), batch=64, device=torch.device("cpu"), mean=[0.0], std=[1.0],
                          shuffle=True, alternate_flip=True, seed=3)
    flipped = []
    for epoch in range(2):
        seen = {}
        for x, y in loader.iterate(loader.new_order(), epoch=epoch):
            seen.update(zip(y.tolist(), (x[:, 0, 0, 1] > 0.5).tolist()))
        flipped.append(torch.tensor([seen[i] for i in range(n)]))
    assert torch.equal(flipped[0], ~flipped[1])  # each image mirrored in exactly one of the two epochs
    assert 70 < int(flipped[0].sum()) < 130  # a random half, not a block
    again = DeviceLoader(images, np.arange(n), batch=64, device=torch.device("cpu"), mean=[0.0], std=[1.0],
                         alternate_flip=True, seed=3)
    x, y = next(again.iterate(None, epoch=0))
    assert torch.equal(x[:, 0, 0, 1] > 0.5, flipped[0][y])  # fixed by the seed: resume sees the same halves
