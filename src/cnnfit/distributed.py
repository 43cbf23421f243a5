"""Data-parallel training on PyTorch's own engine: the process group torchrun describes, the few
collectives the training loop needs, and `devices=N`, which starts torchrun's agent on this machine.

Every rank runs the same recipe on the same ImageSet and split; `batch` is the global batch, so a
recipe gives the same steps and learning rates on any number of processes."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from cnnfit.errors import CnnfitError, TrainingStopped

RUN_FILE_ENV = "CNNFIT_RUN_FILE"  # where rank 0 names its run directory for the `devices=N` launcher
FIRST_DECODE_TIMEOUT_S = 24 * 3600  # how long ranks wait for rank 0 to decode and cache a dataset
_NO_BAD_STEP = 1 << 62  # "no non-finite loss yet", large so that MIN over ranks picks a real step


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


SINGLE = Dist()


def from_env() -> Dist:
    """The rank and world size torchrun (or SLURM through torchrun) put in the environment."""
    env = os.environ
    if "WORLD_SIZE" not in env:
        return SINGLE
    return Dist(int(env.get("RANK", 0)), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))


def rank_seed(seed: int, rank: int) -> int:
    """Rank 0 keeps the run seed (a one-process run is rank 0 of 1); others get independent streams from it."""
    if rank == 0:
        return seed
    return int(np.random.SeedSequence([seed, rank]).generate_state(1, dtype=np.uint64)[0] >> 1)


def per_rank_draws(model: torch.nn.Module, *, augment: bool, mixing: bool, sync_bn: bool) -> list[str]:
    """What makes a data-parallel run differ from one process even with deterministic=true: each rank
    draws its own dropout masks and augmentations and, without sync_bn, normalizes over its own share."""
    mods = list(model.modules())
    found = [("dropout masks", any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in mods)),
             ("batch-norm statistics", not sync_bn and any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                                                           for m in mods)),
             ("augmentations", augment), ("mixup/cutmix draws", mixing)]
    return [name for name, on in found if on]


def device_for(ctx: Dist, name: str) -> torch.device:
    """This rank's device: GPU number LOCAL_RANK under torchrun when CUDA is there (or asked for), else the CPU."""
    from cnnfit.device import pick_device

    if name in ("auto", "cuda") and torch.cuda.is_available():
        count = torch.cuda.device_count()
        if ctx.local_rank >= count:
            raise CnnfitError(f"{ctx.local_rank + 1}+ processes on this machine but only {count} GPUs; "
                              f"start at most {count} per machine (--nproc_per_node={count})")
        torch.cuda.set_device(ctx.local_rank)
        return torch.device("cuda", ctx.local_rank)
    if name == "auto":
        return torch.device("cpu")
    device = pick_device(name)
    if device.type == "mps":
        raise CnnfitError("distributed training runs on CUDA GPUs (NCCL) or CPUs (gloo), not MPS; use device=cpu")
    return device


@contextlib.contextmanager
def session(ctx: Dist, device: torch.device, timeout_s: float) -> Iterator[None]:
    """The process group for one run: NCCL on GPUs, gloo on CPUs. `timeout_s` bounds every collective, so a
    rank that vanishes ends the others' wait with an error instead of a hang."""
    if not ctx.active or dist.is_initialized():
        yield
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs = {"device_id": device} if backend == "nccl" else {}
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s), **kwargs)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):  # a failed peer can make teardown itself fail; the error before it counts
            dist.destroy_process_group()


def broadcast(obj: Any, ctx: Dist, group: Any = None) -> Any:
    """Rank 0's `obj` on every rank."""
    if not ctx.active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, group=group)
    return box[0]


def main_first(ctx: Dist, work: Any) -> Any:
    """Run `work()` on rank 0, then on the others: the first decode fills the cache the others then read.
    An error on rank 0 is raised on every rank with the same message, so no rank waits for a dead one."""
    if not ctx.active:
        return work()
    result = _rank0(ctx, work, share=False)
    return result if ctx.main else work()


def on_main(ctx: Dist, work: Any) -> Any:
    """Run `work()` on rank 0 only and return its (small, picklable) result on every rank: a folder made once,
    files read once. An error on rank 0 is raised on every rank with the same message."""
    return _rank0(ctx, work, share=True) if ctx.active else work()


def _rank0(ctx: Dist, work: Any, *, share: bool) -> Any:
    # the others may wait hours while rank 0 decodes a large dataset: a gloo group of its own with a long
    # deadline (a rank 0 that dies still ends the wait at once: its connections close)
    patient = dist.new_group(backend="gloo", timeout=timedelta(seconds=FIRST_DECODE_TIMEOUT_S))
    result = error = None
    if ctx.main:
        try:
            result = work()
        except CnnfitError as exc:
            error = str(exc)
    error, shared = broadcast((error, result if share else None), ctx, group=patient)
    dist.destroy_process_group(patient)
    if error is not None:
        raise CnnfitError(error)
    return result if ctx.main or not share else shared


def gather(ctx: Dist, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Each tensor concatenated over ranks in rank order (CPU tensors; ranks may hold different lengths)."""
    if not ctx.active:
        return tensors
    parts = gather_objects(ctx, [t.cpu() for t in tensors])
    pieces = [[p[i] for p in parts if p[i].numel()] for i in range(len(tensors))]
    return tuple(torch.cat(ps) if ps else t for ps, t in zip(pieces, tensors))


def gather_objects(ctx: Dist, obj: Any) -> list[Any]:
    if not ctx.active:
        return [obj]
    parts: list[Any] = [None] * ctx.world
    dist.all_gather_object(parts, obj)
    return parts


def sum_(ctx: Dist, *values: torch.Tensor) -> list[torch.Tensor]:
    """The values summed over ranks (float64 on their device: exact for counts up to 2**53)."""
    if not ctx.active:
        return list(values)
    packed = torch.stack([v.double() for v in values])
    dist.all_reduce(packed)
    return list(packed.unbind())


def agree(ctx: Dist, *, signal_seen: bool, stop: bool, bad_step: torch.Tensor) -> tuple[bool, bool, torch.Tensor]:
    """What every rank must decide together after a step: was any rank signalled, did any stop, and the
    first non-finite step on any rank. One small all-reduce: ranks that disagreed here would deadlock."""
    bad = torch.where(bad_step < 0, torch.full_like(bad_step, _NO_BAD_STEP), bad_step)
    flags = torch.stack([torch.tensor(int(signal_seen), device=bad.device), torch.tensor(int(stop), device=bad.device),
                         -bad])
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    first_bad = -flags[2]
    return bool(flags[0]), bool(flags[1]), torch.where(first_bad == _NO_BAD_STEP, -1, first_bad)


def lost_peer(exc: BaseException) -> bool:
    """Whether an exception is a collective that failed because another rank died or timed out."""
    if isinstance(exc, dist.DistError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(
        s in text for s in ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "Timed out",
                            "timed out", "NCCL", "Gloo", "gloo"))


def describe(exc: BaseException) -> str:
    """The first sentence of a collective's error, without the C++ source location in front."""
    text = re.sub(r"^\[[^\]]*\]\s*", "", str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    return text.split(". ")[0][:200]


def launch(nproc: int, args: list[str], command: str = "train") -> int:
    """`devices=N`: run `cnnfit COMMAND ARGS` (train or cv) under torchrun's agent with N processes on this
    machine. When a rank dies the agent stops the others at once; the message names the rank and how to resume."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    for name in ("torch.distributed.elastic", "torch.distributed.launcher"):  # its own failure log repeats ours
        logging.getLogger(name).setLevel(logging.CRITICAL)
    env_threads = "OMP_NUM_THREADS" not in os.environ
    if env_threads:  # N processes share the cores instead of each starting one thread per core
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    with tempfile.NamedTemporaryFile("r", prefix="cnnfit-run-", suffix=".txt") as run_file:
        os.environ[RUN_FILE_ENV] = run_file.name
        config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                              rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0,
                              monitor_interval=0.1)
        try:
            elastic_launch(config, entrypoint=sys.executable)("-m", "cnnfit", command, *args)
            return 0
        except ChildFailedError as exc:
            run_dir = Path(run_file.name).read_text().strip()
            if command == "cv" and run_dir:  # the fold's run directory; cv resumes from the folder of folds
                run_dir = str(Path(run_dir).parent)
            raise TrainingStopped(_failure_message(exc.failures, nproc, run_dir, args, command),
                                  code=_exit_code(exc.failures)) from None
        finally:
            os.environ.pop(RUN_FILE_ENV, None)
            if env_threads:
                os.environ.pop("OMP_NUM_THREADS", None)


def _exit_code(failures: dict) -> int:
    codes = {f.exitcode for f in failures.values()}
    return 2 if codes == {2} else 130 if codes == {130} else 1


def _failure_message(failures: dict, nproc: int, run_dir: str, args: list[str], command: str = "train") -> str:
    # the agent ends the survivors with SIGTERM, and a survivor that saw its peer go exits with 1: the cause is
    # the other one (a kill, a crash); with no such rank, the earliest failure
    term = -signal.SIGTERM
    rank, failure = min(failures.items(), key=lambda kv: (kv[1].exitcode == term, kv[1].exitcode == 1,
                                                          kv[1].timestamp, kv[0]))
    code = failure.exitcode
    how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
    if code == 2:
        return f"rank {rank} of {nproc} refused the input (its message is above)"
    again = f"cnnfit {command} resume={run_dir} devices={nproc}" if run_dir else f"cnnfit {command} {' '.join(args)}"
    return (f"rank {rank} of {nproc} ended the job ({how}); the other ranks were stopped; "
            + ("continue from its last.pt with: " if run_dir else "start again with: ") + again)


def write_run_dir(ctx: Dist, run_dir: Path) -> None:
    """Tell the `devices=N` launcher where the run is, for its resume hint."""
    path = os.environ.get(RUN_FILE_ENV)
    if ctx.main and path:
        with contextlib.suppress(OSError):
            Path(path).write_text(str(run_dir))
