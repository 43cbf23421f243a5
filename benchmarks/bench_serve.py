"""HTTP serving throughput: the exported model.onnx micro-batched (max_batch=64, onnxruntime) against the run
served unbatched (max_batch=1, one PyTorch eager call per image), with the run micro-batched in eager PyTorch in
between; each server in its own process on loopback, loaded by an async httpx client at several concurrencies.

    python benchmarks/bench_serve.py                        # trains a digits run into a temp dir first
    python benchmarks/bench_serve.py --run runs/train3 --seconds 10
    python benchmarks/bench_serve.py --hostile --seconds 30   # 200 clients, a fifth of them hostile

Every request carries one test image; the table gives requests/s, p50/p99 latency, errors, and the mean
images per model call the server reported. --hostile serves the run (micro-batched, eager) to 160 normal
clients alone, then to the same 160 with 20 clients posting 16-bit PNGs near the pixel limit and 20 that
stall mid-upload; it prints the normal clients' p99 in both phases and their ratio, every status code seen,
and the server's peak RSS (VmHWM), against the bars: p99 under 3x, RSS under 1.5 GB, no 5xx.

The load comes from Debian's `wrk` (C, one fixed image per request) when it is on PATH, else from an async
httpx client, which itself needs much of a small machine's CPU: with it the figures are lower bounds, and the
generator is named in the output."""

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


# --hostile: the mix, and the bars it must stay under
NORMAL_CLIENTS, DEEP_CLIENTS, STALL_CLIENTS = 160, 20, 20  # 200 in all, 10% deep and 10% stalling
DEEP_SIZE = (6600, 6000)  # width, height: 39.6 MP of 16-bit gray, just under serve's 40 MP pixel limit
MAX_P99_RATIO, MAX_RSS_GB = 3.0, 1.5


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


def deep_png() -> bytes:
    """A 16-bit grayscale PNG of DEEP_SIZE: a smooth ramp, so it compresses to a small upload."""
    from PIL import Image

    w, h = DEEP_SIZE
    ramp = (np.arange(w, dtype=np.uint32)[None] * 65535 // w).astype(np.uint16).repeat(h, 0)  # (H, W)
    buf = io.BytesIO()
    Image.fromarray(ramp).save(buf, "PNG")
    return buf.getvalue()


async def stall(url: str, deadline: float, statuses: dict) -> None:
    """Over and over: send a request head and a tenth of its body, then nothing, until the server hangs up."""
    host, port = url.removeprefix("http://").split(":")
    head = (f"POST /predict HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: 100000\r\n"
            f"Content-Type: multipart/form-data; boundary=x\r\n\r\n").encode()
    while time.perf_counter() < deadline:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(head + b"--x\r\nContent-Disposition: form-data; name=\"files\"; filename=\"s.png\"\r\n\r\n"
                     + b"\0" * 10_000)  # a tenth of the declared body, a valid start of the multipart
        try:
            line = await asyncio.wait_for(reader.readline(), deadline - time.perf_counter())
            code = line.split()[1].decode() if line.startswith(b"HTTP/") else "closed"
            statuses[f"stall {code}"] = statuses.get(f"stall {code}", 0) + 1
        except asyncio.TimeoutError:
            pass
        writer.close()


async def mix(url: str, images: list[bytes], deep: bytes | None, seconds: float) -> dict:
    """NORMAL_CLIENTS posting test images; with `deep`, DEEP_CLIENTS posting it and STALL_CLIENTS stalling too."""
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    clients = NORMAL_CLIENTS + (DEEP_CLIENTS if deep else 0)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        deadline = time.perf_counter() + seconds

        async def user(k: int, kind: str) -> None:
            i = k
            while time.perf_counter() < deadline:
                data = deep if kind == "deep" else images[i % len(images)]
                t0 = time.perf_counter()
                try:
                    r = await client.post("/predict?topk=1", files=[("files", (f"{i}.png", data, "image/png"))])
                    code = str(r.status_code)
                except httpx.HTTPError as exc:
                    code = type(exc).__name__
                if kind == "normal" and code == "200":
                    latencies.append(time.perf_counter() - t0)
                statuses[f"{kind} {code}"] = statuses.get(f"{kind} {code}", 0) + 1
                i += clients

        users = [user(k, "normal") for k in range(NORMAL_CLIENTS)]
        if deep:
            users += [user(NORMAL_CLIENTS + k, "deep") for k in range(DEEP_CLIENTS)]
            users += [stall(url, deadline, statuses) for _ in range(STALL_CLIENTS)]
        await asyncio.gather(*users)
    lat = np.array(latencies) * 1000  # ms
    return {"rps": len(lat) / seconds, "p50": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
            "p99": float(np.percentile(lat, 99)) if len(lat) else float("nan"), "statuses": statuses}


def peak_rss_gb(pid: int) -> float:
    """The process's peak resident memory (VmHWM, Linux), GB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) / 1024 ** 2


def hostile(run_dir: Path, seconds: float) -> None:
    """The --hostile mode: normal clients alone, then with deep and stalling ones; figures, ratio and bars."""
    images, deep = test_pngs(run_dir), deep_png()
    print(f"run {run_dir}, {seconds:g} s per phase, {os.cpu_count()} CPUs; deep image "
          f"{DEEP_SIZE[0]}x{DEEP_SIZE[1]} 16-bit, {len(deep) / 1e3:.0f} KB; load from httpx in this process")
    proc, url = start_server(run_dir, {"max_batch": 64, "max_wait_ms": 5})
    try:
        asyncio.run(load(url, images, 4, 1.0))  # warm-up: first calls allocate
        phases = {"normal only": asyncio.run(mix(url, images, None, seconds))}
        rss_alone = peak_rss_gb(proc.pid)
        phases["hostile mix"] = asyncio.run(mix(url, images, deep, seconds))
        rss = peak_rss_gb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)
    print(f"\n{'phase':<12} {'normal req/s':>12} {'p50 ms':>8} {'p99 ms':>8}  statuses")
    for name, r in phases.items():
        codes = ", ".join(f"{k}: {v}" for k, v in sorted(r["statuses"].items()))
        print(f"{name:<12} {r['rps']:>12.1f} {r['p50']:>8.1f} {r['p99']:>8.1f}  {codes}")
    ratio = phases["hostile mix"]["p99"] / phases["normal only"]["p99"]
    server_errors = sum(n for r in phases.values() for k, n in r["statuses"].items() if k.split()[1].startswith("5"))
    print(f"\nnormal p99, hostile / alone = {ratio:.2f}x (bar {MAX_P99_RATIO:g}x): "
          f"{'ok' if ratio < MAX_P99_RATIO else 'OVER'}")
    print(f"server peak RSS {rss:.2f} GB (after the normal phase {rss_alone:.2f} GB; bar {MAX_RSS_GB:g} GB): "
          f"{'ok' if rss < MAX_RSS_GB else 'OVER'}")
    print(f"5xx answers: {server_errors}: {'ok' if server_errors == 0 else 'OVER'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", help="a run directory (default: train a digits run into a temp dir); its model.onnx "
                    "is exported when missing")
    ap.add_argument("--seconds", type=float, default=5.0, help="load time per concurrency level")
    ap.add_argument("--concurrency", default="1,8,32", help="comma-separated concurrency levels")
    ap.add_argument("--client", choices=["auto", "wrk", "httpx"], default="auto", help="auto: wrk when on PATH")
    ap.add_argument("--hostile", action="store_true", help="normal clients alone, then with deep-image and stalling "
                    "ones: p99 ratio, peak RSS, status codes")
    args = ap.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    run_dir = digits_run(args.run)
    if args.hostile:
        return hostile(run_dir, args.seconds)
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
