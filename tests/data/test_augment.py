import math

import pytest
import torch

from cnnfit.data import augment as A
from cnnfit.data.augment import build, mix, random_hflip, random_shift

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
LUMA = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)


def _gen(seed=0, device="cpu"):
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


def _square(n=8, size=32, half=4):
    """Black images with a white centred square of side 2*half."""
    x = torch.zeros(n, 1, size, size)
    c = size // 2
    x[:, :, c - half: c + half, c - half: c + half] = 1.0
    return x


# ------------------------------------------------------------- existing behaviour

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
    assert build()(x, _gen(1)) is x  # nothing switched on: the identity


# ------------------------------------------------------------- every op: shape, dtype, device, range

OPS = {
    "vflip": A.random_vflip,
    "affine": A.random_affine(rotation=30, zoom=0.3, shear=15),
    "jitter": A.color_jitter(brightness=0.8, contrast=0.8, saturation=0.8, hue=0.5),
    "noise": A.gaussian_noise(0.3),
    "erasing": A.random_erasing(0.5),
    "erasing_zero": A.random_erasing(0.5, fill="zero"),
    "randaugment": A.rand_augment(3, 30),
    "resized_crop": A.random_resized_crop(0.25, hflip=True),
    "all": build(resized_crop=0.3,
                 hflip=True, vflip=True, shift=0.2, rotation=45, zoom=0.3, shear=20, brightness=0.5, contrast=0.5,
                 saturation=0.5, hue=0.3, noise=0.1, erasing=0.5, randaugment=2, magnitude=15),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", list(OPS))
def test_op_keeps_shape_dtype_device_and_range(name, channels, dtype, device):
    x = torch.rand(32, channels, 12, 10, dtype=dtype, device=device)  # non-square on purpose
    out = OPS[name](x, _gen(0, device))
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
    assert out.min() >= 0 and out.max() <= 1 and torch.isfinite(out).all()
    assert not torch.equal(out, x)


def test_build_all_on_is_deterministic_per_seed():
    x = torch.rand(16, 3, 16, 16)
    assert torch.equal(OPS["all"](x, _gen(3)), OPS["all"](x, _gen(3)))
    assert not torch.equal(OPS["all"](x, _gen(3)), OPS["all"](x, _gen(4)))


def test_build_rejects_out_of_range_with_the_valid_range():
    with pytest.raises(ValueError, match=r"aug.hue=0.7 .*\[0, 0.5\]"):
        build(hue=0.7)
    with pytest.raises(ValueError, match="aug.zoom"):
        build(zoom=1.0)  # scale 0 would be singular


# ------------------------------------------------------------- geometry

def test_affine_at_zero_strength_is_identity():
    x = torch.rand(8, 3, 13, 9)
    assert torch.allclose(A.affine(x, 0.0, 1.0, 0.0), x, atol=1e-5)
    assert torch.allclose(A.random_affine(0.0, 0.0, 0.0)(x, _gen()), x, atol=1e-5)


def test_rotation_by_90_matches_rot90_and_180_matches_double_flip():
    x = torch.rand(4, 3, 11, 11)
    assert torch.allclose(A.affine(x, 90.0), torch.rot90(x, 1, (-2, -1)), atol=1e-5)  # counter-clockwise
    assert torch.allclose(A.affine(x, -90.0), torch.rot90(x, -1, (-2, -1)), atol=1e-5)
    r = torch.rand(4, 3, 8, 14)  # non-square: pixel geometry, not normalised coordinates
    assert torch.allclose(A.affine(r, 180.0), r.flip(-1).flip(-2), atol=1e-5)


def test_resized_crop_of_the_whole_image_is_identity_and_a_flip_mirrors_it():
    x = torch.rand(16, 3, 12, 10)
    assert torch.allclose(A.random_resized_crop(1.0, aspect=(1.0, 1.0))(x, _gen(0)), x, atol=1e-5)
    out = A.random_resized_crop(1.0, aspect=(1.0, 1.0), hflip=True)(x, _gen(0))
    flipped = [torch.allclose(o, i.flip(-1), atol=1e-5) for o, i in zip(out, x)]
    assert all(f or torch.allclose(o, i, atol=1e-5) for f, o, i in zip(flipped, out, x)) and 3 < sum(flipped) < 13


def test_resized_crop_enlarges_a_part_within_the_area_range():
    # a horizontal ramp 0..1: a crop of width fraction w shows a ramp whose span is w, stretched over the image
    ramp = torch.linspace(0, 1, 64).expand(256, 1, 64, 64).contiguous()
    out = A.random_resized_crop(0.25, aspect=(1.0, 1.0))(ramp, _gen(1))
    span = out[:, 0, 32, -1] - out[:, 0, 32, 0]  # (B,) ~ the crop's width fraction = sqrt(area)
    assert span.min() > 0.5 - 0.05 and span.max() <= 1 + 1e-5  # area >= 0.25: width >= 0.5
    assert span.std() > 0.1  # each image its own crop
    assert (out[:, 0, 32, 0] >= -1e-6).all() and (out[:, 0, 32, -1] <= 1 + 1e-6).all()  # never outside the image


def test_integer_translation_is_an_exact_shift_with_zero_fill():
    x = torch.rand(4, 3, 9, 12)
    out = A._warp(x, A._matrix(x, tx=3.0, ty=-2.0))  # the path RandAugment's translate takes
    assert torch.allclose(out[:, :, :-2, 3:], x[:, :, 2:, :-3], atol=1e-5)
    assert out[:, :, -2:].abs().max() < 1e-6 and out[:, :, :, :3].abs().max() < 1e-6


def test_zoom_in_enlarges_and_zoom_out_shrinks_a_centred_square():
    x = _square(n=1)  # 8x8 = 64 bright pixels
    area = lambda t: (t > 0.5).sum().item()  # noqa: E731
    assert area(A.affine(x, scale=1.5)) == pytest.approx(64 * 1.5**2, rel=0.15)
    assert area(A.affine(x, scale=0.5)) == pytest.approx(64 * 0.5**2, rel=0.15)
    assert area(A.affine(x, scale=2.0)) == pytest.approx(256, rel=0.05)


def test_random_affine_gives_each_sample_its_own_parameters():
    x = _square(n=64).expand(64, 1, 32, 32)
    out = A.random_affine(rotation=0, zoom=0.4)(x, _gen())
    mass = out.sum((1, 2, 3))  # bilinear keeps mass ~ 64 * scale^2
    assert len({round(m, 3) for m in mass.tolist()}) > 50
    assert 64 * 0.6**2 * 0.9 <= mass.min() and mass.max() <= 64 * 1.4**2 * 1.1  # scale in [0.6, 1.4]
    rotated = A.random_affine(rotation=40)(x, _gen())
    assert len({tuple(r.flatten().round(decimals=3).tolist()) for r in rotated}) > 50


# ------------------------------------------------------------- colour

def test_brightness_scales_each_sample_by_one_factor_in_range():
    x = 0.05 + 0.45 * torch.rand(64, 3, 8, 8)  # at most 0.5: factor <= 1.5 never clips
    out = A.color_jitter(brightness=0.5)(x, _gen())
    ratio = out / x  # (B, C, H, W): one factor per sample
    per_sample = ratio.flatten(1)
    assert torch.allclose(per_sample, per_sample[:, :1].expand_as(per_sample), atol=1e-5)
    assert per_sample.min() >= 0.5 - 1e-5 and per_sample.max() <= 1.5 + 1e-5
    assert per_sample[:, 0].std() > 0.15  # uniform on [0.5, 1.5] has std 0.29
    assert torch.allclose(out.mean((1, 2, 3)) / x.mean((1, 2, 3)), per_sample[:, 0], atol=1e-5)


def test_contrast_keeps_the_mean_and_scales_the_spread():
    x = 0.4 + 0.2 * torch.rand(32, 1, 8, 8)  # mid-range: factor <= 1.5 never clips
    out = A.color_jitter(contrast=0.5)(x, _gen())
    assert torch.allclose(out.mean((1, 2, 3)), x.mean((1, 2, 3)), atol=1e-5)
    spread = out.std((1, 2, 3)) / x.std((1, 2, 3))
    assert 0.5 - 1e-4 <= spread.min() and spread.max() <= 1.5 + 1e-4 and spread.std() > 0.1


def test_saturation_and_hue_keep_luma_and_leave_gray_alone():
    x = 0.45 + 0.1 * torch.rand(32, 3, 8, 8)  # low chroma: no clipping even at hue 0.5
    for aug in (A.color_jitter(saturation=0.9), A.color_jitter(hue=0.5)):
        out = aug(x, _gen())
        assert torch.allclose((out * LUMA).sum(1), (x * LUMA).sum(1), atol=1e-5)  # luma kept
        assert (out - x).abs().flatten(1).amax(1).std() > 0  # different samples, different amounts
        gray = x[:, :1].expand(-1, 3, -1, -1)
        assert torch.allclose(aug(gray, _gen()), gray, atol=1e-5)


def test_tiny_saturation_and_hue_ranges_are_identity():
    x = torch.rand(16, 3, 8, 8)
    assert torch.allclose(A.color_jitter(saturation=1e-9)(x, _gen()), x, atol=1e-5)
    assert torch.allclose(A.color_jitter(hue=1e-9)(x, _gen()), x, atol=1e-5)
    assert torch.equal(A._hue(x, torch.zeros(16)), x)  # hue 0 is exactly I


def test_hue_half_turn_moves_colour_to_the_opposite_side():
    x = torch.full((1, 3, 2, 2), 0.5)
    x[:, 0] = 0.6  # slightly red
    out = A._hue(x, torch.tensor([0.5]))
    assert out[0, 0, 0, 0] < 0.5 and out[0, 1, 0, 0] > 0.5  # red-ish becomes cyan-ish


def test_colour_ops_on_grayscale_input():
    x = torch.rand(16, 1, 8, 8)
    assert torch.equal(A.color_jitter(saturation=0.9, hue=0.5)(x, _gen()), x)  # RGB-only ops skip
    out = A.color_jitter(brightness=0.5, contrast=0.5, saturation=0.5, hue=0.2)(x, _gen())
    assert out.shape == x.shape and not torch.equal(out, x)


def test_noise_has_the_requested_std():
    x = torch.full((64, 3, 16, 16), 0.5)
    out = A.gaussian_noise(0.05)(x, _gen())
    assert (out - x).std().item() == pytest.approx(0.05, rel=0.05)
    assert (out - x).mean().abs() < 0.005


# ------------------------------------------------------------- erasing

def test_erasing_honours_probability_and_area():
    x = torch.full((2000, 1, 20, 20), 0.5)
    out = A.random_erasing(0.3, fill="zero")(x, _gen())
    erased = (out == 0).flatten(1).sum(1)  # pixels per sample
    assert 0.25 < (erased > 0).float().mean() < 0.35
    share = erased[erased > 0].float() / 400
    assert share.min() >= 0.01 and share.max() <= 0.4 and len(set(share.tolist())) > 20
    one = (out[erased > 0][0, 0] == 0).nonzero()  # the erased pixels form one rectangle
    rows, cols = one[:, 0], one[:, 1]
    assert len(one) == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)


# ------------------------------------------------------------- RandAugment

def test_randaugment_changes_images_per_sample():
    x = torch.rand(100, 3, 8, 8)  # small tensors throughout: < 32k elements stays single-threaded, fast
    out = build(randaugment=2, magnitude=9)(x, _gen())
    changed = (out - x).abs().flatten(1).amax(1) > 1e-4
    assert changed.float().mean() > 0.8  # identity twice: 1/169
    assert len({round(d, 4) for d in (out - x).abs().mean((1, 2, 3)).tolist()}) > 50
    assert torch.equal(build(randaugment=2)(x, _gen(5)), build(randaugment=2)(x, _gen(5)))


def test_randaugment_magnitude_zero_barely_moves_geometry():
    x = torch.rand(64, 1, 12, 12)
    out = A.rand_augment(1, 0)(x, _gen())
    # at magnitude 0 only autocontrast, posterize (8 bits) and solarize (threshold 1) can act
    assert (out - x).abs().max() <= 1.0 and ((out - x).abs().flatten(1).amax(1) < 1e-5).float().mean() > 0.6


# ------------------------------------------------------------- mixup / cutmix

def _constant_images(n=16, size=8):
    values = torch.arange(1, n + 1, dtype=torch.float32) / (n + 1)  # sample i is the constant values[i]
    return values.view(-1, 1, 1, 1).expand(n, 3, size, size).clone(), torch.arange(n), values


def test_mix_rejects_negative_alpha():
    x, y, _ = _constant_images()
    with pytest.raises(ValueError, match=">= 0"):
        mix(x, y, 16, _gen(), mixup=-1.0)


def test_mix_off_returns_x_and_one_hot():
    x, y, _ = _constant_images()
    out, t = mix(x, y, 16, _gen())
    assert out is x and torch.equal(t, torch.eye(16))


def test_mixup_blends_images_and_targets_alike():
    x, y, v = _constant_images()
    out, t = mix(x, y, 16, _gen(), mixup=0.4)
    assert out.shape == x.shape and t.shape == (16, 16)
    assert torch.allclose(t.sum(1), torch.ones(16)) and t.min() >= 0 and t.max() <= 1
    assert torch.allclose(out[:, 0, 0, 0], t @ v, atol=1e-6)  # pixel = target-weighted partner values
    assert torch.allclose(out, out[:, :, :1, :1].expand_as(out))  # blends the whole image


def test_cutmix_lambda_equals_the_pasted_area_share():
    x, y, v = _constant_images(n=32, size=16)
    for seed in range(5):
        out, t = mix(x, y, 32, _gen(seed), cutmix=1.0)
        share = (out[:, 0, :, :, None] == v).float().mean((1, 2))  # (B, K) pixel share of each source
        assert torch.allclose(share, t, atol=1e-6)
        assert torch.allclose(t.sum(1), torch.ones(32))
    assert (t.max(1).values < 1).any()  # something was pasted


def test_mix_with_both_picks_one_per_batch():
    x, y, v = _constant_images()
    kinds = set()
    for seed in range(20):
        out, t = mix(x, y, 16, _gen(seed), mixup=0.4, cutmix=1.0)
        assert torch.allclose(t.sum(1), torch.ones(16))
        pure = (out[:, 0, :, :, None] == v).any(-1).all()  # cutmix only ever copies source pixels
        kinds.add("cutmix" if pure else "mixup")
    assert kinds == {"cutmix", "mixup"}


@pytest.mark.parametrize("alpha", [0.2, 1.0, 3.0])
def test_beta_sampler_moments(alpha):
    lam = A._beta(alpha, 2000, _gen(), torch.device("cpu"))
    assert lam.min() >= 0 and lam.max() <= 1
    assert lam.mean().item() == pytest.approx(0.5, abs=0.02)
    assert lam.var().item() == pytest.approx(1 / (4 * (2 * alpha + 1)), rel=0.1)  # Var of Beta(a, a)


def test_mix_same_seed_same_result():
    x, y, _ = _constant_images()
    a, b = mix(x, y, 16, _gen(2), mixup=0.4, cutmix=1.0), mix(x, y, 16, _gen(2), mixup=0.4, cutmix=1.0)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not math.isnan(a[1].sum().item())


def test_flips_and_shift_folded_into_the_warp_stay_exact():
    from cnnfit.data.augment import random_affine

    x = torch.rand(64, 3, 10, 12)
    g = torch.Generator()
    g.manual_seed(3)
    out = random_affine(0.0, 0.0, 0.0, hflip=True)(x, g)
    flipped = torch.isclose(out, x.flip(-1), atol=1e-5).flatten(1).all(1)
    kept = torch.isclose(out, x, atol=1e-5).flatten(1).all(1)
    assert (flipped ^ kept).all() and 10 < flipped.sum() < 54
    square = torch.zeros(32, 1, 12, 12)
    square[:, :, 5:7, 5:7] = 1.0
    moved = random_affine(0.0, 0.0, 0.0, shift=0.25)(square, g)  # whole-pixel shifts up to 3 px
    assert torch.allclose(moved.sum((1, 2, 3)), torch.full((32,), 4.0), atol=1e-4)
    assert ((moved > 1e-4) == (moved > 0.999)).all()  # no interpolation blur


def test_shift_with_reflect_fill_moves_in_the_mirrored_edge():
    x = torch.rand(64, 3, 8, 8, generator=torch.Generator().manual_seed(1)) + 0.5  # no zeros anywhere
    g = torch.Generator().manual_seed(0)
    out = random_shift(0.25, "reflect")(x, g)
    assert (out > 0).all()  # nothing filled with zeros
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="reflect")
    for i in range(8):  # every output is an 8x8 window of the reflect-padded image
        assert any(torch.equal(out[i], padded[i, :, dy:dy + 8, dx:dx + 8]) for dy in range(5) for dx in range(5))
    assert not torch.equal(out, x)
