"""The HTTP server: upload images, get each one's top-k classes.

    app = create_app(load_predictor("runs/train3"), api_key="s3cret")
    curl -F files=@cat.jpg -F files=@dog.png -H 'X-API-Key: s3cret' http://127.0.0.1:8000/predict

Status codes, one rule each (every error body is {"detail": "<message>"}, naming the file where one is at fault):
    401  X-API-Key missing or wrong (only when the app has an api_key)
    413  too large: the body (Content-Length, or bytes counted while reading), more than max_files files,
         or an image over max_pixels (read from its header, before any pixel is decoded)
    415  the request is not multipart/form-data
    422  the request's content is unusable: malformed multipart, no `files` part, or a file that is empty,
         truncated, not an image (HTML, text...) or otherwise undecodable; or a bad query parameter
Any file that fails fails the whole request: a client never gets predictions for part of what it sent.

Request data never touches the disk: Starlette's multipart parser spools file parts over 1 MB to temporary
files, so it runs here with a spool size above the body limit, and the body limit stops any larger body first."""

from __future__ import annotations

import hmac
import time
from contextlib import asynccontextmanager
from typing import Any

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

from cnnfit.data.decode import DecodeError, probe
from cnnfit.errors import CnnfitError
from cnnfit.predictor import Predictor
from cnnfit.serve.batching import MicroBatcher
from cnnfit.serve.page import CSP, PAGE

FIELD = "files"  # the multipart field that carries the images
_TOO_MANY_PIXELS = "too many pixels"  # how cnnfit.data.decode starts its pixel-limit messages


class Top(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    class_: str = Field(alias="class")
    prob: float


class FilePrediction(BaseModel):
    file: str
    top: list[Top]


class PredictOut(BaseModel):
    predictions: list[FilePrediction]
    model: str
    ms: float  # time in the server, from the request to the response


class ModelOut(BaseModel):
    model: str
    task: str
    classes: list[str]
    imgsz: int
    channels: int
    resize: str
    backend: str
    info: dict[str, Any]  # params, temperature, tta, test accuracy and macro F1


class HealthOut(BaseModel):
    status: str
    model: str
    auth: bool  # whether /predict and /model want an X-API-Key header
    batches: int  # model calls so far
    images: int  # images through the model so far


class ErrorOut(BaseModel):
    detail: str


def create_app(predictor: Predictor, *, max_batch: int = 64, max_wait_ms: float = 5, api_key: str | None = None,
               max_body_mb: float = 20, max_files: int = 64, max_pixels: int = 40_000_000, topk: int = 5) -> FastAPI:
    """A FastAPI app serving `predictor`: POST /predict, GET /model, GET /health, GET / (an upload page).

    max_batch: images per model call, across concurrent requests (1: unbatched); max_wait_ms: how long the
    first request of a batch waits for company; max_body_mb: request body limit (MB, 1e6 bytes); max_files:
    files per request; max_pixels: width x height per image; topk: classes per file unless ?topk= says."""
    if predictor.task == "regress":
        raise CnnfitError("serve answers with top-k classes and this run is a regression; "
                          "use cnnfit predict for its values")
    if not 1 <= topk or max_files < 1 or max_body_mb <= 0 or max_pixels < 1:
        raise CnnfitError(f"topk={topk}, max_files={max_files}, max_body_mb={max_body_mb} and "
                          f"max_pixels={max_pixels} must all be positive")
    name = str(predictor.info.get("model") or predictor.source)
    max_body = int(max_body_mb * 1e6)  # bytes
    batcher = MicroBatcher(predictor.predict, max_batch=max_batch, max_wait_ms=max_wait_ms)
    k_max = len(predictor.classes)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await batcher.close()

    app = FastAPI(title="cnnfit", version="0.1.0", lifespan=lifespan,
                  description=f"Image classification with {name} ({k_max} classes). " + __doc__.split("\n\n")[2])
    app.state.batcher, app.state.predictor = batcher, predictor
    app.add_middleware(_BodyLimit, max_bytes=max_body)
    auth = [Depends(_key_checker(api_key))] if api_key is not None else []
    errors: dict[int | str, dict[str, Any]] = {code: {"model": ErrorOut, "description": why} for code, why in (
        (401, "X-API-Key missing or wrong"), (413, "body, file count or an image's pixels over the limit"),
        (415, "not multipart/form-data"), (422, "a file that is not a decodable image, or a bad parameter"))
        if code != 401 or api_key is not None}

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # one error shape for every 4xx: a sentence, not pydantic's list of dicts
        msg = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return JSONResponse({"detail": msg}, status_code=422)

    upload = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": [FIELD], "properties": {FIELD: {
            "type": "array", "minItems": 1, "maxItems": max_files,
            "items": {"type": "string", "format": "binary"}, "description": "image files (PNG, JPEG, ...)"}}}}}}}

    @app.post("/predict", response_model=PredictOut, responses=errors, dependencies=auth, openapi_extra=upload,
              summary="Top-k classes of each uploaded image")
    async def predict(request: Request, topk: int = Query(min(topk, k_max), ge=1, le=k_max)) -> dict:
        t0 = time.perf_counter()
        with batcher.expect():  # a batch forming now waits (up to max_wait_ms) for these images
            files = await _read_files(request, max_files=max_files, spool=max_body + 1)
            images = await run_in_threadpool(_decode_all, predictor, files, max_pixels)  # (n, C, H, W) uint8
        probs = await batcher.submit(images)  # (n, K)
        order = np.argsort(-probs, axis=1, kind="stable")[:, :topk]  # (n, topk)
        preds = [{"file": f, "top": [{"class": predictor.classes[k], "prob": float(p[k])} for k in ks]}
                 for (f, _), p, ks in zip(files, probs, order)]
        return {"predictions": preds, "model": name, "ms": round((time.perf_counter() - t0) * 1000, 2)}

    @app.get("/model", response_model=ModelOut, responses=errors if api_key else None, dependencies=auth,
             summary="What the model expects and how it scored")
    async def model() -> dict:
        return {"model": name, "task": predictor.task, "classes": list(predictor.classes), "imgsz": predictor.imgsz,
                "channels": predictor.channels, "resize": predictor.resize, "backend": predictor.backend,
                "info": jsonable_encoder(predictor.info)}

    @app.get("/health", response_model=HealthOut, summary="Liveness, and the batching counters")
    async def health() -> dict:
        return {"status": "ok", "model": name, "auth": api_key is not None, "batches": batcher.batches,
                "images": batcher.images}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE.replace("__TOPK__", str(min(topk, k_max))),
                            headers={"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff"})

    return app


def serve(path: str, *, host: str = "127.0.0.1", port: int = 8000, device: str = "cpu", tta: str | None = None,
          log_level: str = "info", **options: Any) -> None:
    """Load a run directory or an exported .onnx and serve it until Ctrl-C; `options` go to `create_app`."""
    import uvicorn

    from cnnfit.predictor import load_predictor

    app = create_app(load_predictor(path, device=device, tta=tta), **options)
    uvicorn.run(app, host=host, port=port, log_level=log_level, server_header=False)


def _key_checker(api_key: str):
    header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the server's api_key")
    want = api_key.encode()

    def check(key: str | None = Security(header)) -> None:
        if key is None or not hmac.compare_digest(key.encode(), want):  # constant time: no timing oracle
            raise HTTPException(401, "missing or wrong X-API-Key header", headers={"WWW-Authenticate": "X-API-Key"})
    return check


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


def _decode_all(predictor: Predictor, files: list[tuple[str, bytes]], max_pixels: int) -> np.ndarray:
    """In a worker thread: every file -> (n, C, H, W) uint8, or an HTTPException naming the first bad file."""
    out = []
    for name, src in files:
        try:
            head = probe(src)  # the header only: a 30000x30000 PNG is refused before it allocates anything
            if head.width * head.height > max_pixels:
                raise DecodeError(f"{_TOO_MANY_PIXELS} ({head.width}x{head.height}, limit {max_pixels:,})")
            out.append(predictor.decode(src))  # (C, H, W)
        except DecodeError as exc:
            code = 413 if str(exc).startswith(_TOO_MANY_PIXELS) else 422
            raise HTTPException(code, f"file '{name}': {exc}") from None
        except Exception as exc:  # Pillow raises many types on hostile bytes; a client's file never makes a 5xx
            raise HTTPException(422, f"file '{name}': cannot be decoded ({type(exc).__name__}: {exc})") from None
    return np.stack(out)  # (n, C, H, W)


class _BodyLimit:
    """ASGI middleware: 413 for a body over `max_bytes`, from its Content-Length before reading anything, or
    while counting the bytes as they arrive (chunked uploads, a lying Content-Length)."""

    def __init__(self, app, *, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            response = JSONResponse({"detail": self._message(int(length))}, status_code=413,
                                    headers={"Connection": "close"})
            return await response(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise HTTPException(413, self._message(seen, at_least=True))
            return message

        await self.app(scope, counted, send)

    def _message(self, n: int, at_least: bool = False) -> str:
        return (f"request body of {'over ' if at_least else ''}{n / 1e6:.1f} MB is over the "
                f"{self.max_bytes / 1e6:g} MB limit; send fewer or smaller images per request")
