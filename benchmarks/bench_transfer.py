"""Does transfer learning pay off on scarce data? Pretrain resnet18 on Fashion-MNIST, then train on 20 images per
class of MNIST twice with the same budget and recipe: from scratch, and from the pretrained weights (`init=`;
the head is replaced since the class names differ, and everything is fine-tuned). Test accuracy on the whole
MNIST test set, mean and std over seeds.

    python benchmarks/bench_transfer.py [--pretrain-epochs 3] [--pretrain-fraction 1.0] [--per-class 20]
                                        [--epochs 30] [--lr 3e-3] [--freeze-epochs 0] [--seeds 3]
                                        [--pretrained RUN]   # reuse a pretraining run

Measured (2 CPU cores): resnet18 pretrained on all of Fashion-MNIST for 3 epochs (test 0.9157; the run
bench_models.py --keep keeps), then 3 seeds: scratch 0.7524 +- 0.0098, pretrained 0.8130 +- 0.0026: +6.1 points.
With a quarter of Fashion-MNIST for 2 epochs the gain was +4.9.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import cnnfit


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet18")
    p.add_argument("--pretrain-epochs", type=int, default=3)
    p.add_argument("--pretrain-fraction", type=float, default=1.0)
    p.add_argument("--per-class", type=int, default=20)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3, help="peak AdamW LR, the same for both")
    p.add_argument("--freeze-epochs", type=int, default=0, help="head-only epochs before full fine-tuning")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--backbone-lr-mult", type=float, default=1.0)
    p.add_argument("--pretrained", help="a run directory to start from instead of pretraining again")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        if args.pretrained:
            pretrained = args.pretrained
        else:
            pre = cnnfit.train(data="fashion-mnist", model=args.model, epochs=args.pretrain_epochs, batch=128,
                               schedule="onecycle", data__fraction=args.pretrain_fraction, project=tmp,
                               name="pretrain")
            pretrained = str(pre.dir)
            print(f"pretrained {args.model} on {args.pretrain_fraction:g} of fashion-mnist for "
                  f"{args.pretrain_epochs} epochs: test acc {pre.accuracy:.4f} ({time.perf_counter() - t0:.0f} s)",
                  flush=True)
        common = dict(data="mnist", model=args.model, data__per_class=args.per_class, epochs=args.epochs,
                      batch=args.batch, lr=args.lr, project=tmp)
        scores: dict[str, list[float]] = {"scratch": [], "pretrained": []}
        for seed in range(args.seeds):
            scratch = cnnfit.train(seed=seed, name="scratch", **common)
            tuned = cnnfit.train(seed=seed, name="tuned", model__init=pretrained,
                                 finetune__freeze_epochs=args.freeze_epochs,
                                 finetune__backbone_lr_mult=args.backbone_lr_mult, **common)
            scores["scratch"].append(scratch.accuracy)
            scores["pretrained"].append(tuned.accuracy)
            print(f"seed {seed}: scratch {scratch.accuracy:.4f}  pretrained {tuned.accuracy:.4f}", flush=True)
    mean = {k: statistics.mean(v) for k, v in scores.items()}
    std = {k: statistics.stdev(v) if len(v) > 1 else 0.0 for k, v in scores.items()}
    print(f"\nMNIST, {args.per_class} training images per class, {args.epochs} epochs, {args.seeds} seeds")
    for k in scores:
        print(f"  {k:<10} {mean[k]:.4f} ± {std[k]:.4f}")
    print(f"  gain       {100 * (mean['pretrained'] - mean['scratch']):+.1f} points")


if __name__ == "__main__":
    main()
