"""Grad-CAM: on a model trained where only a small marker at a random place decides the class, the heatmap's peak
falls on the marker; the layer it reads is found for every zoo model and a layers file; predict writes overlays."""

import numpy as np
import pytest
import torch
from PIL import Image

import cnnfit
from cnnfit.engine import load_checkpoint
from cnnfit.errors import CnnfitError
from cnnfit.eval.explain import gradcam, overlay, save_overlay, target_layer
from cnnfit.models import create, list_models, min_size
from cnnfit.pipeline.predict import predict
from cnnfit.predictor import pixels_module

SIDE, MARK, NEAR = 32, 4, 3  # px: image side, marker side, how far off the marker a peak may fall and still count
# translation-equivariant convs and a global average pool: a map at 16x16 px (simplecnn's dense layer over
# positions needs ~3000 images and 5 epochs for the same accuracy, ~4x the time)
NET = """layers:
  - conv: 16
  - bn
  - relu
  - pool: 2
  - conv: 32
  - bn
  - relu
  - conv: 32
  - bn
  - relu
"""


def markers(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n, 1, 32, 32) uint8 noise (40..215), each with one 4x4 marker at a uniformly random place: white for class
    0, black for class 1, so nothing but the marker tells the classes apart. -> images, labels, (n, 2) corners."""
    x = rng.integers(40, 216, (n, 1, SIDE, SIDE)).astype(np.uint8)
    y = rng.integers(0, 2, n)
    corner = rng.integers(0, SIDE - MARK + 1, (n, 2))  # (n, 2): row, column of the marker's top left pixel
    for img, label, (r, c) in zip(x, y, corner):
        img[0, r:r + MARK, c:c + MARK] = 255 if label == 0 else 0
    return x, y, corner


def near(points: np.ndarray, corner: np.ndarray) -> np.ndarray:
    """(N,) whether each (row, column) point lies on its marker's box dilated by NEAR px."""
    lo, hi = corner - NEAR, corner + MARK - 1 + NEAR
    return ((points >= lo) & (points <= hi)).all(1)


@pytest.fixture(scope="module")
def marked(tmp_path_factory):
    """A run trained on 2000 marker images (~20 s on 2 cores), and 400 test images with their marker corners."""
    root = tmp_path_factory.mktemp("markers")
    rng = np.random.default_rng(0)
    (x_train, y_train, _), (x_test, y_test, corner) = markers(2000, rng), markers(400, rng)
    np.savez(root / "markers.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    (root / "net.yaml").write_text(NET)
    run = cnnfit.train(data=str(root / "markers.npz"), model=str(root / "net.yaml"), epochs=6, seed=0,
                       device="cpu", project=str(root / "runs"))
    return run, x_test, corner


def test_the_heatmap_peaks_on_the_marker_that_decides_the_class(marked):
    run, x, corner = marked
    assert run.accuracy >= 0.95, f"the model did not learn the markers: test accuracy {run.accuracy:.3f}"
    module = pixels_module(load_checkpoint(run.dir / "best.pt"))
    heat = gradcam(module, x, batch=128)  # more than one batch of 128
    assert heat.shape == (len(x), SIDE, SIDE) and heat.dtype == np.float32
    assert heat.min() >= 0 and np.allclose(heat.max((1, 2)), 1)
    peaks = np.stack(np.divmod(heat.reshape(len(x), -1).argmax(1), SIDE), 1)  # (N, 2): row, column
    hit = near(peaks, corner).mean()
    # controls a decorative map would pass as well: the centre pixel, and each map scored on another image's marker
    centre = near(np.full_like(corner, SIDE // 2), corner).mean()
    elsewhere = near(peaks, np.roll(corner, 1, axis=0)).mean()
    assert hit >= 0.9 and centre <= 0.2 and elsewhere <= 0.2, \
        f"peaks on the marker: {hit:.3f}; centre pixel: {centre:.3f}; another image's marker: {elsewhere:.3f}"
    assert all(p.requires_grad and p.grad is None for p in module.parameters()), "parameter state was not restored"


def test_a_named_class_and_a_plain_model_in_train_mode(marked):
    run, x, _ = marked
    module = pixels_module(load_checkpoint(run.dir / "best.pt"))
    white, black = gradcam(module, x[:8], target=np.zeros(8)), gradcam(module, x[:8], target=np.ones(8))
    assert not np.allclose(white, black), "the target class does not change the map"
    model = create("fastnet", num_classes=3, in_chans=1, imgsz=SIDE).train()  # float in, as a plain model takes
    with torch.no_grad():  # a caller's no_grad does not stop the backward pass Grad-CAM needs
        heat = gradcam(model, torch.rand(3, 1, SIDE, SIDE), layer="block2")
    assert heat.shape == (3, SIDE, SIDE) and model.training and all(m.training for m in model.modules())
    assert all(p.requires_grad and p.grad is None for p in model.parameters())


EXPECTED = {"resnet18": "layer4", "resnet50": "layer4", "resnet20": "layer3", "fastnet": "block3",
            "airnet": "block3", "googlenet": "inception5b", "mobilenet_v2": "features", "efficientnet_lite0": "act",
            "lenet5": "bn2", "simplecnn": "drop1"}  # lenet5's `act` also runs on its dense layers, so bn2


@pytest.mark.parametrize("name", list_models())
def test_every_zoo_model_has_a_layer_to_explain(name):
    size = max(min_size(name), SIDE)
    model = create(name, num_classes=3, in_chans=1, imgsz=size)
    picked, layer = target_layer(model, torch.rand(1, 1, size, size))
    seen = []
    handle = layer.register_forward_hook(lambda _m, _i, out: seen.append(out.shape))
    with torch.no_grad():
        model.eval()(torch.rand(1, 1, size, size))
    handle.remove()
    assert len(seen[-1]) == 4 and min(seen[-1][-2:]) >= 2, f"{name}.{picked} returns {seen[-1]}"
    assert picked == EXPECTED.get(name, picked)


def test_a_layers_file_is_explained_at_its_block_and_an_mlp_is_refused(tmp_path):
    conv = tmp_path / "conv.yaml"
    conv.write_text("layers: [conv: 8, bn, relu, pool: 2, residual: [conv: 8, bn, relu], flatten, dense: 16, relu]")
    model = create(str(conv), num_classes=3, in_chans=1, imgsz=16)
    assert target_layer(model, torch.rand(1, 1, 16, 16))[0] == "residual1"  # the block, not its last relu
    mlp = tmp_path / "mlp.yaml"
    mlp.write_text("layers: [flatten, dense: 16, relu]")
    with pytest.raises(CnnfitError, match="no layer with an") as err:
        target_layer(create(str(mlp), num_classes=3, in_chans=1, imgsz=16), torch.rand(1, 1, 16, 16))
    assert "conv layers" in str(err.value) and "\n" not in str(err.value)


def test_an_overlay_is_the_image_coloured_where_the_map_is_hot(tmp_path):
    gray = np.full((1, 8, 8), 128, np.uint8)
    heat = np.zeros((8, 8), np.float32)
    heat[2, 3] = 1.0
    out = overlay(gray, heat)
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    assert out[2, 3, 0] > out[2, 3, 2] and out[0, 0, 2] > out[0, 0, 0]  # jet: hot is red, cold is blue
    rgb = np.stack([np.zeros((8, 8), np.uint8), np.full((8, 8), 255, np.uint8), np.zeros((8, 8), np.uint8)])
    assert overlay(rgb, heat, alpha=0.0)[..., 1].min() == 255  # alpha 0: the image unchanged
    with Image.open(save_overlay(tmp_path / "a.png", rgb, heat)) as png:
        assert png.size == (8, 8) and png.mode == "RGB"
    with pytest.raises(CnnfitError, match="same size"):
        overlay(gray, np.zeros((4, 4)))


def test_predict_writes_one_overlay_per_image_and_refuses_onnx(marked, tmp_path):
    run, x, _ = marked
    for i, name in enumerate(("a/0.png", "a/1.png", "b/0.png", "b/1.png")):  # each stem twice
        (tmp_path / "in" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[i, 0]).save(tmp_path / "in" / name)
    rows = list(predict(run.dir, [str(tmp_path / "in")], out=tmp_path / "p.csv", device="cpu", explain=True).rows())
    pngs = sorted((tmp_path / "explain").iterdir())
    assert len(rows) == 4 and len(pngs) == 4 and sorted(r["explain"] for r in rows) == [str(p) for p in pngs]
    assert {p.name for p in pngs} == {"0.png", "0-2.png", "1.png", "1-2.png"}
    for p in pngs:
        with Image.open(p) as png:
            assert png.size == (SIDE, SIDE) and png.mode == "RGB"
    assert (tmp_path / "p.csv").read_text().splitlines()[0].endswith(",explain,status")
    for source in ("runs/x/model.onnx", "imagenet:efficientnet_lite0"):
        with pytest.raises(CnnfitError, match=r"explanations need the run directory \(best.pt\): pass runs/NAME"):
            predict(source, [str(tmp_path / "in")], explain=True)
