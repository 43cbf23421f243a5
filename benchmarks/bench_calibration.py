"""Does temperature scaling make the probabilities honest? ECE and log loss on the Fashion-MNIST test split
before and after a temperature fitted on the val split, for a model trained the usual way.

    python benchmarks/bench_calibration.py [--model fastnet] [--epochs 10] [--run DIR]

--run scores an existing Fashion-MNIST run instead of training one (its best.pt gains the temperature).
Accuracy cannot change (one scalar divides every logit); what changes is how far confidence is from accuracy.
"""

from __future__ import annotations

import argparse
import time

import torch

import cnnfit


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="fastnet")
    p.add_argument("--epochs", type=int, default=10, help="long enough for the over-confidence of a fitted net")
    p.add_argument("--run", help="an existing Fashion-MNIST run directory to calibrate")
    p.add_argument("--project", default="runs/bench")
    args = p.parse_args()
    t0 = time.perf_counter()
    run_dir = args.run or cnnfit.train(data="fashion-mnist", model=args.model, epochs=args.epochs, batch=128,
                                       project=args.project, name=f"calibration_{args.model}").dir
    m = cnnfit.evaluate(run_dir, calibrate=True)
    cal = m["calibration"]
    print(f"{run_dir}: {m['model']}, test accuracy {m['accuracy']:.4f} on {m['num_images']} images, "
          f"{torch.get_num_threads()} threads, {time.perf_counter() - t0:.0f} s")
    print(f"temperature {cal['temperature']:.3f} fitted on {cal['fitted_on']}")
    print(f"ECE       {cal['ece_before']:.4f} -> {cal['ece_after']:.4f}  ({cal['ece_before'] / cal['ece_after']:.1f}x lower)")
    print(f"log loss  {cal['log_loss_before']:.4f} -> {cal['log_loss_after']:.4f}")


if __name__ == "__main__":
    main()
