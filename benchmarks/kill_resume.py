"""Kill -9 a deterministic CPU run at random moments, resume it each time, and count how many finished runs
have final weights bit-identical to an uninterrupted run of the same recipe.

    python benchmarks/kill_resume.py [--trials 10] [--kills 1] [--model simplecnn] [--epochs 3]

Each trial starts the run, waits until training has begun (last.pt at step 0 exists), kills it with SIGKILL
after a random delay inside the reference run's training time (mid-epoch moments included), resumes with
`cnnfit train resume=RUN`, kills again if --kills > 1, then lets it finish and compares every tensor.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "last.pt", map_location="cpu", weights_only=True)["model_state"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--kills", type=int, default=1, help="kills per trial")
    p.add_argument("--model", default="simplecnn")
    p.add_argument("--data", default="digits")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    args = p.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        recipe = [f"data={args.data}", f"model={args.model}", f"epochs={args.epochs}", "deterministic=true",
                  "ckpt_every=7", f"project={tmp}"]
        train = [sys.executable, "-m", "cnnfit", "train", *recipe]
        t0 = time.perf_counter()
        subprocess.run([*train, "name=ref"], check=True, capture_output=True)
        ref = _weights(Path(tmp) / "ref")
        with open(Path(tmp) / "ref" / "history.csv") as f:
            span = sum(float(row["seconds"]) for row in csv.DictReader(f))
        print(f"reference run: {time.perf_counter() - t0:.1f} s, {span:.1f} s of it training")
        identical = 0
        for trial in range(args.trials):
            run_dir = Path(tmp) / f"cut{trial}"
            cmd = [*train, f"name=cut{trial}"]
            moments = []
            for _ in range(args.kills):
                proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                while not (run_dir / "last.pt").exists() and proc.poll() is None:
                    time.sleep(0.01)
                delay = rng.uniform(0.0, span)
                time.sleep(delay)
                if proc.poll() is None:
                    os.kill(proc.pid, signal.SIGKILL)
                    step = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=True)["train_state"]
                    moments.append(f"{delay:.2f} s (last.pt at epoch {step['next_epoch'] + 1}, step {step['step']})")
                proc.wait()
                cmd = [sys.executable, "-m", "cnnfit", "train", f"resume={run_dir}"]
            done = subprocess.run(cmd, capture_output=True, text=True)
            got = _weights(run_dir) if done.returncode == 0 else {}
            same = done.returncode == 0 and all(torch.equal(ref[k], got[k]) for k in ref)
            identical += same
            print(f"trial {trial + 1}: killed after {', '.join(moments) or 'nothing (run had finished)'}; "
                  f"resumed: {'bit-identical' if same else 'DIFFERENT'}", flush=True)
        print(f"{identical}/{args.trials} resumed runs bit-identical to the uninterrupted run")


if __name__ == "__main__":
    main()
