"""One digits run for every serve test, its predictor, digits test-split images as PNG bytes, and a live server."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

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


@contextmanager
def live_server(app) -> Iterator[str]:
    """uvicorn serving `app` in a background thread on a free loopback port; its base URL until the block ends."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(10)


def phone_page(browser, url: str, height: int = 700) -> tuple[Any, list[str]]:
    """A phone-width page of `url` and the list its console errors and warnings collect into."""
    page = browser.new_page(viewport={"width": 390, "height": height})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning")
            else None)
    page.goto(url + "/", wait_until="load")
    return page, errors
