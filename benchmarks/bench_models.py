"""The model zoo on one recipe: parameters, forward FLOPs at 32 px, seconds per epoch and test accuracy after
a few epochs of Fashion-MNIST, every model trained with the same settings through `cnnfit.train`.

    python benchmarks/bench_models.py [--models simplecnn,resnet20] [--epochs 3] [--fraction 1.0]
                                      [--out benchmarks/results/models_fmnist.csv] [--keep runs/zoo]

Rows are appended to --out as each model finishes, and models already there are skipped, so a long table
can be filled over several sittings (delete the file to start over). Each run directory is kept as
KEEP/<model> (a Fashion-MNIST-trained model to fine-tune from, see bench_transfer.py --pretrained); a run
that was stopped part-way (Ctrl-C, a killed job) is resumed from its last.pt on the next call, so an hour
of resnet50 on two CPU cores is never lost.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import cnnfit
from cnnfit import models
from cnnfit.models.summary import count_flops, count_params
from results_csv import append_row, read_rows

FIELDS = ["model", "params", "mflops_32px", "seconds_per_epoch", "test_acc", "epochs", "fraction", "train_images",
          "batch", "recipe", "threads", "cpu_share", "when"]


def recipe(epochs: int, fraction: float) -> dict:
    # one recipe for all: AdamW at its default LR with one-cycle, batch 128, native 28 px, bf16 autocast where the
    # CPU has it; no augmentation, so the ranking reflects the architectures and not a tuned regime
    return dict(data="fashion-mnist", epochs=epochs, batch=128, optim="adamw", schedule="onecycle", seed=0,
                data__fraction=fraction)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(models.list_models()))
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--fraction", type=float, default=1.0, help="of the train and val splits; test stays whole")
    p.add_argument("--out", default="benchmarks/results/models_fmnist.csv")
    p.add_argument("--keep", default="runs/zoo", help="run directories go here, one per model")
    args = p.parse_args()
    out = Path(args.out)
    done = {(r["model"], int(r["epochs"]), float(r["fraction"])) for r in read_rows(out)}
    settings = recipe(args.epochs, args.fraction)
    print(f"recipe: {settings}; {torch.get_num_threads()} threads")
    for name in args.models.split(","):
        if (name, args.epochs, args.fraction) in done:
            print(f"{name}: already in {out}")
            continue
        m = models.create(name, num_classes=10, in_chans=1, imgsz=32)
        params, flops = count_params(models.create(name, num_classes=10, in_chans=1, imgsz=28)), count_flops(
            m, in_chans=1, imgsz=32)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        run_dir = Path(args.keep) / name
        if (run_dir / "last.pt").exists() and not (run_dir / "metrics.json").exists():
            print(f"{name}: resuming {run_dir}", flush=True)
            run = cnnfit.train(resume=str(run_dir))
        else:
            run = cnnfit.train(model=name, project=args.keep, name=name, **settings)
        train_images = len(json.loads((run.dir / "split.json").read_text())["train"])
        # CPU seconds per wall second per thread: near 1 when the run had the cores to itself; a much lower
        # value means something else ran alongside and the timing should be measured again (a resumed run's
        # epochs count only the time since the resume: bench_models_timing.py gives clean per-epoch times)
        cpu_share = (time.process_time() - cpu0) / (time.perf_counter() - wall0) / torch.get_num_threads()
        epochs = run.history
        row = {
            "model": name, "params": params, "mflops_32px": round(flops / 1e6, 1),
            "seconds_per_epoch": round(sum(e["seconds"] for e in epochs) / len(epochs), 1),
            "test_acc": round(run.accuracy, 4), "epochs": len(epochs), "fraction": args.fraction,
            "train_images": train_images, "batch": settings["batch"],
            "recipe": "adamw onecycle bf16-auto 28px", "threads": torch.get_num_threads(),
            "cpu_share": round(cpu_share, 2),
            "when": time.strftime("%Y-%m-%d"),
        }
        append_row(out, FIELDS, row)
        print(f"{name:>14}  {params:>12,} params  {row['mflops_32px']:>9} MFLOPs@32  "
              f"{row['seconds_per_epoch']:>7} s/epoch  test acc {row['test_acc']:.4f}", flush=True)


if __name__ == "__main__":
    main()
