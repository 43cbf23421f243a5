import numpy as np
import pytest
from PIL import Image

from cnnfit.data.decode import DecodeError, decode_image, probe


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = 255  # left half white
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # stored sideways: viewers rotate 90 degrees clockwise
    img.save(tmp_path / "r.jpg", exif=exif, quality=95)
    assert (probe(tmp_path / "r.jpg").width, probe(tmp_path / "r.jpg").height) == (20, 40)
    out = decode_image(tmp_path / "r.jpg", 40, 3, "pad")  # (3, 40, 40), the upright image is 20 wide x 40 high
    top, bottom = out[:, :20, 10:30].mean(), out[:, 20:, 10:30].mean()
    assert top > 200 and bottom < 60  # white half now on top


def test_transparent_pixels_become_white(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)  # fully transparent black
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    assert decode_image(tmp_path / "t.png", 8, 3).min() == 255


def test_gray_and_color_conversions(tmp_path):
    Image.fromarray(np.full((10, 10), 77, np.uint8), "L").save(tmp_path / "g.png")
    assert probe(tmp_path / "g.png").channels == 1
    rgb = decode_image(tmp_path / "g.png", 10, 3)
    assert rgb.shape == (3, 10, 10) and (rgb == 77).all()


@pytest.mark.parametrize("policy", ["squash", "crop", "pad"])
def test_resize_policies_give_square_output(tmp_path, policy):
    Image.fromarray(np.full((30, 60, 3), 128, np.uint8)).save(tmp_path / "w.png")
    out = decode_image(tmp_path / "w.png", 16, 3, policy)
    assert out.shape == (3, 16, 16)
    if policy == "pad":
        assert out[:, 0].max() == 0 and out[:, 8].min() == 128  # black bars top and bottom
    else:
        assert (out == 128).all()


def test_bad_files_raise_with_a_reason(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.png").write_text("not really a png")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(DecodeError, match="empty file"):
        decode_image(tmp_path / "empty.jpg", 8, 3)
    with pytest.raises(DecodeError, match="not an image"):
        decode_image(tmp_path / "text.png", 8, 3)
    with pytest.raises(DecodeError, match="truncated"):
        decode_image(tmp_path / "cut.jpg", 8, 3)


def test_bytes_and_path_decode_identically(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(tmp_path / "a.jpg")
    assert (decode_image(tmp_path / "a.jpg", 24, 3) == decode_image((tmp_path / "a.jpg").read_bytes(), 24, 3)).all()


def test_awkward_but_valid_images_decode(tmp_path):
    ramp16 = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)  # 0..65520
    Image.fromarray(ramp16).save(tmp_path / "deep.png")  # 16-bit grayscale
    out = decode_image(tmp_path / "deep.png", 64, 1)
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() >= 250  # scaled, not clipped
    Image.new("CMYK", (20, 20), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")  # pure red in CMYK
    r, g, b = decode_image(tmp_path / "cmyk.jpg", 20, 3).reshape(3, -1).mean(1)
    assert r > 200 and g < 60 and b < 60
    pal = Image.new("P", (10, 10), 0)
    pal.putpalette([0, 0, 255] * 256)
    pal.info["transparency"] = 0
    pal.save(tmp_path / "pal.png", transparency=0)
    assert decode_image(tmp_path / "pal.png", 10, 3).min() == 255  # transparent -> white
    frames = [Image.new("RGB", (12, 12), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    first = decode_image(tmp_path / "anim.gif", 12, 3)
    assert first[0].mean() > 200 and first[2].mean() < 50  # the first (red) frame


def test_too_many_pixels_is_a_skip_reason(tmp_path, monkeypatch):
    import cnnfit.data.decode as dec

    Image.new("L", (300, 200)).save(tmp_path / "big.png")
    monkeypatch.setattr(dec, "MAX_PIXELS", 50_000)  # 300x200 = 60,000 px
    with pytest.raises(DecodeError, match="too many pixels"):
        decode_image(tmp_path / "big.png", 8, 1)
    with pytest.raises(DecodeError, match="too many pixels"):
        probe(tmp_path / "big.png")


def test_center_resize_takes_the_middle_as_imagenet_evaluation_does(tmp_path):
    """Shorter side to size / 0.875, then a centre crop: 256 px high -> 224, so 16 px off the top and bottom."""
    img = np.full((256, 384, 3), 255, np.uint8)  # (H, W, C), white
    img[:8], img[-8:] = 0, 0  # black bands well inside the 16 px the crop takes off each side
    Image.fromarray(img).save(tmp_path / "band.png")
    out = decode_image(tmp_path / "band.png", 224, 3, "center")  # (3, 224, 224) at scale 1: no blur to blame
    assert out.shape == (3, 224, 224) and out.min() >= 250
    assert decode_image(tmp_path / "band.png", 224, 3, "crop")[:, 0].max() < 5  # "crop" keeps the bands
