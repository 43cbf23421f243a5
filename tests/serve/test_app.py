"""The server against a real digits run: predictions that match the labels, the info endpoints, hostile uploads
that each get a 4xx with a message (and the server answering afterwards), the API key, and micro-batching."""

import asyncio
import io
import struct
import tempfile
import zlib

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from cnnfit.serve import create_app
from tests.serve.conftest import png


@pytest.fixture(scope="module")
def client(predictor):
    with TestClient(create_app(predictor)) as c:
        yield c


def upload(*items: tuple[str, bytes]) -> list:
    return [("files", (name, data, "image/png")) for name, data in items]


def test_predicts_the_digits_it_is_shown(client, digits_pngs):
    sample = digits_pngs[:40]
    r = client.post("/predict", files=upload(*((f"{i}.png", b) for i, (b, _) in enumerate(sample))))
    assert r.status_code == 200, r.text
    body = r.json()
    assert [p["file"] for p in body["predictions"]] == [f"{i}.png" for i in range(40)]
    top1 = [p["top"][0]["class"] for p in body["predictions"]]
    assert np.mean([t == y for t, (_, y) in zip(top1, sample)]) > 0.8
    first = body["predictions"][0]["top"]
    assert len(first) == 5 and all(a["prob"] >= b["prob"] for a, b in zip(first, first[1:]))
    assert body["model"] == "simplecnn" and body["ms"] > 0


def test_one_image_with_topk_equals_the_predictor(client, predictor, digits_pngs):
    data, label = digits_pngs[0]
    r = client.post("/predict?topk=3", files=upload(("one.png", data)))
    top = r.json()["predictions"][0]["top"]
    probs = predictor.predict(predictor.decode(data)[None])[0]
    assert [t["class"] for t in top] == [predictor.classes[k] for k in np.argsort(-probs)[:3]]
    assert top[0]["prob"] == pytest.approx(float(probs.max()), abs=1e-5)


def test_health_and_model(client, predictor):
    assert client.get("/health").json()["status"] == "ok"
    m = client.get("/model").json()
    assert m["classes"] == [str(d) for d in range(10)] and (m["imgsz"], m["channels"]) == (8, 1)
    assert m["backend"] == "torch" and m["resize"] == "squash" and m["info"]["accuracy"] > 0.8
    assert "/predict" in client.get("/openapi.json").json()["paths"]


def _png_claiming(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header says width x height: a decompression bomb's header, 70 bytes long."""
    raw = png(np.zeros((1, 1, 1), np.uint8))
    ihdr = struct.pack(">II", width, height) + raw[24:29]
    return raw[:16] + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)) + raw[33:]


def _truncated_png() -> bytes:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, "PNG")
    return buf.getvalue()[: len(buf.getvalue()) // 2]


HOSTILE = {  # name: (files, status, words in the message)
    "empty file": (upload(("empty.png", b"")), 422, "empty.png': empty file"),
    "truncated png": (upload(("half.png", _truncated_png())), 422, "half.png': truncated"),
    "html": (upload(("page.png", b"<!doctype html><html><body>hi</body></html>")), 422, "page.png': not an image"),
    "30000x30000 png": (upload(("bomb.png", _png_claiming(30000, 30000))), 413, "bomb.png': too many pixels"),
    "7000x7000 png": (upload(("big.png", _png_claiming(7000, 7000))), 413, "7000x7000, limit 40,000,000"),
    "1000 files": (upload(*((f"{i}.png", b"x") for i in range(1000))), 413, "Too many files"),
    "no files field": ([("image", ("a.png", b"x", "image/png"))], 422, "no image files"),
    "bad topk": (None, 422, "topk"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_uploads_get_a_4xx_with_a_message(client, digits_pngs, case):
    files, status, words = HOSTILE[case]
    if files is None:
        r = client.post("/predict?topk=99", files=upload(("a.png", digits_pngs[0][0])))
    else:
        r = client.post("/predict", files=files)
    assert r.status_code == status and words in r.json()["detail"], r.text
    assert client.post("/predict", files=upload(("ok.png", digits_pngs[0][0]))).status_code == 200


def test_a_50_mb_body_is_refused_before_it_is_read(client, digits_pngs):
    r = client.post("/predict", files=upload(("big.png", b"\0" * 50_000_000)))
    assert r.status_code == 413 and "over the 20 MB limit" in r.json()["detail"]
    # without Content-Length (chunked): refused by counting the bytes as they arrive
    chunks = (b"\0" * 1_000_000 for _ in range(50))
    r = client.post("/predict", content=chunks, headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert r.status_code == 413 and "over the 20 MB limit" in r.json()["detail"]
    assert client.post("/predict", files=upload(("ok.png", digits_pngs[0][0]))).status_code == 200


def test_not_multipart_is_415_and_broken_multipart_is_422(client):
    r = client.post("/predict", json={"files": ["a"]})
    assert r.status_code == 415 and "multipart/form-data" in r.json()["detail"]
    r = client.post("/predict", content=b"--x\r\nnonsense", headers={"Content-Type": "multipart/form-data"})
    assert r.status_code == 422 and "boundary" in r.json()["detail"]


def test_uploads_never_touch_the_disk(client, monkeypatch):
    def rollover(self):
        raise AssertionError("an upload was spooled to a temporary file")

    monkeypatch.setattr(tempfile.SpooledTemporaryFile, "rollover", rollover)
    noise = np.random.default_rng(1).integers(0, 256, (1000, 1000, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, "PNG")  # ~3 MB, over Starlette's 1 MB spool size
    r = client.post("/predict", files=upload(("photo.png", buf.getvalue())))
    assert r.status_code == 200 and len(buf.getvalue()) > 2_000_000


def test_api_key(predictor, digits_pngs):
    with TestClient(create_app(predictor, api_key="s3cret")) as c:
        files = upload(("a.png", digits_pngs[0][0]))
        assert c.post("/predict", files=files).status_code == 401
        assert c.post("/predict", files=files, headers={"X-API-Key": "wrong"}).status_code == 401
        assert c.get("/model").status_code == 401
        assert c.post("/predict", files=files, headers={"X-API-Key": "s3cret"}).status_code == 200
        assert c.get("/health").json()["auth"] is True  # health stays open, for load balancers


def test_concurrent_requests_are_batched_and_equal_unbatched(predictor, digits_pngs):
    app = create_app(predictor, max_batch=64, max_wait_ms=50)
    sample = [b for b, _ in digits_pngs[:16]]

    async def fire():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serve") as c:
            rs = await asyncio.gather(*(c.post("/predict?topk=10", files=upload((f"{i}.png", b)))
                                        for i, b in enumerate(sample)))
        await app.state.batcher.close()
        return rs

    responses = asyncio.run(fire())
    assert all(r.status_code == 200 for r in responses)
    assert app.state.batcher.images == 16 and app.state.batcher.batches < 16 / 2, app.state.batcher.batches
    for b, r in zip(sample, responses):
        got = {t["class"]: t["prob"] for t in r.json()["predictions"][0]["top"]}
        alone = predictor.predict(predictor.decode(b)[None])[0]  # (K,), a batch of one
        np.testing.assert_allclose([got[c] for c in predictor.classes], alone, atol=1e-5)


def test_page_is_self_contained(client):
    r = client.get("/")
    assert r.status_code == 200 and "<input id=\"file\" type=\"file\"" in r.text
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert "http://" not in r.text and "https://" not in r.text  # nothing loads from elsewhere
