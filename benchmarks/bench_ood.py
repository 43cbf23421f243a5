"""Images of no known class: how well maximum probability and energy tell them apart, and what "unknown"
answers at reject.precision=0.99 cost in coverage. Two settings, each a model trained the usual way:

  far    train on Fashion-MNIST; the unknown images are MNIST's 10,000 test digits
  near   train on 9 Fashion-MNIST classes; the unknown images are the test split's tenth class (ankle boots)

For each: AUROC and FPR at 95% TPR (test images of the known classes against the unknown ones) for both
scores, at the temperature evaluate fits on val; then the threshold fitted on val for precision 0.99 and the
precision and coverage it gets on the test split.

    CNNFIT_DATA=... python benchmarks/bench_ood.py [--epochs 10] [--model simplecnn] [--project runs/bench]

Measured (2 CPU cores, simplecnn, 10 epochs, seed 0):

    setting  test acc  AUROC maxprob / energy  FPR@95TPR maxprob / energy  reject.precision=0.99 on test
    far      0.9286    0.7825 / 0.9461         0.7380 / 0.2176             precision 0.9894, coverage 0.792
    near     0.9293    0.6572 / 0.5376         0.9590 / 0.9900             precision 0.9892, coverage 0.789

Energy separates images of another kind (digits) far better; neither score tells a tenth kind of clothing from
the nine it resembles (ankle boots against sneakers and sandals), which only training on it would.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import cnnfit
from cnnfit.data.cache import open_dataset
from cnnfit.engine import load_checkpoint
from cnnfit.eval.reject import answered, fit_reject, ood_figures, scores
from cnnfit.predictor import pixels_module


def _logits(run_dir: Path, images: np.ndarray) -> np.ndarray:
    module = pixels_module(load_checkpoint(run_dir / "best.pt"))
    with torch.inference_mode():
        return np.concatenate([module.logits(torch.from_numpy(np.ascontiguousarray(images[i:i + 1024]))).numpy()
                               for i in range(0, len(images), 1024)])  # (N, K)


def _setting(name: str, data: str, unknown: np.ndarray, args: argparse.Namespace, shown: str = "") -> None:
    t0 = time.perf_counter()
    run = cnnfit.train(data=data, epochs=args.epochs, model=args.model, seed=0, project=args.project,
                       name=f"ood_{name}", **{"eval.report": False})
    cnnfit.evaluate(run.dir, calibrate=True)
    ckpt = load_checkpoint(run.dir / "best.pt")
    t = ckpt["calibration"]["temperature"]
    ds = open_dataset(data, imgsz=ckpt["imgsz"], channels=ckpt["channels"], resize=ckpt["resize"])[0]
    split = json.loads((run.dir / "split.json").read_text())
    val, test = (np.asarray(split[k], dtype=np.int64) for k in ("val", "test"))
    z_val, z_test, z_out = (_logits(run.dir, x) for x in (ds.images[val], ds.images[test], unknown))
    print(f"\n{name}: {shown or data}, {len(test)} known test images against {len(unknown)} unknown, "
          f"test accuracy {run.accuracy:.4f}, T={t:.3f} ({time.perf_counter() - t0:.0f} s)")
    print(f"  {'score':<8} {'AUROC':>7} {'FPR@95TPR':>10}")
    for kind in ("maxprob", "energy"):
        f = ood_figures(scores(z_test, t, kind), scores(z_out, t, kind))
        print(f"  {kind:<8} {f['auroc']:>7.4f} {f['fpr95']:>10.4f}")
    r = fit_reject(scores(z_val, t), z_val.argmax(1) == ds.labels[val], precision=0.99)
    keep = answered(scores(z_test, t), r["threshold"])
    right = z_test.argmax(1) == ds.labels[test]
    print(f"  reject.precision=0.99: threshold {r['threshold']:.4f} (val precision {r['val_precision']:.4f}, "
          f"coverage {r['val_coverage']:.3f}); test precision {right[keep].mean():.4f}, coverage {keep.mean():.3f}, "
          f"unknown images answered {answered(scores(z_out, t), r['threshold']).mean():.3f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--model", default="simplecnn")
    p.add_argument("--project", default="runs/bench")
    args = p.parse_args()
    mnist = open_dataset("mnist", imgsz=28, channels=1, resize="squash")[0]
    _setting("far", "fashion-mnist", mnist.images[mnist.origin == 2], args)
    fashion = open_dataset("fashion-mnist", imgsz=28, channels=1, resize="squash")[0]
    tenth = fashion.labels == 9
    with tempfile.TemporaryDirectory() as tmp:
        nine = Path(tmp) / "fashion9.npz"  # the nine known classes, with Fashion-MNIST's own train/test split
        keep, train = ~tenth, fashion.origin == 0
        np.savez(nine, x_train=fashion.images[keep & train][:, 0], y_train=fashion.labels[keep & train],
                 x_test=fashion.images[keep & ~train][:, 0], y_test=fashion.labels[keep & ~train],
                 classes=np.array(fashion.classes[:9]))
        _setting("near", str(nine), fashion.images[tenth & ~train], args, "fashion-mnist without ankle boots")


if __name__ == "__main__":
    main()
