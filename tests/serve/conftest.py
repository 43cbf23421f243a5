"""One digits run for every serve test, its predictor, and digits test-split images as PNG bytes."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

import cnnfit


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory):
    return cnnfit.train(data="digits", epochs=3, project=str(tmp_path_factory.mktemp("runs")), name="serve")


@pytest.fixture(scope="session")
def predictor(digits_run):
    from cnnfit.predictor import load_predictor

    return load_predictor(digits_run.dir)


@pytest.fixture(scope="session")
def digits_pngs(digits_run) -> list[tuple[bytes, str]]:
    """(PNG bytes, true class name) for the run's test split, which the model never trained on."""
    from cnnfit.data import load_imageset, resolve

    ds = load_imageset(resolve("digits"), None, None, "squash", None, True)[0]
    idx = json.loads((digits_run.dir / "split.json").read_text())["test"]
    return [(png(ds.images[i]), ds.classes[int(ds.labels[i])]) for i in idx]


def png(image: np.ndarray) -> bytes:
    """(C, H, W) uint8 -> PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)).save(buf, "PNG")
    return buf.getvalue()
