"""What the server adds beyond top-k classes, against the real digits run: "unknown" answers under a reject
threshold, Grad-CAM heatmaps (PNG data URIs of the stated size, from a private copy of the module), POST /embed
(the vectors embed_images gives, under the same limits), and an .onnx server refusing both with the fix."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from cnnfit.errors import CnnfitError
from cnnfit.eval.explain import gradcam, overlay
from cnnfit.pipeline.embed import embed_images
from cnnfit.pipeline.predict import reject_rule
from cnnfit.serve import create_app, serve
from cnnfit.serve.insight import MAX_EXPLAIN, heatmap_side

PNG_URI = "data:image/png;base64,"


@pytest.fixture(scope="module")
def client(predictor):
    with TestClient(create_app(predictor)) as c:
        yield c


@pytest.fixture(scope="module")
def onnx_client(digits_run, tmp_path_factory):
    from cnnfit.export import export
    from cnnfit.predictor import load_predictor

    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export(digits_run.dir, check_images=50, out=out)
    with TestClient(create_app(load_predictor(out))) as c:
        yield c


def upload(*items: tuple[str, bytes]) -> list:
    return [("files", (name, data, "image/png")) for name, data in items]


def some(digits_pngs, n: int) -> list:
    return upload(*((f"{i}.png", b) for i, (b, _) in enumerate(digits_pngs[:n])))


def decode_uri(uri: str) -> Image.Image:
    assert uri.startswith(PNG_URI)
    return Image.open(io.BytesIO(base64.b64decode(uri[len(PNG_URI):], validate=True)))


def test_explain_gives_a_png_per_file_of_the_stated_size(client, predictor, digits_pngs):
    r = client.post("/predict?explain=true", files=some(digits_pngs, 3))
    assert r.status_code == 200, r.text
    body, side = r.json(), heatmap_side(predictor.imgsz)
    assert side == 128 and "explain_note" not in body  # 8 px x 16; simplecnn's maps localise
    images = np.stack([predictor.decode(b) for b, _ in digits_pngs[:3]])  # (3, 1, 8, 8)
    probs = predictor.predict(images)
    want = gradcam(predictor.module, images, target=probs.argmax(1))  # (3, 8, 8)
    for p, image, heat in zip(body["predictions"], images, want):
        png = decode_uri(p["heatmap"])
        assert png.format == "PNG" and png.size == (side, side) and png.mode == "RGB"
        pixels = np.asarray(png)[::16, ::16]  # (8, 8, 3): one pixel of each 16x16 block
        assert np.abs(pixels.astype(int) - overlay(image, heat)).max() <= 1
    assert "heatmap" not in client.post("/predict", files=some(digits_pngs, 1)).json()["predictions"][0]
    assert client.get("/health").json()["explain"] is True


def test_explanations_use_a_private_copy_and_agree_with_predictions_made_beside_them(predictor, digits_pngs):
    app = create_app(predictor, max_wait_ms=20)
    sample = [b for b, _ in digits_pngs[:12]]

    async def fire():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://serve") as c:
            rs = await asyncio.gather(*(c.post("/predict?topk=10" + ("&explain=true" if i % 3 == 0 else ""),
                                               files=upload((f"{i}.png", b))) for i, b in enumerate(sample)))
        await app.state.batcher.close()
        return rs

    responses = asyncio.run(fire())
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    assert sum("heatmap" in r.json()["predictions"][0] for r in responses) == 4
    for b, r in zip(sample, responses):
        got = {t["class"]: t["prob"] for t in r.json()["predictions"][0]["top"]}
        alone = predictor.predict(predictor.decode(b)[None])[0]
        np.testing.assert_allclose([got[c] for c in predictor.classes], alone, atol=1e-5)
    twin = app.state.insight._module
    assert twin is not None and twin is not predictor.module
    for (name, a), b in zip(predictor.module.named_parameters(), twin.parameters()):
        assert a.data_ptr() != b.data_ptr() and torch.equal(a, b) and a.grad is None, name


def test_explain_is_limited_per_request(client, digits_pngs):
    r = client.post("/predict?explain=true", files=some(digits_pngs, MAX_EXPLAIN + 1))
    assert r.status_code == 413 and f"at most {MAX_EXPLAIN} files" in r.json()["detail"], r.text
    assert client.post("/predict", files=some(digits_pngs, MAX_EXPLAIN + 1)).status_code == 200  # without explain


def test_an_unlocalised_model_says_its_heatmaps_do_not_show_where_it_looked(predictor, digits_pngs):
    fastnet = dataclasses.replace(predictor, info={**predictor.info, "model": "fastnet"})  # the name is what counts
    with TestClient(create_app(fastnet)) as c:
        body = c.post("/predict?explain=true", files=some(digits_pngs, 1)).json()
    assert "do not show where it looked" in body["explain_note"] and body["predictions"][0]["heatmap"]


def test_an_onnx_server_refuses_explain_and_embed_naming_the_run_directory(onnx_client, digits_pngs):
    r = onnx_client.post("/predict?explain=true", files=some(digits_pngs, 1))
    assert r.status_code == 422 and r.json()["detail"] == ("explain=true: explanations need the run directory "
                                                          "(best.pt): serve runs/NAME instead of model.onnx")
    r = onnx_client.post("/embed", files=some(digits_pngs, 1))
    assert r.status_code == 422 and r.json()["detail"] == ("embeddings need the run directory (best.pt): serve "
                                                          "runs/NAME instead of model.onnx")
    assert onnx_client.get("/health").json()["explain"] is False
    assert onnx_client.post("/predict", files=some(digits_pngs, 1)).status_code == 200


def test_reject_answers_unknown_under_the_threshold(predictor, digits_pngs):
    files = some(digits_pngs, 40)
    top = predictor.predict(np.stack([predictor.decode(b) for b, _ in digits_pngs[:40]])).max(1)  # (40,)
    threshold = float(np.median(top))  # half of them under it
    rule = {**reject_rule(predictor, reject=True), "threshold": threshold}
    with TestClient(create_app(predictor, reject=rule)) as c:
        preds = c.post("/predict", files=files).json()["predictions"]
        for p, s in zip(preds, top):
            assert p["score"] == pytest.approx(float(s), abs=1e-6) == p["top"][0]["prob"]
            assert p["answer"] == ("unknown" if s < threshold else p["top"][0]["class"])
        assert 0 < sum(p["answer"] == "unknown" for p in preds) < 40
        off = c.post("/predict?reject=false", files=files).json()["predictions"]
        assert all("answer" not in p and "score" not in p for p in off)
        assert c.post("/predict?reject=true", files=files).status_code == 200
        shown = c.get("/model").json()
    assert shown["reject"]["threshold"] == threshold and "val" not in shown["reject"]
    assert shown["info"]["reject"]["threshold"] == predictor.info["reject"]["threshold"]  # the one fitted on val
    assert "val" not in shown["info"]["reject"]  # the val scores stay in best.pt


def test_reject_true_without_a_rule_is_422_saying_how_to_start(client, digits_pngs):
    r = client.post("/predict?reject=true", files=some(digits_pngs, 1))
    detail = r.json()["detail"]
    assert r.status_code == 422 and "started without reject=true" in detail and "cnnfit serve RUN reject=true" in detail
    assert "answer" not in client.post("/predict", files=some(digits_pngs, 1)).json()["predictions"][0]
    assert client.get("/model").json()["reject"] is None


def test_serve_fits_the_rule_it_is_asked_for(digits_run, predictor, monkeypatch):
    import uvicorn

    got = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: got.update(app=app))
    serve(str(digits_run.dir), reject=True)
    with TestClient(got["app"], base_url="http://127.0.0.1:8000") as c:  # serve answers loopback names only
        assert c.get("/model").json()["reject"]["threshold"] == pytest.approx(predictor.info["reject"]["threshold"])
    serve(str(digits_run.dir), reject_coverage=0.5)
    with TestClient(got["app"], base_url="http://127.0.0.1:8000") as c:  # serve answers loopback names only
        assert c.get("/model").json()["reject"]["val_coverage"] == pytest.approx(0.5, abs=0.05)
    with pytest.raises(CnnfitError, match="maxprob"):
        create_app(predictor, reject={**predictor.info["reject"], "score": "energy"})


def test_embed_gives_the_vectors_embed_images_gives(client, predictor, digits_pngs):
    r = client.post("/embed", files=some(digits_pngs, 5))
    assert r.status_code == 200, r.text
    body = r.json()
    vectors = np.array(body["embeddings"], dtype=np.float32)  # (5, D)
    want = embed_images(predictor, np.stack([predictor.decode(b) for b, _ in digits_pngs[:5]]))
    assert vectors.shape == want.shape == (5, body["dim"]) and body["dim"] > 1
    np.testing.assert_allclose(vectors, want, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert body["files"] == [f"{i}.png" for i in range(5)] and body["model"] == "simplecnn" and body["ms"] > 0


def test_embed_has_the_limits_and_4xx_of_predict(predictor, digits_pngs):
    with TestClient(create_app(predictor, max_files=4, api_key="s3cret")) as c:
        key = {"X-API-Key": "s3cret"}
        assert c.post("/embed", files=some(digits_pngs, 1)).status_code == 401
        r = c.post("/embed", files=some(digits_pngs, 5), headers=key)
        assert r.status_code == 413 and "Too many files" in r.json()["detail"]
        r = c.post("/embed", files=upload(("page.png", b"<html></html>")), headers=key)
        assert r.status_code == 422 and "page.png': not an image" in r.json()["detail"]
        assert c.post("/embed", json={"files": []}, headers=key).status_code == 415
        assert c.post("/embed", files=some(digits_pngs, 4), headers=key).status_code == 200


def test_the_openapi_schema_documents_embed_and_the_new_parameters(client):
    schema = client.get("/openapi.json").json()
    ok = schema["paths"]["/embed"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/EmbedOut"}
    models = schema["components"]["schemas"]
    assert {"embeddings", "dim", "files", "model", "ms"} <= set(models["EmbedOut"]["properties"])
    assert {"answer", "score", "heatmap"} <= set(models["FilePrediction"]["properties"])
    assert {"topk", "explain", "reject"} <= {p["name"] for p in schema["paths"]["/predict"]["post"]["parameters"]}
