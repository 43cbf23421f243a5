"""On a CUDA GPU: the cifar10-speed recipe through the ordinary trainer. `pytest -m gpu` runs these; without a GPU
they skip and say why."""

import numpy as np
import pytest
import torch
from PIL import Image

import cnnfit
from tests.conftest import shared_dataset

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() "
                                 "is False); run `pytest -m gpu` on a machine with one")]


def _shapes_folder(root, per_class=2000, size=32, seed=0):
    """Three classes a CNN must look at to tell apart: a bright disc, a bright square, a bright cross, each at a
    random place and scale on noise; 32 px RGB PNGs in folders named for their class."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for name in ("disc", "square", "cross"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            img = rng.normal(80, 30, (size, size, 3))
            cy, cx, r = rng.integers(10, 22), rng.integers(10, 22), rng.integers(4, 9)
            if name == "disc":
                mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            elif name == "square":
                mask = (abs(yy - cy) <= r) & (abs(xx - cx) <= r)
            else:
                mask = ((abs(yy - cy) <= 1) & (abs(xx - cx) <= r)) | ((abs(xx - cx) <= 1) & (abs(yy - cy) <= r))
            img[mask] += rng.uniform(100, 160)
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / name / f"{i}.png")
    return root


def test_the_speed_recipe_trains_a_folder_of_classes_unchanged_but_for_data(tmp_path):
    folder = _shapes_folder(tmp_path / "shapes")
    run = cnnfit.train(recipe="cifar10-speed", data=str(folder), project=str(tmp_path / "runs"))
    assert run.accuracy > 0.9
    assert "gradients match eager mode" in run.timings["compile"]  # torch.compile was used, and checked
    assert len(run.history) == 10 and all(h["train_seconds"] > 0 for h in run.history)
    assert run.metrics["timings"]["test_seconds"] > 0 and run.timings["init_seconds"] > 0


def test_cifar10_speed_reaches_airbench_class_accuracy(tmp_path):
    zip_path = shared_dataset("cifar10-jpeg") / "cifar10-jpeg.zip"
    run = cnnfit.train(recipe="cifar10-speed", data=str(zip_path), project=str(tmp_path))
    assert run.accuracy > 0.9  # airbench 0.1.8 on this JPEG copy: ~0.906 (benchmarks/bench_cifar_gpu.py)
    assert sum(h["train_seconds"] for h in run.history) < 30  # seconds, not minutes: the data path is on the GPU


def test_the_training_images_stay_uint8_on_the_gpu():
    from cnnfit.data.loader import DeviceLoader

    images = np.random.default_rng(0).integers(0, 256, (64, 3, 8, 8), dtype=np.uint8)
    loader = DeviceLoader(images, np.arange(64) % 4, batch=16, device=torch.device("cuda"), mean=[0.5] * 3,
                          std=[0.25] * 3, shuffle=True, alternate_flip=True, drop_last=True)
    assert loader.x.dtype == torch.uint8 and loader.x.is_cuda  # 4x less memory than floats; converted per batch
    x, y = next(iter(loader))
    assert x.is_cuda and x.dtype == torch.float32 and y.is_cuda
