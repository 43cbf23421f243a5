"""Input-pipeline throughput (images/s), cnnfit against the per-sample way, measured side by side in one run:

  decode    a folder of photos decoded and resized to size x size RGB uint8.
            cnnfit:     map_images(lambda src: decode_image(src, size, 3, "squash"), paths, workers=W), the
                        call cnnfit's folder reader makes: a thread pool, JPEG draft (DCT-domain) downscale,
                        EXIF orientation applied.
            per-sample: a Dataset whose __getitem__ opens the file with Pillow, converts to RGB, resizes
                        (bilinear) and returns a uint8 tensor, through DataLoader(batch_size=64, num_workers=W).
                        Timed as the default DataLoader runs an epoch (worker processes started for every
                        pass) and, as a second figure, with persistent_workers=True (start-up left out).
  augment   float (N, 3, 32, 32) images in [0, 1], flip + shift + rotation/zoom + colour jitter + noise +
            erasing. cnnfit: augment.build(...) applied per batch of 256 with a torch.Generator (masks and
            batched kernels), on torch's threads (all cores) and on 1 thread. per-sample: a Python loop
            applying the same kinds of op to one image at a time (affine_grid/grid_sample on a 1-image
            batch), stacked per 256 as a DataLoader's collate would, on 1 thread as a DataLoader worker
            runs it. W such workers would at best run W times faster, so the 1-thread ratio (per core) is
            the conservative one.

Each figure is the best of --repeat passes, the ways interleaved so a busy machine slows all of them.
Photos: hymenoptera_data/train under the data root (CNNFIT_DATA), else ~600 generated JPEGs of random
sizes 200-1000 px (smooth colour fields, shapes, noise) in a temporary folder.

    python benchmarks/bench_data.py [--size 64] [--workers W] [--repeat 3] [--data FOLDER] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import math
import os
import platform
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from cnnfit.data import augment
from cnnfit.data.decode import DecodeError, decode_image, is_image_name, map_images
from cnnfit.data.sources import data_root

GENERATED = 600  # photos when the real folder is absent; --quick makes 96
DECODE_BATCH = 64  # per-sample DataLoader batch
AUG_IMAGES = 4096  # 32x32 RGB images per augmentation pass; --quick uses 512
AUG_BATCH = 256
# the augmentation both ways run; keywords build() does not accept (yet) are dropped on both sides
AUG = dict(hflip=True, shift=0.125, rotation=15, zoom=0.1, brightness=0.2, contrast=0.2, saturation=0.2,
           noise=0.02, erasing=0.25)
DECODE_GOAL, AUG_GOAL = 1.5, 5.0  # cnnfit / per-sample, on 2 cores


# ---------------------------------------------------------------- photos

def _generate_one(folder: Path, i: int) -> None:
    rng = np.random.default_rng((0, i))
    w, h = (int(v) for v in rng.integers(200, 1001, 2))
    img = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize((w, h), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 9))):
        (x0, x1), (y0, y1) = np.sort(rng.integers(0, w, 2)), np.sort(rng.integers(0, h, 2))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((int(x0), int(y0), int(x1), int(y1)), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    pixels = np.asarray(img, dtype=np.float32) + rng.normal(0, 10, (h, w, 3)).astype(np.float32)  # sensor-like grain
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"c{i % 2}" / f"{i:04d}.jpg", quality=90)


def photo_paths(args, tmp: Path) -> tuple[list[str], str]:
    """Image files of the folder to decode, and a line saying which folder that is."""
    folder = Path(args.data) if args.data else data_root() / "hymenoptera_data" / "train"
    if folder.is_dir():
        paths = sorted(str(p) for p in folder.rglob("*") if p.is_file() and is_image_name(p.name))
        if paths:
            return paths[:96] if args.quick else paths, f"{folder}"
    n = 96 if args.quick else GENERATED
    for c in ("c0", "c1"):
        (tmp / c).mkdir()
    with ThreadPoolExecutor(os.cpu_count()) as pool:  # Pillow's encoder releases the GIL
        list(pool.map(lambda i: _generate_one(tmp, i), range(n)))
    return sorted(str(p) for p in tmp.rglob("*.jpg")), f"{n} generated JPEGs, 200-1000 px ({folder} not found)"


# ---------------------------------------------------------------- decode, both ways

def decode_cnnfit(paths: list[str], size: int, workers: int) -> np.ndarray:
    out = map_images(lambda src: decode_image(src, size, 3, "squash"), paths, workers=workers)
    return np.stack([a for a in out if not isinstance(a, DecodeError)])  # (N, 3, size, size), as the reader does


class PerSampleFolder(torch.utils.data.Dataset):
    """The hand-written way: one file per __getitem__, Pillow, RGB, bilinear resize, uint8 tensor."""

    def __init__(self, paths: list[str], size: int) -> None:
        self.paths, self.size = paths, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        with Image.open(self.paths[i]) as img:
            img = img.convert("RGB").resize((self.size, self.size), Image.Resampling.BILINEAR)
        return torch.from_numpy(np.array(img)).permute(2, 0, 1)  # (3, size, size) uint8


def per_sample_loader(paths, size, workers, persistent=False) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(PerSampleFolder(paths, size), batch_size=DECODE_BATCH, num_workers=workers,
                                       persistent_workers=persistent)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def bench_decode(paths, size, workers, repeat) -> dict:
    for p in paths:  # page cache: no way pays the disk reads for the others
        Path(p).read_bytes()
    warm = per_sample_loader(paths, size, workers, persistent=True)
    torch.cat(list(warm))  # starts the kept workers; their start-up is out of the "warm" figure
    times = {"cnnfit": [], "per_sample": [], "per_sample_warm": []}
    for _ in range(repeat):
        t, ours = timed(lambda: decode_cnnfit(paths, size, workers))
        times["cnnfit"].append(t)
        t, theirs = timed(lambda: torch.cat(list(per_sample_loader(paths, size, workers))))
        times["per_sample"].append(t)
        times["per_sample_warm"].append(timed(lambda: torch.cat(list(warm)))[0])
    del warm
    n = len(paths)
    rate = {k: n / min(v) for k, v in times.items()}
    same = ours.shape == tuple(theirs.shape)
    diff = float(np.abs(ours.astype(np.float32) - theirs.numpy().astype(np.float32)).mean()) if same else math.nan
    return {"images": n, "decoded_cnnfit": len(ours), "img_per_s": rate,
            "ratio": rate["cnnfit"] / rate["per_sample"], "ratio_warm": rate["cnnfit"] / rate["per_sample_warm"],
            "mean_abs_pixel_diff": diff}


# ---------------------------------------------------------------- augmentation, both ways

def accepted(build) -> dict:
    """The AUG keywords this build() takes: it is being extended, and the benchmark must run either way."""
    params = inspect.signature(build).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(AUG)
    return {k: v for k, v in AUG.items() if k in params}


def _u(lo: float, hi: float) -> float:
    return float(torch.empty(()).uniform_(lo, hi))  # torchvision's transforms draw this way


def _gray(x: torch.Tensor) -> torch.Tensor:
    return (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None]  # (1, H, W)


def per_sample_augment(x: torch.Tensor, kw: dict) -> torch.Tensor:
    """One (3, H, W) image, one op after another, as per-sample transform pipelines are written."""
    c, h, w = x.shape
    if kw.get("hflip") and torch.rand(()) < 0.5:
        x = x.flip(-1)
    if kw.get("shift", 0) > 0:
        ph, pw = round(kw["shift"] * h), round(kw["shift"] * w)
        dy, dx = int(torch.randint(0, 2 * ph + 1, ())), int(torch.randint(0, 2 * pw + 1, ()))
        x = F.pad(x, (pw, pw, ph, ph))[:, dy:dy + h, dx:dx + w]
    rotation, zoom = kw.get("rotation", 0), kw.get("zoom", 0)
    if rotation > 0 or zoom > 0:
        a, s = math.radians(_u(-rotation, rotation)), _u(1 - zoom, 1 + zoom)
        theta = torch.tensor([[[math.cos(a) / s, -math.sin(a) / s, 0.0],
                               [math.sin(a) / s, math.cos(a) / s, 0.0]]])  # (1, 2, 3) output -> input
        grid = F.affine_grid(theta, [1, c, h, w], align_corners=False)  # (1, H, W, 2)
        x = F.grid_sample(x[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    for name, other in (("brightness", lambda x: torch.zeros_like(x)), ("contrast", lambda x: _gray(x).mean()),
                        ("saturation", _gray)):
        v = kw.get(name, 0)
        if v > 0:
            f = _u(max(0.0, 1 - v), 1 + v)
            x = (f * x + (1 - f) * other(x)).clamp(0, 1)
    if kw.get("noise", 0) > 0:
        x = (x + kw["noise"] * torch.randn_like(x)).clamp(0, 1)
    if kw.get("erasing", 0) > 0 and torch.rand(()) < kw["erasing"]:
        area, ratio = _u(0.02, 0.33) * h * w, math.exp(_u(math.log(0.3), math.log(3.3)))
        eh = min(h, max(1, round(math.sqrt(area * ratio))))
        ew = min(w, max(1, round(math.sqrt(area / ratio))))
        y0, x0 = int(torch.randint(0, h - eh + 1, ())), int(torch.randint(0, w - ew + 1, ()))
        x = x.clone()
        x[:, y0:y0 + eh, x0:x0 + ew] = torch.rand(c, eh, ew)
    return x


@contextlib.contextmanager
def num_threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def aug_cnnfit(x: torch.Tensor, aug, g: torch.Generator, threads: int) -> None:
    with num_threads(threads):
        for i in range(0, len(x), AUG_BATCH):
            aug(x[i:i + AUG_BATCH], g)


def aug_per_sample(x: torch.Tensor, kw: dict) -> None:
    # 1 thread, as DataLoader workers run: on 3x32x32 tensors more threads only add OpenMP hand-offs,
    # which on a shared 2-core machine made this loop ~50x slower (42 vs 2,270 img/s measured)
    with num_threads(1):
        for i in range(0, len(x), AUG_BATCH):
            torch.stack([per_sample_augment(img, kw) for img in x[i:i + AUG_BATCH]])  # the collate


def bench_augment(n: int, repeat: int) -> dict:
    kw = accepted(augment.build)
    aug = augment.build(**kw)
    x = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))  # (N, 3, 32, 32) in [0, 1]
    g = torch.Generator().manual_seed(0)
    threads = torch.get_num_threads()
    aug_cnnfit(x[:AUG_BATCH], aug, g, threads)  # warm-up: first-call kernel set-up favours neither way
    aug_per_sample(x[:64], kw)
    times = {"cnnfit": [], "cnnfit_1thread": [], "per_sample": []}
    for _ in range(repeat):
        times["cnnfit"].append(timed(lambda: aug_cnnfit(x, aug, g, threads))[0])
        times["cnnfit_1thread"].append(timed(lambda: aug_cnnfit(x, aug, g, 1))[0])
        times["per_sample"].append(timed(lambda: aug_per_sample(x, kw))[0])
    rate = {k: n / min(v) for k, v in times.items()}
    return {"images": n, "keywords": kw, "skipped": sorted(set(AUG) - set(kw)), "threads": threads,
            "img_per_s": rate, "ratio": rate["cnnfit"] / rate["per_sample"],
            "ratio_1thread": rate["cnnfit_1thread"] / rate["per_sample"]}


# ---------------------------------------------------------------- main

def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=64, help="decode output side in px")
    p.add_argument("--workers", type=int, default=os.cpu_count(), help="threads (cnnfit) = DataLoader workers")
    p.add_argument("--repeat", type=int, default=3, help="passes per way; the best counts")
    p.add_argument("--data", default=None, help="folder of photos (default: hymenoptera_data/train in the data root)")
    p.add_argument("--quick", action="store_true", help="smoke run: 96 photos, 512 augment images, 1 pass")
    args = p.parse_args()
    if args.workers < 1:
        p.error("--workers must be >= 1 (cnnfit's thread pool needs one)")
    repeat = 1 if args.quick else args.repeat
    load = os.getloadavg()[0]
    print(f"{os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), load average "
          f"{load:.2f} at start; best of {repeat}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        paths, source = photo_paths(args, Path(tmp))
        print(f"decode: {len(paths)} photos from {source}; -> {args.size}x{args.size} RGB, {args.workers} workers",
              flush=True)
        dec = bench_decode(paths, args.size, args.workers, repeat)
    r = dec["img_per_s"]
    print(f"  cnnfit map_images + decode_image   {r['cnnfit']:8.0f} img/s  ({dec['decoded_cnnfit']} decoded)")
    print(f"  per-sample Dataset + DataLoader    {r['per_sample']:8.0f} img/s  (workers started each pass)")
    print(f"  per-sample, persistent workers     {r['per_sample_warm']:8.0f} img/s  (start-up left out)")
    print(f"  cnnfit / per-sample = {dec['ratio']:.2f}x  (goal >= {DECODE_GOAL} on 2 cores); "
          f"against persistent workers {dec['ratio_warm']:.2f}x")
    print(f"  mean |cnnfit - per-sample| = {dec['mean_abs_pixel_diff']:.1f} / 255 per pixel "
          "(JPEG draft downscale and EXIF orientation differ from a plain resize)", flush=True)

    n = 512 if args.quick else AUG_IMAGES
    print(f"augment: {n} images 3x32x32, batch {AUG_BATCH}; build("
          + ", ".join(f"{k}={v}" for k, v in accepted(augment.build).items()) + ")", flush=True)
    aug = bench_augment(n, repeat)
    if aug["skipped"]:
        print(f"  build() does not take {', '.join(aug['skipped'])} yet: left out both ways")
    r = aug["img_per_s"]
    print(f"  cnnfit batched ({aug['threads']} threads)          {r['cnnfit']:8.0f} img/s")
    print(f"  cnnfit batched (1 thread)           {r['cnnfit_1thread']:8.0f} img/s")
    print(f"  per-sample Python loop (1 thread)   {r['per_sample']:8.0f} img/s")
    print(f"  cnnfit / per-sample = {aug['ratio']:.1f}x  (goal >= {AUG_GOAL}); per core, both on 1 thread "
          f"{aug['ratio_1thread']:.1f}x")
    end = os.getloadavg()[0]
    if max(load, end) > 0.5 * (os.cpu_count() or 1):
        print(f"note: load average {load:.2f} -> {end:.2f}: other processes shared the cores; ratios are "
              "fairer than the absolute figures")
        if r["cnnfit"] < r["cnnfit_1thread"] and "OMP_WAIT_POLICY" not in os.environ:
            # measured here at load ~4 on 2 cores: 2 threads 544 img/s spinning, 11,750 with PASSIVE
            print("note: more threads ran slower than one: OpenMP threads spin-wait for a descheduled peer; "
                  "OMP_WAIT_POLICY=PASSIVE shows what the threads give on a shared machine")
    print(json.dumps({"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
                      "cores": os.cpu_count(), "workers": args.workers, "size": args.size, "repeat": repeat,
                      "load_average": [round(load, 2), round(end, 2)], "photos": source,
                      "decode": dec, "augment": aug}))


if __name__ == "__main__":
    main()
