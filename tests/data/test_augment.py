import torch

from cnnfit.data.augment import build, random_hflip, random_shift


def _gen(seed=0):
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def test_flip_flips_about_half_the_samples_exactly():
    x = torch.rand(400, 3, 8, 8)
    out = random_hflip(x, _gen())
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert (flipped ^ kept).all()  # each sample either untouched or exactly mirrored
    assert 150 < flipped.sum() < 250


def test_shift_moves_content_and_fills_with_zero():
    x = torch.zeros(64, 1, 10, 10)
    x[:, :, 4:6, 4:6] = 1.0  # a bright 2x2 square in the middle
    out = random_shift(0.2)(x, _gen())
    assert out.shape == x.shape
    assert (out.sum((1, 2, 3)) == 4).all()  # max shift 2 px keeps the square inside
    moved = [(o[0] == 1).nonzero()[0].tolist() for o in out]
    assert len({tuple(m) for m in moved}) > 5  # different samples, different shifts
    assert all(2 <= r <= 6 and 2 <= c <= 6 for r, c in moved)


def test_same_seed_same_augmentation():
    aug = build(hflip=True, shift=0.1)
    x = torch.rand(16, 3, 12, 12)
    assert torch.equal(aug(x, _gen(1)), aug(x, _gen(1)))
    assert build() is None
