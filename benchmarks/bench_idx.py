"""How fast cnnfit reads MNIST-format idx files, against the plainest possible reader, side by side in one run:

  cnnfit     read(resolve(NAME)): the file names matched, each header checked against the file's size before a
             byte is inflated (gzip bombs), labels mapped to classes, train and test concatenated with their split
  plain      benchmarks/idx_data.py: gzip.decompress + np.frombuffer of the four files, no checks
  cache      load_imageset into an empty cache (decode + write), then the cache hit (memory-mapped)

Each figure is the best of --repeat passes, the two readers interleaved.

    CNNFIT_DATA=... python benchmarks/bench_idx.py [--data fashion-mnist] [--repeat 5]

Measured on 2 CPU cores, Fashion-MNIST (70,000 images): cnnfit 0.238 s, plain 0.260 s (0.92x: the plain reader
copies each array once more); decode + cache 0.31 s; cache hit 0.004 s. Side by side with the reader before it
became a module of its own and learnt EMNIST's and QMNIST's files (two runs each, alternating): read 0.240 and
0.241 s before, 0.239 and 0.241 s after; decode + cache 0.26-0.38 s both; cache hit 0.004-0.005 s both.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from idx_data import load_split

from cnnfit.data.cache import load_imageset
from cnnfit.data.sources import read, resolve


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    n = len(read(resolve(args.data)))
    ours, plain = [], []
    for _ in range(args.repeat):  # interleaved: a busy machine slows both
        ours.append(_best(lambda: read(resolve(args.data)), 1))
        plain.append(_best(lambda: (load_split(args.data, "train"), load_split(args.data, "t10k")), 1))
    cold, hit = [], []
    for _ in range(args.repeat):
        os.environ["CNNFIT_CACHE"] = tempfile.mkdtemp(prefix="cnnfit-bench-")
        cold.append(_best(lambda: load_imageset(resolve(args.data)), 1))
        hit.append(_best(lambda: load_imageset(resolve(args.data)), 1))
    print(f"{args.data}: {n:,} images, best of {args.repeat}")
    print(f"  cnnfit read      {min(ours):.3f} s")
    print(f"  plain numpy      {min(plain):.3f} s   (cnnfit / plain: {min(ours) / min(plain):.2f}x)")
    print(f"  decode + cache   {min(cold):.3f} s")
    print(f"  cache hit        {min(hit):.4f} s")


if __name__ == "__main__":
    main()
