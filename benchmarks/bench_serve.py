"""HTTP serving throughput: the exported model.onnx micro-batched (max_batch=64, onnxruntime) against the run
served unbatched (max_batch=1, one PyTorch eager call per image), with the run micro-batched in eager PyTorch in
between; each server in its own process on loopback, loaded by an async httpx client at several concurrencies.

    python benchmarks/bench_serve.py                        # trains a digits run into a temp dir first
    python benchmarks/bench_serve.py --run runs/train3 --seconds 10

Every request carries one test image; the table gives requests/s, p50/p99 latency, errors, and the mean
images per model call the server reported. The load comes from Debian's `wrk` (C, one fixed image per
request) when it is on PATH, else from an async httpx client, which itself needs much of a small machine's
CPU: with it the figures are lower bounds, and the generator is named in the output."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

# name -> (what is served: the run's exported ONNX or the run itself, server options)
CONFIGS = {"batched onnx": ("onnx", {"max_batch": 64, "max_wait_ms": 5}),
           "batched eager": ("run", {"max_batch": 64, "max_wait_ms": 5}),
           "unbatched eager": ("run", {"max_batch": 1, "max_wait_ms": 0})}


def digits_run(run: str | None) -> Path:
    if run:
        return Path(run)
    
    import cnnfit

    return cnnfit.train(data="digits", epochs=3, project=tempfile.mkdtemp(prefix="bench_serve_")).dir


def test_pngs(run_dir: Path, n: int = 64) -> list[bytes]:
    """n test images of the run's own data, as PNG bytes at the trained size."""
    from PIL import Image

    from cnnfit.config import Config
    from cnnfit.engine import load_checkpoint
    from cnnfit.pipeline.prepare import load_data

    ds = load_data(Config.model_validate(load_checkpoint(run_dir / "best.pt")["config"]))[0]
    out = []
    for i in json.loads((run_dir / "split.json").read_text())["test"][:n]:
        img = np.asarray(ds.images[i])  # (C, H, W)
        buf = io.BytesIO()
        Image.fromarray(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)).save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def onnx_of(run_dir: Path) -> Path:
    path = run_dir / "model.onnx"
    if not path.exists():
        from cnnfit.export import export

        export(run_dir, format="onnx")
    return path


def start_server(served: Path, options: dict) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = (f"from cnnfit.serve import serve; serve({str(served)!r}, port={port}, log_level='warning', "
            f"max_files=1, **{options!r})")
    proc = subprocess.Popen([sys.executable, "-c", code], env=os.environ.copy())
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the server did not start in 60 s")


async def load(url: str, images: list[bytes], concurrency: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        before = (await client.get("/health")).json()
        deadline = time.perf_counter() + seconds

        async def user(k: int) -> None:
            nonlocal errors
            i = k
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                try:
                    r = await client.post("/predict?topk=1", files=[("files", (f"{i}.png", images[i % len(images)],
                                                                                "image/png"))])
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - t0) if ok else None
                errors += not ok
                i += concurrency

        t0 = time.perf_counter()
        await asyncio.gather(*(user(k) for k in range(concurrency)))
        wall = time.perf_counter() - t0
        after = (await client.get("/health")).json()
    lat = np.array(latencies) * 1000  # ms
    calls = after["batches"] - before["batches"]
    return {"rps": len(lat) / wall, "p50": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
            "p99": float(np.percentile(lat, 99)) if len(lat) else float("nan"), "errors": errors,
            "per_call": (after["images"] - before["images"]) / max(calls, 1)}


_WRK_SCRIPT = """local f = io.open("{body}", "rb")
wrk.method = "POST"
wrk.body = f:read("*all")
f:close()
wrk.headers["Content-Type"] = "multipart/form-data; boundary={boundary}"
"""


def load_wrk(url: str, image: bytes, concurrency: int, seconds: float, folder: Path) -> dict:
    """wrk posting one multipart image per request; its own latency percentiles and error counts."""
    import re

    boundary = "cnnfitbench"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"x.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + image + f"\r\n--{boundary}--\r\n".encode()
    (folder / "body.bin").write_bytes(body)
    script = folder / "post.lua"
    script.write_text(_WRK_SCRIPT.format(body=folder / "body.bin", boundary=boundary))
    before = httpx.get(url + "/health").json()
    out = subprocess.run(["wrk", f"-t{min(2, concurrency)}", f"-c{concurrency}", f"-d{seconds:g}s", "--latency",
                          "-s", str(script), url + "/predict?topk=1"], capture_output=True, text=True, check=True).stdout
    after = httpx.get(url + "/health").json()

    def ms(label: str) -> float:
        m = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)\b", out)
        return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)] if m else float("nan")

    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    errors += sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    calls = after["batches"] - before["batches"]
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), "p50": ms("50"), "p99": ms("99"),
            "errors": errors, "per_call": (after["images"] - before["images"]) / max(calls, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", help="a run directory (default: train a digits run into a temp dir); its model.onnx "
                    "is exported when missing")
    ap.add_argument("--seconds", type=float, default=5.0, help="load time per concurrency level")
    ap.add_argument("--concurrency", default="1,8,32", help="comma-separated concurrency levels")
    ap.add_argument("--client", choices=["auto", "wrk", "httpx"], default="auto", help="auto: wrk when on PATH")
    args = ap.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    run_dir = digits_run(args.run)
    images = test_pngs(run_dir)
    import shutil

    client = ("wrk" if shutil.which("wrk") else "httpx") if args.client == "auto" else args.client
    folder = Path(tempfile.mkdtemp(prefix="bench_serve_wrk_"))
    print(f"run {run_dir}, {args.seconds:g} s per level, {os.cpu_count()} CPUs, load from {client}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    results: dict[tuple[str, int], dict] = {}
    onnx = onnx_of(run_dir)
    for name, (kind, options) in CONFIGS.items():
        proc, url = start_server(onnx if kind == "onnx" else run_dir, options)
        try:
            asyncio.run(load(url, images, 4, 1.0))  # warm-up: first calls allocate
            for c in levels:
                results[name, c] = (load_wrk(url, images[0], c, args.seconds, folder) if client == "wrk"
                                    else asyncio.run(load(url, images, c, args.seconds)))
        finally:
            proc.terminate()
            proc.wait(10)
    print(f"\n{'config':<16} {'conc':>4} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} {'img/call':>8}")
    for (name, c), r in results.items():
        print(f"{name:<16} {c:>4} {r['rps']:>8.1f} {r['p50']:>8.1f} {r['p99']:>8.1f} {r['errors']:>6} "
              f"{r['per_call']:>8.1f}")
    top = max(levels)
    base = results["unbatched eager", top]["rps"]
    print(f"\nthroughput at concurrency {top}: batched onnx / unbatched eager = "
          f"{results['batched onnx', top]['rps'] / base:.2f}x; batched eager / unbatched eager = "
          f"{results['batched eager', top]['rps'] / base:.2f}x")


if __name__ == "__main__":
    main()
