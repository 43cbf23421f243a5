"""What the imbalance remedies buy: one Fashion-MNIST class cut to 10% of its training images, then
trained three ways with everything else equal: no remedy, class_weight=balanced, sampler=balanced.
Prints the minority class's test recall and the macro F1 of each (the test split stays balanced).

    python benchmarks/bench_imbalance.py [--per-class 2000] [--epochs 4] [--cut Shirt] [--seeds 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np

import cnnfit
from cnnfit.data import resolve
from cnnfit.data.cache import load_imageset


def imbalanced_npz(per_class: int, cut: str, keep: float, folder: Path) -> tuple[str, str]:
    ds, _ = load_imageset(resolve("fashion-mnist"))
    rng = np.random.default_rng(0)
    minority = ds.classes.index(cut)
    train_idx = []
    for c in range(len(ds.classes)):
        members = np.flatnonzero((ds.origin == 0) & (ds.labels == c))
        n = int(per_class * keep) if c == minority else per_class
        train_idx.append(rng.choice(members, n, replace=False))
    train_idx = np.sort(np.concatenate(train_idx))
    test_idx = np.flatnonzero(ds.origin == 2)
    images = np.asarray(ds.images)
    path = folder / "imbalanced.npz"
    np.savez(path, x_train=images[train_idx], y_train=ds.labels[train_idx], x_test=images[test_idx],
             y_test=ds.labels[test_idx], classes=np.array(ds.classes))
    return str(path), cut


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--per-class", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--cut", default="Shirt")
    p.add_argument("--keep", type=float, default=0.1)
    p.add_argument("--seeds", type=int, default=1)
    args = p.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        data, cut = imbalanced_npz(args.per_class, args.cut, args.keep, Path(tmp))
        print(f"fashion-mnist, {args.per_class} training images per class, '{cut}' cut to {args.keep:.0%}; "
              f"simplecnn, {args.epochs} epochs, {args.seeds} seed(s)")
        for name, kw in (("none", {}), ("class_weight=balanced", {"class_weight": "balanced"}),
                         ("sampler=balanced", {"sampler": "balanced"})):
            recalls, f1s = [], []
            for seed in range(args.seeds):
                run = cnnfit.train(data=data, epochs=args.epochs, seed=seed, project=f"{tmp}/runs",
                                   **kw)
                recalls.append(run.metrics["per_class"][cut]["recall"])
                f1s.append(run.metrics["macro"]["f1"])
            results[name] = {"minority_recall": statistics.mean(recalls), "macro_f1": statistics.mean(f1s)}
            print(f"{name:>22}: {cut} recall {results[name]['minority_recall']:.3f}   "
                  f"macro F1 {results[name]['macro_f1']:.3f}", flush=True)
    base = results["none"]["minority_recall"]
    for name in ("class_weight=balanced", "sampler=balanced"):
        gain = 100 * (results[name]["minority_recall"] - base)
        print(f"{name}: minority recall {gain:+.1f} points over none (goal >= +10)")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
