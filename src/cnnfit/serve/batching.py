"""Micro-batching: concurrent requests' images go through the model together.

    batcher = MicroBatcher(predictor.predict, max_batch=64, max_wait_ms=5)
    probs = await batcher.submit(images)     # (n, C, H, W) uint8 -> (n, K), from inside any request handler

One collector task on the event loop takes the first waiting request, then whatever else queued while the
previous batch ran, then waits up to `max_wait_ms` for requests announced by `expect()` (bodies in, being
decoded: a client still uploading, perhaps never finishing, holds no batch), up to `max_batch` images; it
runs `predict` on the group in one inference thread, so the event loop never blocks and the model sees one
batch at a time. A lone request waits for nobody: at concurrency 1, batching costs no latency."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass
class _Job:
    images: np.ndarray  # (n, C, H, W) uint8
    future: asyncio.Future


class MicroBatcher:
    """Groups `submit` calls into batches of at most `max_batch` images; `batches` and `images` count the work.

    A request with more than `max_batch` images runs alone, in chunks of `max_batch`. `max_batch=1` is
    unbatched inference: one image per `predict` call."""

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], *, max_batch: int = 64,
                 max_wait_ms: float = 5.0) -> None:
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError(f"max_batch={max_batch} must be >= 1 and max_wait_ms={max_wait_ms} >= 0")
        self.predict, self.max_batch, self.max_wait = predict, max_batch, max_wait_ms / 1000  # seconds
        self.batches = 0  # predict calls
        self.images = 0  # images through predict
        self.coming = 0  # requests inside expect(): they will submit soon
        self._executor: ThreadPoolExecutor | None = None  # one thread: the model runs one batch at a time
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task | None = None  # the collector, on the loop that serves requests

    @contextmanager
    def expect(self) -> Iterator[None]:
        """Around the work just before `submit` (decoding a body already read): batches wait max_wait_ms for it."""
        self.coming += 1
        try:
            yield
        finally:
            self.coming -= 1

    async def submit(self, images: np.ndarray) -> np.ndarray:
        """(n, C, H, W) uint8 -> (n, K), the rows `predict(images)` would give."""
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            # started on first use, on the loop that serves requests (a test client may bring a new loop)
            self._queue = asyncio.Queue()
            self._executor = self._executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="cnnfit-infer")
            self._task = loop.create_task(self._collect())
        job = _Job(images, loop.create_future())
        self._queue.put_nowait(job)
        return await job.future

    async def close(self) -> None:
        if self._task is not None and self._task.get_loop() is asyncio.get_running_loop():
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        self._task = None
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    async def _collect(self) -> None:
        queue, loop = self._queue, asyncio.get_running_loop()
        pending: _Job | None = None  # a job that did not fit in the last batch; it opens the next one
        while True:
            jobs = [pending or await queue.get()]
            pending = None
            size, deadline = len(jobs[0].images), time.monotonic() + self.max_wait
            while size < self.max_batch:
                if queue.qsize():  # jobs that queued while the last batch ran are taken at once
                    job = queue.get_nowait()
                elif self.coming and (left := deadline - time.monotonic()) > 0:
                    try:
                        job = await asyncio.wait_for(queue.get(), left)
                    except asyncio.TimeoutError:
                        break
                else:
                    break
                if size + len(job.images) > self.max_batch:
                    pending = job
                    break
                jobs.append(job)
                size += len(job.images)
            jobs = [j for j in jobs if not j.future.done()]  # a client that went away is not computed for
            if not jobs:
                continue
            try:
                out = await loop.run_in_executor(self._executor, self._run, [j.images for j in jobs])
            except Exception as exc:  # the model failed: every request in the batch gets the error
                for j in jobs:
                    if not j.future.done():
                        j.future.set_exception(exc)
                continue
            start = 0
            for j in jobs:
                if not j.future.done():
                    j.future.set_result(out[start:start + len(j.images)])
                start += len(j.images)

    def _run(self, parts: list[np.ndarray]) -> np.ndarray:
        """In the inference thread: one predict call per `max_batch` images."""
        x = np.concatenate(parts) if len(parts) > 1 else parts[0]  # (N, C, H, W)
        outs = []
        for i in range(0, len(x), self.max_batch):
            outs.append(self.predict(x[i:i + self.max_batch]))
            self.batches += 1
            self.images += len(outs[-1])
        return np.concatenate(outs) if len(outs) > 1 else outs[0]  # (N, K)
