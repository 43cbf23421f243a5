"""The HTTP server: upload images, get each one's top-k classes.

    app = create_app(load_predictor("runs/train3"), api_key="s3cret")
    curl -F files=@cat.jpg -F files=@dog.png -H 'X-API-Key: s3cret' http://127.0.0.1:8000/predict

Status codes, one rule each (every error body is {"detail": "<message>"}, naming the file where one is at fault):
    400  a Host header the server does not answer to (only when the app has allowed_hosts: DNS rebinding)
    401  X-API-Key missing or wrong (only when the app has an api_key)
    408  the body did not arrive within body_timeout seconds; the connection is closed
    413  too large: the body (Content-Length, or bytes counted while reading), more than max_files files,
         an image over max_pixels or max_image_mb decoded, or a request over max_request_pixels in all
         (each read from the headers, before any pixel is decoded)
    415  the request is not multipart/form-data
    422  the request's content is unusable: malformed multipart, no `files` part, or a file that is empty,
         truncated, not an image (HTML, text...) or otherwise undecodable; or a bad query parameter, or one the
         server cannot honour (explain=true or /embed of an .onnx, reject=true without a threshold)
Any file that fails fails the whole request: a client never gets predictions for part of what it sent.
Decoding runs on decode_slots threads per lane, one lane for small images and one for large ones,
so memory stays bounded under any load and a phone photo never queues behind a 40 MP scan.

Request data never touches the disk: Starlette's multipart parser spools file parts over 1 MB to temporary
files, so it runs here with a spool size above the body limit, and the body limit stops any larger body first."""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Security
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from cnnfit.data.decode import DecodeError, Header, probe
from cnnfit.errors import CnnfitError
from cnnfit.predictor import Predictor
from cnnfit.serve.batching import MicroBatcher
from cnnfit.serve.insight import MAX_EXPLAIN, Insight, heatmap_side, public_rule
from cnnfit.serve.page import CSP, PAGE

log = logging.getLogger(__name__)

FIELD = "files"  # the multipart field that carries the images
_TOO_MANY_PIXELS = "too many pixels"  # how cnnfit.data.decode starts its pixel-limit messages

# The limits' defaults, each with its reason; create_app and serve take every one as a keyword.
MAX_BODY_MB = 20  # a request body: 64 phone photos of ~300 KB, with room to spare
MAX_FILES = 64  # files per request: one full batch of the default max_batch
MAX_PIXELS = 40_000_000  # width x height of one image: a 36 MP full-frame camera photo fits
MAX_IMAGE_MB = 120  # decoded bytes of one image (width x height x bands x bytes a sample): 8-bit RGB at MAX_PIXELS,
# so only deeper images (16-bit, float, 4-band) meet this limit before the pixel one
MAX_REQUEST_PIXELS = 160_000_000  # a request's images together: at ~18 ns a pixel (a 40 MP RGB PNG decodes in
# 0.72 s on one core) a request holds a decode slot ~3 s at most; more images go in more requests
REQUEST_TIMEOUT_S = 30.0  # to send a request's head, and then its body: 20 MB at 1 MB/s (a slow uplink) fits;
# a stalled client holds its connection and memory no longer than this
SMALL_IMAGE_BYTES = 4_000_000  # decoded bytes up to which an image takes the small lane: a 1.3 MP RGB photo (~25 ms)
DECODE_SLOTS = os.cpu_count() or 1  # decode threads per lane: Pillow releases the GIL, so one per core fills the
# machine; memory stays at slots x the largest image's decode however many clients wait, and big buffers come
# and go in the same few threads (spread over starlette's 40, glibc's per-thread arenas kept ~1.8 GB after them)
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")  # Host names a local server answers to: a web page whose
# domain was rebound to 127.0.0.1 sends its own name, and is refused
API_KEY_ENV = "CNNFIT_API_KEY"  # the key from the environment or a file: a command line is visible to every local user
MAX_CONNECTIONS = 512  # beyond this uvicorn answers 503: half the usual 1024 open files (ulimit -n), so accepting
# never fails with EMFILE
KEEP_ALIVE_S = 5  # an idle keep-alive connection closes after this (uvicorn's default, stated here)
MAX_HEAD_BYTES = 16 * 1024  # a request head h11 buffers before refusing it (uvicorn's default, stated here)


class Top(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    class_: str = Field(alias="class")
    prob: float


class FilePrediction(BaseModel):
    file: str
    top: list[Top]
    answer: str | None = None  # with a reject rule: the top class, or "unknown" when `score` is under its threshold
    score: float | None = None  # with a reject rule: the calibrated top probability it compared
    heatmap: str | None = None  # explain=true: a data:image/png;base64 Grad-CAM overlay of the top class


class PredictOut(BaseModel):
    predictions: list[FilePrediction]
    model: str
    ms: float  # time in the server, from the request to the response
    explain_note: str | None = None  # explain=true of a model whose heatmaps do not show where it looked


class ModelOut(BaseModel):
    model: str
    task: str
    classes: list[str]
    imgsz: int
    channels: int
    resize: str
    backend: str
    info: dict[str, Any]  # params, temperature, tta, test accuracy and macro F1, the reject threshold fitted on val
    reject: dict[str, Any] | None = None  # the rule /predict answers "unknown" by (null: none; ?reject=false: off)


class HealthOut(BaseModel):
    status: str
    auth: bool  # whether /predict and /model want an X-API-Key header
    model: str | None = None  # the rest only without an api_key, or with the right X-API-Key header
    batches: int | None = None  # model calls so far
    images: int | None = None  # images through the model so far
    explain: bool | None = None  # whether /predict?explain=true can answer


class ErrorOut(BaseModel):
    detail: str


@dataclass(frozen=True)
class _Limits:
    files: int
    pixels: int  # per image
    image_bytes: int  # decoded, per image
    request_pixels: int
    spool: int  # multipart parts up to this many bytes stay in memory


def create_app(predictor: Predictor, *, max_batch: int = 64, max_wait_ms: float = 5, api_key: str | None = None,
               max_body_mb: float = MAX_BODY_MB, max_files: int = MAX_FILES, max_pixels: int = MAX_PIXELS,
               max_image_mb: float = MAX_IMAGE_MB, max_request_pixels: int = MAX_REQUEST_PIXELS,
               body_timeout: float = REQUEST_TIMEOUT_S, decode_slots: int = DECODE_SLOTS,
               allowed_hosts: Iterable[str] | None = None, topk: int = 5, reject: dict[str, Any] | None = None,
               max_explain: int = MAX_EXPLAIN) -> FastAPI:
    """A FastAPI app serving `predictor`: POST /predict, POST /embed, GET /model, GET /health, GET / (a page).

    max_batch: images per model call, across concurrent requests (1: unbatched); max_wait_ms: how long the
    first request of a batch waits for company; max_body_mb: request body limit (MB, 1e6 bytes); max_files:
    files per request; max_pixels: width x height per image; max_image_mb: decoded MB per image;
    max_request_pixels: width x height summed over a request; body_timeout: seconds to send the body;
    decode_slots: decode threads per lane; allowed_hosts: the Host names answered ("*": any; None: no check,
    for an app behind a proxy that checks, and test clients; `serve` passes the loopback names); topk: classes
    per file unless ?topk= says; reject: the rule of `pipeline.predict.reject_rule` (None: no "unknown" answers);
    max_explain: files per explain=true request. The defaults and their reasons are the module's constants."""
    if predictor.task == "regress":
        raise CnnfitError("serve answers with top-k classes and this run is a regression; "
                          "use cnnfit predict for its values")
    numbers = dict(topk=topk, max_files=max_files, max_body_mb=max_body_mb, max_pixels=max_pixels,
                   max_image_mb=max_image_mb, max_request_pixels=max_request_pixels, body_timeout=body_timeout,
                   decode_slots=decode_slots, max_explain=max_explain)
    if min(numbers.values()) <= 0:
        raise CnnfitError(", ".join(f"{k}={v}" for k, v in numbers.items()) + " must all be positive")
    name = str(predictor.info.get("model") or predictor.source)
    max_body = int(max_body_mb * 1e6)  # bytes
    limits = _Limits(max_files, max_pixels, int(max_image_mb * 1e6), max_request_pixels, max_body + 1)
    batcher = MicroBatcher(predictor.predict, max_batch=max_batch, max_wait_ms=max_wait_ms)
    lanes = _Lanes(decode_slots)
    insight = Insight(predictor, reject, max_explain)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await batcher.close()

    about = f"{name} ({len(predictor.classes)} classes)" if api_key is None else "a model its key holders may ask"
    app = FastAPI(title="cnnfit", version="0.1.0", lifespan=lifespan,
                  description=f"Image classification with {about}. " + __doc__.split("\n\n")[2])
    app.state.batcher, app.state.predictor, app.state.insight = batcher, predictor, insight
    app.add_middleware(_BodyLimits, max_bytes=max_body, timeout=body_timeout)
    if allowed_hosts is not None:
        app.add_middleware(_HostCheck, allowed=allowed_hosts)  # added last: the outermost check

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # one error shape for every 4xx: a sentence, not pydantic's list of dicts
        msg = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return JSONResponse({"detail": msg}, status_code=422)

    _add_predict(app, predictor, batcher, limits, lanes, api_key, topk, insight)
    _add_info(app, predictor, batcher, name, api_key, topk, insight)

    async def upload(request: Request) -> tuple[list[str], np.ndarray]:
        files = await _read_files(request, max_files=limits.files, spool=limits.spool)
        return [f for f, _ in files], await _decode(files, predictor, limits, lanes)

    auth = [Depends(_key_checker(api_key))] if api_key is not None else []
    insight.add_embed(app, upload, name=name, dependencies=auth, openapi_extra=_upload_schema(limits.files),
                      responses=_errors(api_key, (401, 408, 413, 415, 422)))
    return app


def _errors(api_key: str | None, codes: Iterable[int]) -> dict[int | str, dict[str, Any]]:
    why = {401: "X-API-Key missing or wrong", 408: "the body did not arrive in time",
           413: "body, file count (explain=true: max_explain), an image's pixels or decoded size, or the request's "
                "pixels over the limit",
           415: "not multipart/form-data",
           422: "a file that is not a decodable image, a bad parameter, or one the server cannot honour"}
    return {code: {"model": ErrorOut, "description": why[code]} for code in codes if code != 401 or api_key}


def _upload_schema(max_files: int) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": [FIELD], "properties": {FIELD: {
            "type": "array", "minItems": 1, "maxItems": max_files,
            "items": {"type": "string", "format": "binary"}, "description": "image files (PNG, JPEG, ...)"}}}}}}}


def _add_predict(app: FastAPI, predictor: Predictor, batcher: MicroBatcher, limits: _Limits, lanes: _Lanes,
                 api_key: str | None, topk: int, insight: Insight) -> None:
    k_max = len(predictor.classes)
    name = str(predictor.info.get("model") or predictor.source)
    auth = [Depends(_key_checker(api_key))] if api_key is not None else []
    side = heatmap_side(predictor.imgsz)

    @app.post("/predict", response_model=PredictOut, responses=_errors(api_key, (401, 408, 413, 415, 422)),
              dependencies=auth, openapi_extra=_upload_schema(limits.files), response_model_exclude_none=True,
              summary="Top-k classes of each uploaded image")
    async def predict(request: Request, topk: int = Query(min(topk, k_max), ge=1, le=k_max),
                      explain: bool = Query(False, description=f"a {side}x{side} Grad-CAM PNG per file, at most "
                                                               f"{insight.max_explain} files (torch servers)"),
                      reject: bool | None = Query(None, description="false: no \"unknown\" answers; true: insist "
                                                                   "on them (422 without a threshold)")) -> dict:
        t0 = time.perf_counter()
        rule = insight.rule_for(reject)
        insight.check_explain(explain)  # an .onnx server refuses before reading the body
        files = await _read_files(request, max_files=limits.files, spool=limits.spool)
        insight.check_explain(explain, len(files))
        images = await _decode(files, predictor, limits, lanes, batcher.expect)
        probs = await batcher.submit(images)  # (n, K)
        order = np.argsort(-probs, axis=1, kind="stable")[:, :topk]  # (n, topk)
        preds = [{"file": f, "top": [{"class": predictor.classes[k], "prob": float(p[k])} for k in ks]}
                 for (f, _), p, ks in zip(files, probs, order)]
        extra = await insight.annotate(preds, images, probs, rule=rule, explain=explain)
        return {"predictions": preds, "model": name, **extra, "ms": round((time.perf_counter() - t0) * 1000, 2)}


def _add_info(app: FastAPI, predictor: Predictor, batcher: MicroBatcher, name: str, api_key: str | None,
              topk: int, insight: Insight) -> None:
    auth = [Depends(_key_checker(api_key))] if api_key is not None else []

    @app.get("/model", response_model=ModelOut, responses=_errors(api_key, (401,)) if api_key else None,
             dependencies=auth, summary="What the model expects and how it scored")
    async def model() -> dict:
        return {"model": name, "task": predictor.task, "classes": list(predictor.classes), "imgsz": predictor.imgsz,
                "channels": predictor.channels, "resize": predictor.resize, "backend": predictor.backend,
                "info": jsonable_encoder({**predictor.info, "reject": public_rule(predictor.info.get("reject"))}),
                "reject": public_rule(insight.rule)}

    @app.get("/health", response_model=HealthOut, response_model_exclude_none=True,
             summary="Liveness; the model and batching counters too for callers with the key, if there is one")
    async def health(request: Request) -> dict:
        if api_key is not None and not _key_matches(request.headers.get("x-api-key"), api_key):
            return {"status": "ok", "auth": True}  # open for load balancers, and it tells nothing else
        return {"status": "ok", "auth": api_key is not None, "model": name, "batches": batcher.batches,
                "images": batcher.images, "explain": insight.cannot_explain is None}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE.replace("__TOPK__", str(min(topk, len(predictor.classes)))),
                            headers={"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff"})


def serve(path: str, *, host: str = "127.0.0.1", port: int = 8000, device: str = "cpu", tta: str | None = None,
          log_level: str = "info", api_key: str | None = None, api_key_file: str | None = None,
          allowed_hosts: str | Iterable[str] | None = None, timeout: float = REQUEST_TIMEOUT_S,
          trust_code: bool = False, reject: bool = False, reject_precision: float | None = None,
          reject_coverage: float | None = None, **options: Any) -> None:
    """Load a run directory or an exported .onnx and serve it until Ctrl-C; `options` go to `create_app`.

    The key: `api_key`, else the first line of `api_key_file`, else $CNNFIT_API_KEY; a host beyond loopback
    needs one. allowed_hosts: Host names to answer besides the loopback ones (comma-separated, "*": any).
    timeout: seconds a client has to send a request's head, and again its body. trust_code: see load_predictor.
    reject (or a reject_precision or reject_coverage of its own): answer "unknown" under the threshold fitted on
    val, as cnnfit predict does (see `reject_rule`); by the calibrated top probability, which the batcher gives."""
    import uvicorn

    from cnnfit.pipeline.predict import reject_rule
    from cnnfit.predictor import load_predictor

    key = _resolve_key(api_key, api_key_file)
    if key is None and not _is_loopback(host):
        raise CnnfitError(f"host={host} would serve beyond this machine without a key; set {API_KEY_ENV} or "
                          f"api_key_file=FILE (a file only you can read), or keep host=127.0.0.1")
    names = [*LOOPBACK_HOSTS, *(allowed_hosts.split(",") if isinstance(allowed_hosts, str) else allowed_hosts or ())]
    if host not in ("0.0.0.0", "::", ""):  # a named address: clients reach it by that name
        names.append(host)
    predictor = load_predictor(path, device=device, tta=tta, trust_code=trust_code)
    rule = reject_rule(predictor, reject=reject, precision=reject_precision, coverage=reject_coverage)
    app = create_app(predictor, api_key=key, allowed_hosts=[n.strip() for n in names if n.strip()],
                     body_timeout=timeout, reject=rule, **options)
    uvicorn.run(app, host=host, port=port, log_level=log_level, server_header=False, http=_protocol(timeout),
                limit_concurrency=MAX_CONNECTIONS, timeout_keep_alive=KEEP_ALIVE_S,
                h11_max_incomplete_event_size=MAX_HEAD_BYTES)


def _resolve_key(api_key: str | None, api_key_file: str | None) -> str | None:
    if api_key is not None and api_key_file is not None:
        raise CnnfitError("give api_key or api_key_file, not both")
    if api_key_file is not None:
        path = Path(api_key_file).expanduser()
        try:
            api_key = (path.read_text().splitlines() or [""])[0].strip()
            if path.stat().st_mode & 0o077:
                log.warning("%s is readable by other users; chmod 600 it", path)
        except (OSError, UnicodeDecodeError) as exc:
            raise CnnfitError(f"api_key_file={api_key_file} cannot be read ({exc}); name a text file holding "
                              f"the key on its first line") from None
        if not api_key:
            raise CnnfitError(f"api_key_file={api_key_file} is empty; write the key on its first line")
    return api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a name other than localhost: it may resolve to anything
        return False


def _hostname(host: str) -> str | None:
    """'LocalHost:8000' -> 'localhost', '[::1]:8000' -> '::1': the name a Host header carries, without its port."""
    try:
        return urlsplit("//" + host).hostname
    except ValueError:  # '[::1' and the like
        return None


def _protocol(head_timeout: float) -> type:
    """uvicorn's h11 protocol with a deadline for every request head: uvicorn alone waits forever for a client
    that opens a connection and sends nothing, or a header line now and then."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class Protocol(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:  # the head is in (the body has its own deadline)
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self._arm()  # the next request's head, on a kept-alive connection

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._head_timer = self.loop.call_later(head_timeout, self._expire)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _expire(self) -> None:
            log.debug("closed a connection whose request head did not arrive in %g s", head_timeout)
            self.transport.close()

    return Protocol


def _key_matches(key: str | None, want: str) -> bool:
    return key is not None and hmac.compare_digest(key.encode(), want.encode())  # constant time: no timing oracle


def _key_checker(api_key: str):
    header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the server's api_key")

    def check(key: str | None = Security(header)) -> None:
        if not _key_matches(key, api_key):
            raise HTTPException(401, "missing or wrong X-API-Key header", headers={"WWW-Authenticate": "X-API-Key"})
    return check


class _Lanes:
    """Two pools of `slots` decode threads, one for small images and one for large: concurrent decodes and their
    memory stay bounded, and a small image never waits behind a queue of large ones. Their idle threads live as
    long as the app, so an app can serve again after its lifespan ends (test clients do)."""

    def __init__(self, slots: int) -> None:
        self.small = ThreadPoolExecutor(slots, thread_name_prefix="cnnfit-decode-small")
        self.large = ThreadPoolExecutor(slots, thread_name_prefix="cnnfit-decode-large")


async def _read_files(request: Request, *, max_files: int, spool: int) -> list[tuple[str, bytes]]:
    """The `files` parts of a multipart body, as (filename, bytes), read in memory."""
    ctype = request.headers.get("content-type", "")
    if not ctype.lower().startswith("multipart/form-data"):
        raise HTTPException(415, f"send multipart/form-data with the images in field '{FIELD}' "
                                 f"(curl -F {FIELD}=@cat.jpg), not {ctype or 'a body without Content-Type'}")
    parser = MultiPartParser(request.headers, request.stream(), max_files=max_files, max_fields=max_files)
    parser.spool_max_size = spool  # above the body limit: no part ever rolls over to a temporary file
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        code = 413 if exc.message.startswith("Too many files") else 422
        raise HTTPException(code, f"multipart body: {exc.message}") from None
    except ClientDisconnect:
        raise HTTPException(400, "the client disconnected before sending the whole body") from None
    try:
        parts = form.getlist(FIELD)
        uploads = [p for p in parts if isinstance(p, UploadFile)]
        if not uploads or len(uploads) < len(parts):
            raise HTTPException(422, f"no image files: send each image as a file in field '{FIELD}' "
                                     f"(curl -F {FIELD}=@cat.jpg); got {len(parts)} '{FIELD}' parts, "
                                     f"{len(parts) - len(uploads)} of them without a filename")
        return [(u.filename or f"{FIELD}[{i}]", u.file.read()) for i, u in enumerate(uploads)]  # in memory
    finally:
        await form.close()


def _check_sizes(files: list[tuple[str, bytes]], limits: _Limits) -> list[Header]:
    """In a worker thread: every file's header, or an HTTPException naming the first file over a limit (413) or
    not an image (422). Only headers are read: a 30000x30000 PNG is refused before it allocates anything."""
    heads, total = [], 0
    for name, src in files:
        try:
            head = probe(src)
        except Exception as exc:
            raise _bad_file(name, exc) from None
        if head.width * head.height > limits.pixels:
            raise HTTPException(413, f"file '{name}': {_TOO_MANY_PIXELS} ({head.width}x{head.height}, "
                                     f"limit {limits.pixels:,})")
        if head.nbytes > limits.image_bytes:
            raise HTTPException(413, f"file '{name}': {head.width}x{head.height} {head.mode} decodes to "
                                     f"{head.nbytes / 1e6:.0f} MB, over the {limits.image_bytes / 1e6:g} MB limit; "
                                     f"send it smaller or with 8 bits a sample")
        total += head.width * head.height
        if total > limits.request_pixels:
            raise HTTPException(413, f"the images of this request pass {limits.request_pixels / 1e6:g} MP in all "
                                     f"at file '{name}'; send fewer or smaller images per request")
        heads.append(head)
    return heads


async def _decode(files: list[tuple[str, bytes]], predictor: Predictor, limits: _Limits, lanes: _Lanes,
                  expect: Callable[[], AbstractContextManager] = nullcontext) -> np.ndarray:
    """Every file's header checked (413 before any decoding), then every file decoded on its lane inside
    `expect()` (the batcher's: only requests with their whole body in make a batch wait) -> (n, C, H, W) uint8."""
    heads = await run_in_threadpool(_check_sizes, files, limits)
    lane = lanes.large if max(h.nbytes for h in heads) > SMALL_IMAGE_BYTES else lanes.small
    with expect():
        return await asyncio.get_running_loop().run_in_executor(lane, _decode_all, predictor, files)


def _decode_all(predictor: Predictor, files: list[tuple[str, bytes]]) -> np.ndarray:
    """In a worker thread: every file -> (n, C, H, W) uint8, or an HTTPException naming the first bad file."""
    out = []
    for name, src in files:
        try:
            out.append(predictor.decode(src))  # (C, H, W)
        except Exception as exc:
            raise _bad_file(name, exc) from None
    return np.stack(out)  # (n, C, H, W)


def _bad_file(name: str, exc: Exception) -> HTTPException:
    if isinstance(exc, DecodeError):
        return HTTPException(413 if str(exc).startswith(_TOO_MANY_PIXELS) else 422, f"file '{name}': {exc}")
    # Pillow raises many types on hostile bytes; a client's file never makes a 5xx
    return HTTPException(422, f"file '{name}': cannot be decoded ({type(exc).__name__}: {exc})")


class _BodyLimits:
    """ASGI middleware: 413 for a body over `max_bytes`, from its Content-Length before reading anything, or
    while counting the bytes as they arrive (chunked uploads, a lying Content-Length); 408, and the connection
    closed, for a body not in within `timeout` seconds of its request's head."""

    def __init__(self, app, *, max_bytes: int, timeout: float) -> None:
        self.app, self.max_bytes, self.timeout = app, max_bytes, timeout

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            response = JSONResponse({"detail": self._message(int(length))}, status_code=413,
                                    headers={"Connection": "close"})
            return await response(scope, receive, send)
        seen, done, deadline = 0, False, asyncio.get_running_loop().time() + self.timeout

        async def counted():
            nonlocal seen, done
            if done:  # after the body: waiting for a disconnect is no upload
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise HTTPException(408, f"the request body did not arrive within {self.timeout:g} s; send it "
                                         f"again on a faster connection", headers={"Connection": "close"}) from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                done = not message.get("more_body", False)
                if seen > self.max_bytes:
                    raise HTTPException(413, self._message(seen, at_least=True))
            return message

        await self.app(scope, counted, send)

    def _message(self, n: int, at_least: bool = False) -> str:
        return (f"request body of {'over ' if at_least else ''}{n / 1e6:.1f} MB is over the "
                f"{self.max_bytes / 1e6:g} MB limit; send fewer or smaller images per request")


class _HostCheck:
    """ASGI middleware: 400 for a Host header not in `allowed` (its name; any port), so a web page whose domain
    was rebound to this machine's address cannot reach the server from a visitor's browser."""

    def __init__(self, app, *, allowed: Iterable[str]) -> None:
        allowed = list(allowed)
        self.app, self.any = app, "*" in allowed
        self.allowed = {_hostname(h) for h in allowed if h != "*"} - {None}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] in ("http", "websocket") and not self.any:
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            if _hostname(host) not in self.allowed:
                detail = (f"this server does not answer to Host '{host}'; start it with allowed_hosts=NAME to "
                          f"serve NAME, or reach it as {sorted(self.allowed)[0]}")
                return await JSONResponse({"detail": detail}, status_code=400, headers={"Connection": "close"})(
                    scope, receive, send)
        await self.app(scope, receive, send)
