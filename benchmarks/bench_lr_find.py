"""Does `cnnfit lr-find` pick a good learning rate? Its suggestion against the best point of a log grid, each
grid point trained for a few epochs with the same recipe (model, batch, optimizer, schedule, seed).

    python benchmarks/bench_lr_find.py [--data fashion-mnist] [--model simplecnn] [--epochs 3]
                                       [--grid 1e-4,3e-4,1e-3,3e-3,1e-2] [--fraction 1.0]

Prints every grid point's validation and test accuracy, the best one, the suggestion, and their ratio.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import cnnfit
from cnnfit.pipeline import lr_find


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--model", default="simplecnn")
    p.add_argument("--optim", default="adamw")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--grid", default="1e-4,3e-4,1e-3,3e-3,1e-2")
    p.add_argument("--fraction", type=float, default=1.0)
    args = p.parse_args()
    recipe = dict(data=args.data, model=args.model, optim=args.optim, batch=args.batch, seed=0,
                  data__fraction=args.fraction)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        found = lr_find(project=tmp, **recipe)
        suggestion = found.metrics["lr"]
        print(f"lr-find ({time.perf_counter() - t0:.0f} s): {suggestion:.3g}; {found.metrics['rule']}", flush=True)
        results = []
        for lr in (float(v) for v in args.grid.split(",")):
            t0 = time.perf_counter()
            run = cnnfit.train(lr=lr, epochs=args.epochs, project=tmp, **recipe)
            val = max(h["val_acc"] for h in run.history)
            results.append((val, run.accuracy, lr))
            print(f"lr {lr:<8g} best val acc {val:.4f}  test acc {run.accuracy:.4f}  ({time.perf_counter() - t0:.0f} s)",
                  flush=True)
    best_val, best_test, best_lr = max(results)
    ratio = max(suggestion / best_lr, best_lr / suggestion)
    print(f"grid best (by val acc): lr {best_lr:g} (val {best_val:.4f}, test {best_test:.4f}); "
          f"lr-find {suggestion:.3g}: {ratio:.2f}x {'above' if suggestion > best_lr else 'below'} it "
          f"-> {'within' if ratio <= 3 else 'NOT within'} 3x")


if __name__ == "__main__":
    main()
