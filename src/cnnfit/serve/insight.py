"""What the server tells beyond the top-k classes: "unknown" answers, Grad-CAM heatmaps, and embeddings.

    POST /predict              with a reject rule: each file gains "answer" (its top class or "unknown") and "score"
    POST /predict?explain=true each file gains "heatmap": a data:image/png;base64 overlay of where the model looked
    POST /embed                {"embeddings": (N, D) floats, "dim": D, "files": [...], "model": ..., "ms": ...}

Heatmaps and embeddings read the torch module (a run directory's best.pt); a server of an .onnx answers them with
a 422 that says so. Both run in one "insight" thread, one request at a time, apart from the batcher's."""

from __future__ import annotations

import asyncio
import base64
import copy
import importlib.util
import io
import math
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel

from cnnfit.errors import CnnfitError
from cnnfit.eval.explain import UNLOCALISED, gradcam, overlay
from cnnfit.eval.reject import answered
from cnnfit.eval.tta import TTA
from cnnfit.pipeline.embed import embed_images
from cnnfit.predictor import Pixels, Predictor

MAX_EXPLAIN = 16  # files per explain=true request: Grad-CAM is a forward and a backward pass per image, ~3x a
# prediction, and at 224 px a heatmap PNG is ~100 KB, so 16 make a ~2 MB answer
HEATMAP_MIN_PX = 128  # a heatmap's shortest side: an 8 px model's map is scaled 16x (nearest), so a browser shows it
UNKNOWN = "unknown"  # the answer under the reject threshold, as cnnfit predict writes it


class EmbedOut(BaseModel):
    embeddings: list[list[float]]  # (N, D), each row L2-normalised: a dot product of two rows is their cosine
    dim: int  # D, the width of the model's head input
    files: list[str]
    model: str
    ms: float  # time in the server, from the request to the response


def heatmap_side(imgsz: int) -> int:
    """The side of a heatmap PNG for a model of `imgsz` px: imgsz times a whole factor, at least HEATMAP_MIN_PX."""
    return imgsz * max(1, math.ceil(HEATMAP_MIN_PX / imgsz))


def public_rule(rule: dict[str, Any] | None) -> dict[str, Any] | None:
    """A reject rule as /model shows it: without the val scores a refit reads (~800 numbers for 269 val images),
    and an unreachable threshold (inf: nothing is answered) as null, which JSON can carry."""
    if not rule:
        return None
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in rule.items() if k != "val"}


def _needs_run(what: str, predictor: Predictor) -> str:
    return f"{what} need the run directory (best.pt): serve runs/NAME instead of {Path(predictor.source).name}"


def _cannot_explain(predictor: Predictor) -> str | None:
    if predictor.module is None:
        return _needs_run("explanations", predictor)
    if importlib.util.find_spec("captum") is None:  # an optional extra, imported by gradcam when it runs
        return "explanations need Captum on the server: pip install 'cnnfit[explain]'"
    return None


class Insight:
    """The reject rule, the explainer and the insight thread of one app. Grad-CAM hooks layers and takes gradients
    while the batcher's module runs under inference_mode in its own thread, so explanations use a deep copy of the
    module (without TTA: Grad-CAM reads one view), made on the first explain request: a server never asked to
    explain holds one copy of the weights. The copy is taken in the insight thread, where /embed's temporary hook
    on the shared module lives too, so it never copies that hook."""

    def __init__(self, predictor: Predictor, rule: dict[str, Any] | None, max_explain: int = MAX_EXPLAIN) -> None:
        if rule is not None and (predictor.task != "classify" or rule.get("score") != "maxprob"
                                 or not isinstance(rule.get("threshold"), (int, float))):
            raise CnnfitError("serve answers \"unknown\" for classifiers by their calibrated top probability: give "
                              "the rule of reject_rule(predictor, reject=True) (score maxprob), or none")
        self.predictor, self.rule, self.max_explain = predictor, rule, max_explain
        self.side = heatmap_side(predictor.imgsz)
        model = str(predictor.info.get("model"))
        self.note = (f"{model}'s heatmaps do not show where it looked (its global max pooling spreads them); "
                     "a simplecnn, resnet or efficientnet_lite0 run explains itself") if model in UNLOCALISED else None
        self.cannot_explain = _cannot_explain(predictor)  # None: it can
        self._module: Pixels | None = None  # the explainer's copy, made on first use
        self._lock = threading.Lock()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="cnnfit-insight")  # one request at a time

    def rule_for(self, reject: bool | None) -> dict[str, Any] | None:
        """The rule a request answers by: the app's, unless ?reject=false; ?reject=true without one is a 422."""
        if reject and self.rule is None:
            raise HTTPException(422, "reject=true: this server was started without reject=true, so it has no "
                                     "threshold to answer \"unknown\" by; start it with cnnfit serve RUN reject=true "
                                     "(reject.precision=0.99 or reject.coverage=0.9 for another target)")
        return None if reject is False else self.rule

    def check_explain(self, explain: bool, files: int | None = None) -> None:
        """With explain: 422 when this server cannot explain; 413 for over max_explain files (once counted)."""
        if not explain:
            return
        if self.cannot_explain:
            raise HTTPException(422, f"explain=true: {self.cannot_explain}")
        if files is not None and files > self.max_explain:
            raise HTTPException(413, f"explain=true takes at most {self.max_explain} files a request, got {files}; "
                                     f"send the rest in more requests, or without explain")

    async def annotate(self, preds: list[dict[str, Any]], images: np.ndarray, probs: np.ndarray, *,
                       rule: dict[str, Any] | None, explain: bool) -> dict[str, Any]:
        """Adds "answer" and "score" (with a rule) and "heatmap" (explain) to each file's prediction in `preds`;
        returns the response's own extra fields. images (n, C, H, W) uint8, probs (n, K) from the batcher."""
        top1 = probs.argmax(1)  # (n,) the class cnnfit predict names first (argmax and a stable sort agree on ties)
        if rule is not None:
            score = probs.max(1)  # (n,) the calibrated top probability: maxprob, the score the rule was fitted on
            for p, k, s, ok in zip(preds, top1, score, answered(score, rule["threshold"])):
                p.update(answer=self.predictor.classes[k] if ok else UNKNOWN, score=float(s))
        if not explain:
            return {}
        loop = asyncio.get_running_loop()
        maps = await loop.run_in_executor(self._thread, self._heatmaps, images, top1)
        for p, m in zip(preds, maps):
            p["heatmap"] = m
        return {"explain_note": self.note} if self.note else {}

    def _heatmaps(self, images: np.ndarray, top1: np.ndarray) -> list[str]:
        """In the insight thread: a data URI of a PNG per image, its Grad-CAM overlay for class top1 (n,)."""
        with self._lock:
            if self._module is None:
                self._module = _explainer_copy(self.predictor.module)
            try:
                heat = gradcam(self._module, images, target=top1)  # (n, H, W) in [0, 1]
            except CnnfitError as exc:  # a model without a map to read (an MLP): the caller is told why
                raise HTTPException(422, f"explain=true: {exc}") from None
        scale = self.side // self.predictor.imgsz
        return [_png_uri(overlay(image, h), scale) for image, h in zip(images, heat)]

    def add_embed(self, app: FastAPI, upload: Callable[[Request], Awaitable[tuple[list[str], np.ndarray]]], *,
                  name: str, dependencies: list, responses: dict, openapi_extra: dict) -> None:
        """POST /embed: `upload` reads, checks and decodes a request's files as /predict's are, 4xx and all."""
        predictor = self.predictor

        @app.post("/embed", response_model=EmbedOut, responses=responses, dependencies=dependencies,
                  openapi_extra=openapi_extra, summary="Each uploaded image's embedding: the model's head input")
        async def embed(request: Request) -> dict:
            t0 = time.perf_counter()
            if predictor.module is None:  # before reading a byte of the body
                raise HTTPException(422, _needs_run("embeddings", predictor))
            files, images = await upload(request)
            try:
                vectors = await asyncio.get_running_loop().run_in_executor(
                    self._thread, embed_images, predictor, images)  # (n, D)
            except CnnfitError as exc:  # a model without a `head` Linear has no embedding to give
                raise HTTPException(422, str(exc)) from None
            return {"embeddings": vectors.tolist(), "dim": vectors.shape[1], "files": files, "model": name,
                    "ms": round((time.perf_counter() - t0) * 1000, 2)}


def _explainer_copy(module: Pixels) -> Pixels:
    """The module's deep copy for Grad-CAM, TTA unwrapped: the same weights, calibration and normalisation."""
    twin = copy.deepcopy(module)
    if isinstance(twin.model, TTA):
        twin.model = twin.model.model  # Grad-CAM explains one view of each image, the image as it is
    return twin.eval()


def _png_uri(rgb: np.ndarray, scale: int) -> str:
    """(H, W, 3) uint8 -> a data:image/png;base64 URI of it scaled `scale` x by nearest neighbour (each model pixel
    a sharp block, as the model saw it)."""
    from PIL import Image

    big = rgb.repeat(scale, axis=0).repeat(scale, axis=1)  # (H*s, W*s, 3)
    buf = io.BytesIO()
    Image.fromarray(big).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


__all__ = ["EmbedOut", "HEATMAP_MIN_PX", "Insight", "MAX_EXPLAIN", "UNKNOWN", "heatmap_side", "public_rule"]
