"""Memory of `predict(format="csv")` as the folder grows: the same tiny run (simplecnn, 1 epoch on 400 images, 8 px
input) predicts folders of --sizes images (32x32 RGB PNGs of noisy gradients, plus --bad files that cannot be decoded:
truncated PNGs, text named .png, zero-byte .jpg), each size in a fresh child process that reports its own peak
resident memory (VmHWM) before and after the call. The rows stream to the CSV a batch (256 files) at a time, so the
peak should not grow with the number of images beyond the list of file paths predict holds (one Path per file, by
design); memory is "flat" when the rest of the growth is within --flat-mib. Each CSV is then read back: one row per
image plus one per bad file, the bad ones with their reason.

    python benchmarks/bench_predict_csv.py [--sizes 2000,20000] [--bad 6] [--side 32] [--imgsz 8] [--flat-mib 5]

Measured (2 CPU cores shared with other work, so the seconds are loose; two runs gave +10.6 and +10.9 MiB):

      images  bad  rows written  seconds  RSS before MiB  peak MiB  grew MiB  paths MiB
       2,000    6         2,006      3.0           448.8     501.5      52.7        0.7   verified
      20,000    6        20,006     25.5           449.0     512.4      63.4        7.2   verified
    peak at 20,000 / at 2,000: 1.022x (+10.9 MiB, of which 6.5 MiB is the longer list of file paths): flat

Resident memory sampled after each of the 79 batches at 20,000 stays within 502-503 MiB from the 2nd batch to the
last, and the peak is reached by the 5th: the ~4 MiB beyond the paths is listing the folder (13 MiB of Python
objects at its height), not rows. The previous predict, which kept every row and wrote the file at the end, measured
the same way: 501.6 and 514.7 MiB; its rows are ~0.55 KiB an image (Python heap at its height: 24.2 MiB at 20,000
against 13.3 streaming), hidden at this size under a batch's activations (~50 MiB), 55 MiB more at 100,000.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

import cnnfit


def _image(i: int, side: int) -> np.ndarray:
    """Image i: a horizontal (even i) or vertical (odd i) gradient with noise, (side, side, 3) uint8."""
    rng = np.random.default_rng(i)
    ramp = np.linspace(0, 255, side, dtype=np.float32)
    base = np.tile(ramp, (side, 1)) if i % 2 == 0 else np.tile(ramp[:, None], (1, side))
    img = np.stack([base, 255 - base, np.roll(base, int(rng.integers(side)), axis=i % 2)], -1)
    return np.clip(img + rng.normal(0, 20, img.shape), 0, 255).astype(np.uint8)


def make_images(folder: Path, count: int, side: int, classes: bool = False) -> list[Path]:
    """`count` PNGs in `folder` (in class folders h/ and v/ when `classes`), written on a thread pool."""
    paths = [folder / (("h", "v")[i % 2] if classes else "") / f"img{i:06d}.png" for i in range(count)]
    for parent in {p.parent for p in paths}:
        parent.mkdir(parents=True, exist_ok=True)

    def one(i: int) -> None:
        Image.fromarray(_image(i, side)).save(paths[i], compress_level=1)  # level 1: fast to write, as small

    with ThreadPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(one, range(count)))
    return paths


def make_bad(folder: Path, count: int, side: int) -> None:
    """`count` files with image names that no decoder reads, spread through the folder's sorted order."""
    png = io.BytesIO()
    Image.fromarray(_image(0, side)).save(png, format="PNG")
    kinds = [("png", png.getvalue()[: len(png.getvalue()) // 2]), ("png", b"a note, not a picture\n"), ("jpg", b"")]
    for k in range(count):
        ext, data = kinds[k % len(kinds)]
        (folder / f"img{k * 997:06d}_bad.{ext}").write_bytes(data)  # sorts beside image k * 997


def _peak_mib() -> float:
    """This process's peak resident memory. /proc's VmHWM, not ru_maxrss: a forked child's ru_maxrss starts at its
    parent's resident size (653 MiB after training here, against 448 MiB for the child's own imports)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


def child(run: str, folder: str, out: str) -> None:
    """In a fresh process: predict the folder to `out`; print the peak RSS before and after, the seconds, the
    counts and the size of the list of file paths predict holds (by design: one Path per file), as JSON."""
    from cnnfit.pipeline.predict import predict

    before = _peak_mib()  # torch and cnnfit imported
    t0 = time.perf_counter()
    result = predict(run, [folder], topk=3, out=out, device="cpu")
    seconds, peak = time.perf_counter() - t0, _peak_mib()
    tracemalloc.start()
    listed = sorted(f for f in Path(folder).rglob("*") if f.is_file())  # as predict lists a folder
    paths_mib = tracemalloc.get_traced_memory()[0] / 2**20
    tracemalloc.stop()
    del listed
    print(json.dumps({"before_mib": before, "peak_mib": peak, "seconds": seconds, "paths_mib": paths_mib,
                      "rows_written": result.rows_written, "skipped": result.skipped}))


def verify(out: Path, images: int, bad: int) -> str:
    """The CSV read back a row at a time: one row per image plus one per bad file, each bad one with its reason."""
    rows = good = 0
    with open(out, newline="") as f:
        for row in csv.DictReader(f):
            rows += 1
            good += row["status"] == "ok" and row["top1"] != ""
            if row["status"] != "ok" and (row["top1"] != "" or not row["status"]):
                return f"FAILED: {row['file']} has no reason or has classes"
    if (rows, good) != (images + bad, images):
        return f"FAILED: {rows:,} rows, {good:,} predicted; expected {images + bad:,} and {images:,}"
    return f"verified: {images:,} rows plus {bad} with a reason"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="2000,20000", help="comma-separated image counts, smallest first")
    p.add_argument("--bad", type=int, default=6, help="undecodable files added to each folder")
    p.add_argument("--side", type=int, default=32, help="side of the PNG files in pixels")
    p.add_argument("--imgsz", type=int, default=8, help="the run's input side: a batch's activations at 8 px "
                   "(~50 MiB) hide less of what predict keeps than at 32 (~175 MiB)")
    p.add_argument("--flat-mib", type=float, default=5.0, help="peak growth beyond the path list still called flat")
    p.add_argument("--glibc-default", action="store_true", help="leave glibc's mmap threshold as it is")
    p.add_argument("--child", nargs=3, metavar=("RUN", "FOLDER", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(*args.child)
        return
    sizes = sorted(int(s) for s in args.sizes.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_images(root / "train", 400, args.side, classes=True)
        run = cnnfit.train(data=str(root / "train"), model="simplecnn", imgsz=args.imgsz, epochs=1, seed=0,
                           device="cpu", project=str(root / "runs"), **{"eval.report": False})
        # glibc keeps freed buffers under its dynamic mmap threshold (up to 32 MiB) on a heap that fragments, so
        # the peak of the same code (a 32 px run) wandered 697-710 MiB at 2,000 images and 708-724 at 20,000 over
        # runs; a fixed 1 MiB threshold returns each batch's tensors to the system: the peak repeats to 0.1 MiB
        env = os.environ if args.glibc_default else {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(2**20)}
        t0 = time.perf_counter()
        every = make_images(root / "all", sizes[-1], args.side)
        print(f"generated {sizes[-1]:,} PNGs of {args.side}x{args.side} RGB in {time.perf_counter() - t0:.0f} s")
        results = []
        for n in sizes:
            folder = root / f"n{n}"
            folder.mkdir()
            for path in every[:n]:
                os.link(path, folder / path.name)  # the same files, no second copy on disk
            make_bad(folder, args.bad, args.side)
            out = root / f"n{n}.csv"
            proc = subprocess.run([sys.executable, __file__, "--child", str(run.dir), str(folder), str(out)],
                                  capture_output=True, text=True, env=env)
            if proc.returncode:
                sys.exit(f"predict failed for {n:,} images:\n{proc.stderr[-3000:]}")
            results.append({"images": n, **json.loads(proc.stdout.splitlines()[-1]),
                            "check": verify(out, n, args.bad)})
    print(f"{'images':>8} {'bad':>4} {'rows written':>13} {'seconds':>8} {'RSS before MiB':>15} {'peak MiB':>9} "
          f"{'grew MiB':>9} {'paths MiB':>10}")
    for r in results:
        print(f"{r['images']:>8,} {r['skipped']:>4} {r['rows_written']:>13,} {r['seconds']:>8.1f} "
              f"{r['before_mib']:>15.1f} {r['peak_mib']:>9.1f} {r['peak_mib'] - r['before_mib']:>9.1f} "
              f"{r['paths_mib']:>10.1f}   {r['check']}")
    small, large = results[0], results[-1]
    diff, paths = large["peak_mib"] - small["peak_mib"], large["paths_mib"] - small["paths_mib"]
    print(f"peak at {large['images']:,} / at {small['images']:,}: {large['peak_mib'] / small['peak_mib']:.3f}x "
          f"({diff:+.1f} MiB, of which {paths:.1f} MiB is the longer list of file paths): "
          f"{'flat' if diff - paths <= args.flat_mib else 'GROWS'}")


if __name__ == "__main__":
    main()
