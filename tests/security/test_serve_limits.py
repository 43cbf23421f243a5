"""The server's budgets against hostile clients: deep images and many pixels refused from their headers, a deep
image that is allowed decoded in bounded memory, slow clients cut off while others are served, the Host check,
the API key kept off the command line and /health quiet without it; and unreadable files named as such."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import struct
import subprocess
import sys
import time
import zlib

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from cnnfit.cli import main
from cnnfit.data.decode import DecodeError, decode_image, map_images, probe
from cnnfit.errors import CnnfitError
from cnnfit.serve import app as serve_app
from cnnfit.serve import create_app, serve
from tests.serve import conftest as serve_fixtures
from tests.serve.conftest import png

# the serve tests' session fixtures: one digits run, its predictor and its test images as PNG bytes
digits_run, predictor, digits_pngs = serve_fixtures.digits_run, serve_fixtures.predictor, serve_fixtures.digits_pngs

TIMEOUT_S = 2.0  # the real server's timeout= here: long enough for a loaded CI machine, short for the test
DECODE_CAP_MB = 250  # a 6000x6000 16-bit PNG: its pixels are 72 MB; the float64 path took ~960 MB
PROBE_CAP_MB = 10  # reading its header; Pillow's PNG EXIF lookup decoded all 72 MB of pixels


def _png_claiming(width: int, height: int, bit_depth: int = 8) -> bytes:
    """A 1x1 grayscale PNG whose header says width x height at bit_depth: a bomb's header, ~70 bytes."""
    raw = png(np.zeros((1, 1, 1), np.uint8))
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    return raw[:16] + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)) + raw[33:]


def _upload(*items: tuple[str, bytes]) -> list:
    return [("files", (name, data, "image/png")) for name, data in items]


def test_a_deep_png_over_the_byte_budget_is_413_before_any_decoding(predictor, digits_pngs, monkeypatch):
    decoded = []
    monkeypatch.setattr(predictor, "decode", lambda src: decoded.append(src) or type(predictor).decode(predictor, src))
    with TestClient(create_app(predictor, max_image_mb=50)) as c:
        r = c.post("/predict", files=_upload(("deep.png", _png_claiming(6000, 6000, 16))))
        assert r.status_code == 413, r.text
        assert "deep.png': 6000x6000 I;16 decodes to 72 MB, over the 50 MB limit" in r.json()["detail"]
        assert decoded == []  # refused from the header: the 70-byte file was never decoded
        assert c.post("/predict", files=_upload(("ok.png", digits_pngs[0][0]))).status_code == 200


def test_an_allowed_deep_png_decodes_in_bounded_memory(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((6000, 6000), 1000, np.uint16)).save(path, compress_level=1)  # 0.3 MB, fast to write
    head = probe(path)
    assert head.mode.startswith("I;16") and head.nbytes == 72_000_000 < serve_app.MAX_IMAGE_MB * 1e6  # allowed
    code = ("import resource, sys; from cnnfit.data.decode import decode_image, probe"
            "; data = open(sys.argv[1], 'rb').read(); peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss"
            "; before = peak(); probe(data); probed = peak(); out = decode_image(data, 8, 1)"
            "; print((probed - before) / 1024, (peak() - before) / 1024, int(out.mean()))")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True).stdout
    probe_mb, decode_mb, value = out.split()
    assert float(probe_mb) < PROBE_CAP_MB, out  # the header alone: serve's budgets are checked before decoding
    assert float(decode_mb) < DECODE_CAP_MB and int(value) == round(1000 * 255 / 65535), out


def test_a_request_over_the_total_pixel_budget_is_413(predictor):
    with TestClient(create_app(predictor, max_request_pixels=100_000_000)) as c:
        three = [(f"{i}.png", _png_claiming(6000, 6000)) for i in range(3)]  # 36 MP each, 108 MP in all
        r = c.post("/predict", files=_upload(*three))
        assert r.status_code == 413 and "pass 100 MP in all at file '2.png'" in r.json()["detail"], r.text
        r = c.post("/predict", files=_upload(*three[:2]))  # 72 MP: past the budget, decoding finds them hollow
        assert r.status_code == 422 and "truncated" in r.json()["detail"], r.text


def test_a_stalled_upload_gets_408_and_holds_no_batch(predictor, digits_pngs):
    app = create_app(predictor, body_timeout=0.5)

    async def stalled_body():
        yield b"--x\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.png\"\r\n\r\n"
        await asyncio.sleep(3600)

    async def fire():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://serve") as c:
            slow = asyncio.create_task(c.post("/predict", content=stalled_body(),
                                              headers={"Content-Type": "multipart/form-data; boundary=x"}))
            await asyncio.sleep(0.2)
            coming = app.state.batcher.coming  # the stalled request is not announced to the batcher
            t0 = time.perf_counter()
            ok = await c.post("/predict", files=_upload(("ok.png", digits_pngs[0][0])))
            fast = time.perf_counter() - t0
            r = await slow
        await app.state.batcher.close()
        return coming, ok, fast, r

    coming, ok, fast, r = asyncio.run(fire())
    assert coming == 0 and ok.status_code == 200 and fast < 0.4
    assert r.status_code == 408 and "did not arrive within 0.5 s" in r.json()["detail"]
    assert r.headers["connection"] == "close"


@pytest.fixture(scope="module")
def server(digits_run):
    """`cnnfit serve` in its own process on a free loopback port, timeout=2; its port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != serve_app.API_KEY_ENV}
    proc = subprocess.Popen([sys.executable, "-m", "cnnfit", "serve", str(digits_run.dir), f"port={port}",
                             f"timeout={TIMEOUT_S}"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(600):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                assert proc.poll() is None, proc.stderr.read().decode()
                time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def _closed_after(sock: socket.socket, limit: float) -> tuple[float, bytes]:
    """Seconds until the server closes `sock` (at most `limit`), and what it sent before closing."""
    sock.settimeout(limit)
    t0, got = time.perf_counter(), b""
    while chunk := sock.recv(4096):
        got += chunk
    return time.perf_counter() - t0, got


def test_half_sent_requests_are_closed_in_time_while_others_are_served(server, digits_pngs):
    head_only = socket.create_connection(("127.0.0.1", server))
    head_only.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # the head, never finished
    body_half = socket.create_connection(("127.0.0.1", server))
    body_half.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5000\r\n"
                      b"Content-Type: multipart/form-data; boundary=x\r\n\r\n--x\r\n")  # the body, never finished
    try:
        t0 = time.perf_counter()
        r = httpx.post(f"http://127.0.0.1:{server}/predict", files=_upload(("ok.png", digits_pngs[0][0])), timeout=5)
        assert r.status_code == 200 and time.perf_counter() - t0 < 1.0  # the stalled ones delay nobody
        waited, got = _closed_after(head_only, TIMEOUT_S + 3)
        assert got == b"" and waited < TIMEOUT_S + 1.5
        waited, got = _closed_after(body_half, TIMEOUT_S + 3)
        assert got.startswith(b"HTTP/1.1 408") and b"did not arrive within 2 s" in got and waited < TIMEOUT_S + 1.5
    finally:
        head_only.close()
        body_half.close()


@pytest.mark.parametrize("host, status", [("127.0.0.1", 200), ("localhost", 200), ("[::1]", 200),
                                          ("evil.example", 400), ("127.0.0.1.nip.io", 400)])
def test_the_host_header_must_name_this_machine(server, host, status):
    r = httpx.get(f"http://127.0.0.1:{server}/health", headers={"Host": f"{host}:{server}"})
    assert r.status_code == status, r.text
    if status == 400:
        assert "allowed_hosts=" in r.json()["detail"] and "model" not in r.text


def test_allowed_hosts_adds_names(predictor):
    app = create_app(predictor, allowed_hosts=["127.0.0.1", "models.internal"])
    with TestClient(app, base_url="http://models.internal:8000") as c:
        assert c.get("/health").status_code == 200
    with TestClient(app, base_url="http://elsewhere.example") as c:
        assert c.get("/health").status_code == 400


def test_a_host_beyond_loopback_without_a_key_is_refused(digits_run, monkeypatch, capsys):
    monkeypatch.delenv(serve_app.API_KEY_ENV, raising=False)
    assert main(["serve", str(digits_run.dir), "host=0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert "host=0.0.0.0 would serve beyond this machine without a key" in err and err.strip().count("\n") == 0
    assert main(["serve", str(digits_run.dir), "api_key=s3cret"]) == 2  # never on a command line
    assert "unknown key 'api_key'" in capsys.readouterr().err


@pytest.fixture
def served(monkeypatch):
    """serve()'s app and uvicorn settings, without starting uvicorn."""
    import uvicorn

    got = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: got.update(app=app, **kw))
    return got


@pytest.mark.parametrize("source", ["env", "file"])
def test_the_key_comes_from_the_environment_or_a_file(digits_run, served, tmp_path, monkeypatch, source):
    monkeypatch.delenv(serve_app.API_KEY_ENV, raising=False)
    if source == "env":
        monkeypatch.setenv(serve_app.API_KEY_ENV, "from-env")
        serve(str(digits_run.dir), host="0.0.0.0")
        key = "from-env"
    else:
        (tmp_path / "key").write_text("from-file\n")
        (tmp_path / "key").chmod(0o600)
        serve(str(digits_run.dir), host="0.0.0.0", api_key_file=str(tmp_path / "key"))
        key = "from-file"
    assert served["limit_concurrency"] == serve_app.MAX_CONNECTIONS and served["timeout_keep_alive"] > 0
    with TestClient(served["app"], base_url="http://127.0.0.1:8000") as c:
        assert c.get("/model").status_code == 401
        assert c.get("/model", headers={"X-API-Key": "wrong"}).status_code == 401
        assert c.get("/model", headers={"X-API-Key": key}).status_code == 200


def test_an_empty_key_file_is_refused(digits_run, tmp_path):
    (tmp_path / "key").write_text("\n")
    with pytest.raises(CnnfitError, match="is empty; write the key on its first line"):
        serve(str(digits_run.dir), api_key_file=str(tmp_path / "key"))


def test_health_tells_callers_without_the_key_nothing_but_status(predictor):
    with TestClient(create_app(predictor, api_key="s3cret")) as c:
        assert c.get("/health").json() == {"status": "ok", "auth": True}
        full = c.get("/health", headers={"X-API-Key": "s3cret"}).json()
        assert full["model"] == "simplecnn" and {"batches", "images"} <= set(full)
        assert "simplecnn" not in c.get("/openapi.json").text  # nor does the schema name the model


def test_unreadable_files_are_named_as_such(tmp_path, monkeypatch):
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(DecodeError, match="cannot be read: it is a directory, not an image file"):
        decode_image(tmp_path / "folder.png", 8, 1)
    [err] = map_images(lambda b: decode_image(b, 8, 1), [tmp_path / "folder.png"], lambda p: p.read_bytes())
    assert str(err).startswith("cannot be read: it is a directory")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "ok.png")

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(Image, "open", denied)  # what a file without read permission gives (root reads anything)
    with pytest.raises(DecodeError, match="cannot be read: permission denied; give this user read access"):
        decode_image(tmp_path / "ok.png", 8, 1)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_a_file_without_read_permission_is_named_as_such(tmp_path):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "locked.png")
    (tmp_path / "locked.png").chmod(0)
    with pytest.raises(DecodeError, match="cannot be read: permission denied"):
        decode_image(tmp_path / "locked.png", 8, 1)
