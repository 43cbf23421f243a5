"""Why is TensorFlow's CPU training of the tutorials' CNN as fast as it is? The same convolution, forward and
backward, in PyTorch (NCHW and NHWC) and in TensorFlow, with oneDNN's verbose log naming every primitive each
framework runs: its kind, implementation, memory layout and milliseconds.

The layer is simplecnn's second convolution (64 images, 32 -> 64 channels, 3x3, 26 -> 24 px) at fp32; the loss
is sum(y^2), so no framework can prune the forward pass. Each framework runs in its own fresh process: PyTorch
in this interpreter's environment, TensorFlow in benchmarks/.venv-keras (bench_tta.py makes it) with
TF_ENABLE_ONEDNN_OPTS=1 so its oneDNN calls are logged. Median milliseconds over the timed steps.

    python benchmarks/bench_conv_kernels.py [--steps 40] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
KERAS_PYTHON = HERE / ".venv-keras" / "bin" / "python"

TORCH = """
import sys, time, torch, torch.nn.functional as F
layout, steps = sys.argv[1], int(sys.argv[2])
fmt = torch.channels_last if layout == "nhwc" else torch.contiguous_format
x = torch.randn(64, 32, 26, 26).contiguous(memory_format=fmt).requires_grad_()
w = torch.randn(64, 32, 3, 3).contiguous(memory_format=fmt).requires_grad_()
def step():
    y = F.conv2d(x, w)
    (y * y).sum().backward()
for _ in range(5):
    step()
print("MARK", flush=True)
times = []
for _ in range(steps):
    t = time.perf_counter(); step(); times.append(time.perf_counter() - t)
print("STEP_MS", sorted(times)[len(times) // 2] * 1000, flush=True)
"""

TENSORFLOW = """
import os, sys, time
import tensorflow as tf
steps = int(sys.argv[2])
x = tf.random.normal((64, 26, 26, 32)); w = tf.Variable(tf.random.normal((3, 3, 32, 64)))
@tf.function
def step():
    with tf.GradientTape() as tape:
        tape.watch(x); y = tf.nn.conv2d(x, w, 1, "VALID"); loss = tf.reduce_sum(y * y)
    return tape.gradient(loss, [x, w])
for _ in range(5):
    [g.numpy() for g in step()]
print("MARK", flush=True)
times = []
for _ in range(steps):
    t = time.perf_counter(); [g.numpy() for g in step()]; times.append(time.perf_counter() - t)
print("STEP_MS", sorted(times)[len(times) // 2] * 1000, flush=True)
"""


def run(python: str, code: str, layout: str, steps: int, threads: int | None) -> tuple[float, dict]:
    """(median step ms, {(kind, impl, layout): median ms}) of oneDNN's convolution primitives after warm-up."""
    env = {**os.environ, "ONEDNN_VERBOSE": "1", "TF_ENABLE_ONEDNN_OPTS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    out = subprocess.run([python, "-c", code, layout, str(steps)], env=env, capture_output=True, text=True,
                         check=True).stdout.splitlines()
    start = out.index("MARK")
    step_ms = next(float(line.split()[1]) for line in out if line.startswith("STEP_MS"))
    primitives: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for line in out[start:]:
        f = line.split(",")
        if line.startswith("onednn_verbose") and len(f) > 9 and f[3] == "exec" and f[5] == "convolution":
            src = f[8].split()[0].split(":")[4]  # "src:f32::blocked:acdb::f0" -> acdb (NHWC), abcd (NCHW), aBcd16b
            primitives[f[7], f[6], src].append(float(f[-1]))
    return step_ms, {k: statistics.median(v) for k, v in primitives.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    ways = [("PyTorch NCHW", sys.executable, TORCH, "nchw"), ("PyTorch NHWC", sys.executable, TORCH, "nhwc")]
    if KERAS_PYTHON.exists():
        ways.append(("TensorFlow", str(KERAS_PYTHON), TENSORFLOW, "nhwc"))
    else:
        print(f"no {KERAS_PYTHON}: run benchmarks/bench_tta.py --only keras once to make it; PyTorch only")
    table = Table(title="conv 3x3, 64x32x26x26 -> 64 channels, fp32, forward + backward; oneDNN primitives",
                  title_justify="left")
    for col in ("framework", "step ms", "primitive", "implementation", "src layout", "ms"):
        table.add_column(col, justify="right" if "ms" in col else "left", no_wrap=True)
    for name, python, code, layout in ways:
        step_ms, prims = run(python, code, layout, args.steps, args.threads)
        for i, ((kind, impl, src), ms) in enumerate(sorted(prims.items())):
            table.add_row(name if i == 0 else "", f"{step_ms:.1f}" if i == 0 else "", kind, impl, src, f"{ms:.2f}")
        if not prims:
            table.add_row(name, f"{step_ms:.1f}", "(no oneDNN convolution logged)", "", "", "")
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
