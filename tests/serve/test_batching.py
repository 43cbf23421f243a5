"""MicroBatcher with a stand-in model: concurrent requests share model calls, and each gets its own rows."""

import asyncio
import threading

import numpy as np
import pytest

from cnnfit.serve import MicroBatcher


class Model:
    """Row sums as 'probabilities'; records each call's batch size and thread."""

    def __init__(self):
        self.sizes, self.threads = [], set()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.sizes.append(len(x))
        self.threads.add(threading.get_ident())
        return x.reshape(len(x), -1).sum(1, keepdims=True).astype(np.float32) * [1.0, 2.0]  # (n, 2)


def images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 1, 4, 4), dtype=np.uint8)


async def _submit_all(batcher, requests):
    try:
        return await asyncio.gather(*(batcher.submit(x) for x in requests))
    finally:
        await batcher.close()


def test_concurrent_requests_share_batches_and_get_their_own_rows():
    model = Model()
    requests = [images(1 + i % 3, seed=i) for i in range(20)]  # 39 images
    out = asyncio.run(_submit_all(MicroBatcher(model, max_batch=16, max_wait_ms=50), requests))
    sizes, threads = model.sizes, model.threads
    assert sum(sizes) == 39 and max(sizes) <= 16
    assert len(sizes) <= 4, sizes  # 39 images at <= 16 a batch: 3 batches, 4 when a request does not fit
    assert threading.get_ident() not in threads  # the model never ran on the event loop's thread
    for x, y in zip(requests, out):
        np.testing.assert_array_equal(y, Model()(x))  # the rows an unbatched call gives


def test_max_batch_one_is_unbatched_and_large_requests_are_chunked():
    model = Model()
    asyncio.run(_submit_all(MicroBatcher(model, max_batch=1, max_wait_ms=0), [images(1, s) for s in range(5)]))
    assert model.sizes == [1] * 5
    model = Model()
    (out,) = asyncio.run(_submit_all(MicroBatcher(model, max_batch=4), [images(10, 0)]))
    assert model.sizes == [4, 4, 2] and out.shape == (10, 2)


def test_a_lone_request_does_not_wait_and_an_announced_one_is_waited_for():
    model = Model()

    async def run():
        batcher = MicroBatcher(model, max_batch=64, max_wait_ms=2000)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await batcher.submit(images(1, 0))  # nobody else is coming: runs at once, not after 2 s
        alone = loop.time() - t0

        async def late():
            with batcher.expect():  # e.g. still decoding its upload
                await asyncio.sleep(0.05)
            return await batcher.submit(images(1, 2))

        with batcher.expect():
            second = asyncio.ensure_future(late())
            await asyncio.sleep(0)
        await asyncio.gather(batcher.submit(images(1, 1)), second)
        await batcher.close()
        return alone

    assert asyncio.run(run()) < 1.0
    assert model.sizes == [1, 2]  # the second batch waited for the announced request


def test_a_model_error_reaches_every_request_in_the_batch():
    def broken(x):
        raise RuntimeError("out of memory")

    async def run():
        batcher = MicroBatcher(broken, max_batch=8, max_wait_ms=20)
        res = await asyncio.gather(*(batcher.submit(images(1, s)) for s in range(3)), return_exceptions=True)
        await batcher.close()
        return res

    assert all(isinstance(r, RuntimeError) for r in asyncio.run(run()))


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(Model(), max_batch=0)
