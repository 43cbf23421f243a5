"""Training on a dataset larger than memory: a generated folder of PNGs whose decoded pixels are
`--factor` times the memory cap is decoded, cached and trained for one epoch by `cnnfit train` in
a child process held to `--cap-mb` (a cgroup memory limit where the machine allows one, else only
measured). Prints the child's peak resident memory against the cap.

    python benchmarks/bench_memory.py [--cap-mb 1536] [--factor 3] [--size 128] [--batch 32]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image


def make_folder(root: Path, count: int, size: int) -> None:
    """Two classes, cheap to encode: horizontal vs vertical gradients with noise stripes."""
    ramp = np.linspace(0, 255, size, dtype=np.float32)

    def one(i: int) -> None:
        rng = np.random.default_rng(i)
        cls = i % 2
        base = np.tile(ramp, (size, 1)) if cls == 0 else np.tile(ramp[:, None], (1, size))
        img = np.stack([base, np.roll(base, rng.integers(size), axis=cls), 255 - base], -1)
        y = rng.integers(size - 8)
        img[y: y + 8] = rng.integers(0, 255)  # a stripe: no two images alike
        path = root / f"class{cls}" / f"{i}.png"
        Image.fromarray(img.astype(np.uint8)).save(path, compress_level=1)

    for cls in (0, 1):
        (root / f"class{cls}").mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(one, range(count)))


def memory_cgroup(cap_bytes: int) -> Path | None:
    """A cgroup (v2 or v1) limited to cap_bytes, or None where this machine does not allow one."""
    for base, limit_file in ((Path("/sys/fs/cgroup"), "memory.max"),
                             (Path("/sys/fs/cgroup/memory"), "memory.limit_in_bytes")):
        group = base / f"cnnfit-bench-{os.getpid()}"
        try:
            group.mkdir()
            if not (group / "cgroup.procs").exists():  # a plain folder, not a cgroup
                group.rmdir()
                continue
            (group / limit_file).write_text(str(cap_bytes))
            return group
        except OSError:
            if group.exists():
                group.rmdir()
    return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cap-mb", type=int, default=1536)
    p.add_argument("--factor", type=float, default=3.0)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--model", default="lenet5")
    p.add_argument("--batch", type=int, default=32)
    args = p.parse_args()
    cap = args.cap_mb * 2**20
    count = int(np.ceil(args.factor * cap / (3 * args.size * args.size)))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        t0 = time.perf_counter()
        make_folder(folder, count, args.size)
        print(f"generated {count} PNGs of {args.size}x{args.size} RGB in {time.perf_counter() - t0:.0f} s: "
              f"{count * 3 * args.size ** 2 / 2**30:.2f} GiB decoded, {args.factor:g}x the {args.cap_mb} MiB cap")
        group = memory_cgroup(cap)
        procs = group / "cgroup.procs" if group else None
        env = {**os.environ, "CNNFIT_CACHE": str(Path(tmp) / "cache")}
        cmd = [sys.executable, "-m", "cnnfit", "train", f"data={folder}", f"imgsz={args.size}",
               f"model={args.model}", "epochs=1", f"batch={args.batch}", "data.stream=true", f"project={tmp}/runs"]
        t0 = time.perf_counter()
        child = subprocess.run(cmd, env=env, capture_output=True, text=True,
                               preexec_fn=(lambda: procs.write_text(str(os.getpid()))) if procs else None)
        seconds = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        if group:
            group.rmdir()
        tail = [line for line in child.stdout.splitlines() if "test accuracy" in line or "skipped" in line]
        print("\n".join(tail) or child.stdout[-2000:])
        if child.returncode:
            print(child.stderr[-3000:])
        killed = " (killed: out of memory)" if child.returncode == -9 else ""
        print(f"exit {child.returncode}{killed} after {seconds:.0f} s; peak RSS {peak / 2**20:.0f} MiB against the "
              f"{args.cap_mb} MiB cap ({'enforced by a cgroup' if group else 'measured only: no cgroup here'})")
        print(json.dumps({"images": count, "size": args.size, "dataset_gib": count * 3 * args.size**2 / 2**30,
                          "cap_mib": args.cap_mb, "peak_rss_mib": peak / 2**20, "exit": child.returncode,
                          "enforced": bool(group), "seconds": seconds}))


if __name__ == "__main__":
    main()
