"""DeviceLoader: the uint8 dataset lives on the training device; each batch is gathered, converted,
augmented and normalized there with a handful of batched kernels. A dataset too large for memory
stays on disk and is streamed: rows read with pread by a background thread, a few batches ahead."""

from __future__ import annotations

import math
import os
import queue
import threading
from collections.abc import Callable, Iterator

import numpy as np
import torch

from cnnfit.data.augment import Augment, identity
from cnnfit.data.imageset import task_of
from cnnfit.errors import CnnfitError


def normalize(x: torch.Tensor, mean: torch.Tensor, inv_std: torch.Tensor,
              augment: Callable[[torch.Tensor], torch.Tensor] = lambda x: x) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float32 (x / 255 - mean) * inv_std, with (1, C, 1, 1) float32 `mean` and `inv_std`;
    `augment` acts in between, on [0, 1]. DeviceLoader and predictor.Pixels both use it: trained, exported and
    served inputs match bit for bit."""
    x = x.float() / 255.0  # (B, C, H, W) in [0, 1]
    return (augment(x) - mean) * inv_std


def read_rows(images: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """images[rows], in the order given. From an on-disk .npy memmap the bytes come through pread
    into a fresh buffer, so file pages never map into this process: resident memory stays bounded
    by what is asked for, however large the file."""
    rows = np.asarray(rows, dtype=np.int64)
    if not len(rows) or not isinstance(images, np.memmap) or not images.filename or not images.flags.c_contiguous:
        return np.asarray(images[rows])
    row_bytes = int(np.prod(images.shape[1:]))
    order = np.argsort(rows, kind="stable")
    wanted = rows[order]
    out = np.empty((len(rows),) + images.shape[1:], dtype=np.uint8)
    flat = memoryview(out.reshape(-1))
    fd = os.open(images.filename, os.O_RDONLY)
    try:
        breaks = np.flatnonzero(np.diff(wanted) != 1) + 1  # runs of consecutive rows: one read each
        for run in np.split(np.arange(len(wanted)), breaks):
            first, n = int(wanted[run[0]]), len(run)
            dst = flat[run[0] * row_bytes: (run[0] + n) * row_bytes]
            got = os.preadv(fd, [dst], images.offset + first * row_bytes)
            if got != n * row_bytes:
                raise OSError(f"short read from {images.filename}")
    finally:
        os.close(fd)
    sorted_already = (order == np.arange(len(order))).all()
    return out if sorted_already else out[np.argsort(order)]  # back to the caller's order


def channel_stats(images: np.ndarray, index: np.ndarray | None = None,
                  chunk: int | None = None) -> tuple[list[float], list[float]]:
    """Exact per-channel mean and std in [0, 1] units from 256-bin histograms: no float copy of the
    data, and chunked (~32 MB at a time) so a memmap is never loaded whole."""
    index = np.arange(len(images)) if index is None else np.sort(np.asarray(index))
    chunk = chunk or max(1, (32 << 20) // int(np.prod(images.shape[1:])))
    c = images.shape[1]
    hist = np.zeros((c, 256), dtype=np.int64)
    for i in range(0, len(index), chunk):
        part = read_rows(images, index[i: i + chunk])
        for ch in range(c):
            hist[ch] += np.bincount(part[:, ch].ravel(), minlength=256)
    values = np.arange(256) / 255.0
    n = hist.sum(1)
    mean = (hist * values).sum(1) / n
    std = np.sqrt(np.maximum((hist * values**2).sum(1) / n - mean**2, 0.0))
    return mean.tolist(), np.maximum(std, 1e-3).tolist()


def memory_budget(device: torch.device) -> int:
    """Bytes a dataset may take on `device`: half of what is free (RAM, a cgroup limit, or GPU memory)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] // 2
    free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return min(free, _cgroup_limit()) // 2


def _cgroup_limit() -> int:
    """This process's cgroup memory limit (v2 or v1), or a huge number when there is none."""
    try:
        for line in open("/proc/self/cgroup").read().splitlines():
            _, controllers, path = line.split(":", 2)
            for name, base, file in (("", "/sys/fs/cgroup", "memory.max"),
                                     ("memory", "/sys/fs/cgroup/memory", "memory.limit_in_bytes")):
                if controllers == name or name in controllers.split(","):
                    limit = open(f"{base}{path}/{file}").read().strip()
                    if limit.isdigit():
                        return int(limit)
    except (OSError, ValueError):
        pass
    return 1 << 62


class DeviceLoader:
    def __init__(self, images: np.ndarray, labels: np.ndarray, *, batch: int, device: torch.device,
                 mean: list[float], std: list[float], augment: Augment | None = None, shuffle: bool = False,
                 seed: int = 0, channels_last: bool = False, balanced: bool = False,
                 augment_classes: list[int] | None = None, index: np.ndarray | None = None,
                 stream: bool | None = None, prefetch: int = 4, rank: int = 0, world: int = 1,
                 augment_seed: int | None = None, drop_last: bool = False, alternate_flip: bool = False) -> None:
        """`index` picks the rows of images/labels to serve (default all). `stream=None` streams from
        disk only when the rows would take more than half the free memory of the device.
        With `world` > 1 `batch` is the global batch: every rank draws the same order (from `seed`) and takes
        every world-th image of each batch from position `rank`, so together the ranks see what one process
        would; augmentation draws from `augment_seed` (per rank). A last batch with fewer images than ranks
        is dropped; `drop_last` drops every epoch's partial last batch (a different one each epoch, when shuffled).
        `alternate_flip` mirrors a fixed random half of the images (drawn from `seed`) in even epochs and the other
        half in odd ones: every image is seen both ways within two epochs, where random flips leave a quarter of
        them one way (airbench's alternating flip).
        Labels are served as given: (B,) int64 classes, (B, L) float multi-hot, or (B,) float32 targets;
        `balanced` and `augment_classes` draw by class, so they are for class labels only."""
        self.index = np.arange(len(labels)) if index is None else np.asarray(index, dtype=np.int64)
        if images.dtype != np.uint8 and (augment is not None or alternate_flip):
            raise CnnfitError("augmentation needs images; these rows are features (a frozen backbone's)")
        nbytes = len(self.index) * int(np.prod(images.shape[1:]))
        self.stream = stream if stream is not None else (
            isinstance(images, np.memmap) and nbytes > memory_budget(device))
        self.images, self.prefetch = images, prefetch
        self.task = task_of(labels)
        if self.task != "classify" and (balanced or augment_classes is not None):
            what, fix = (("train.sampler=balanced", "train.sampler=shuffle") if balanced else
                         ("aug.only_minority", "aug.only_minority=false"))
            raise CnnfitError(f"{what} draws by class and needs one class per image, but this data is {self.task}; "
                              f"set {fix}")
        dtype = {"classify": np.int64, "multilabel": np.uint8, "regress": np.float32}[self.task]  # as the loss takes
        self.labels_host = np.asarray(labels, dtype=dtype)
        if not self.stream:
            # uint8 on device: 4x less memory than fp32; decoded once at cache time
            self.x = torch.from_numpy(read_rows(images, self.index)).to(device)  # (N, C, H, W) uint8
        # (N,) int64 classes, (N, L) uint8 multi-hot (made float per batch: 4x less memory) or (N,) float32 targets
        self.y = torch.from_numpy(self.labels_host[self.index]).to(device)
        self.batch, self.device, self.augment, self.shuffle = batch, device, augment or identity, shuffle
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1)
        self.inv_std = 1.0 / torch.tensor(std, device=device).view(1, -1, 1, 1)
        self.rank, self.world = rank, world
        self.order_generator = torch.Generator(device=device).manual_seed(seed)  # the same on every rank: one order
        # augmentation and mixing: this rank's own stream
        self.generator = torch.Generator(device=device).manual_seed(seed if augment_seed is None else augment_seed)
        n, tail = len(self.y), len(self.y) % batch
        drop = (drop_last and n > tail) or (world > 1 and 0 < tail < world)
        self.num_images = n - tail if drop else n  # images served per epoch, over all ranks
        flips = torch.Generator(device=device).manual_seed(seed + 1)  # flip_half: (N,) flipped in even epochs
        self.flip_half = torch.rand(n, generator=flips, device=device) < 0.5 if alternate_flip else None
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        # balanced: each class drawn equally often: weight 1/count per image, with replacement
        self.sample_weights = (1.0 / torch.bincount(self.y).float())[self.y] if balanced else None
        self.augment_mask = None
        if augment_classes is not None:
            self.augment_mask = torch.zeros(int(self.y.max()) + 1, dtype=torch.bool, device=device)
            self.augment_mask[augment_classes] = True

    def __len__(self) -> int:
        return math.ceil(self.num_images / self.batch)

    def new_order(self) -> torch.Tensor | None:
        """The next epoch's sample order (None: in index order), drawn from the loader's order generator."""
        n = len(self.y)
        if self.sample_weights is not None:
            return torch.multinomial(self.sample_weights, n, replacement=True, generator=self.order_generator)
        return torch.randperm(n, generator=self.order_generator, device=self.device) if self.shuffle else None

    def _flip(self, x: torch.Tensor, idx: torch.Tensor | slice, epoch: int) -> torch.Tensor:
        """Alternating flip of a uint8 batch: the images of this epoch's half, mirrored."""
        if self.flip_half is None:
            return x
        flip = self.flip_half[idx] ^ bool(epoch % 2)  # (B,)
        return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)

    def _batches(self, order: torch.Tensor | None, first: int = 0,
                 epoch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """uint8 (B, C, H, W) and labels per batch from batch number `first` on: gathered on the device,
        or read from disk ahead."""
        n, step = self.num_images, self.world
        if not self.stream:
            for start in range(first * self.batch, n, self.batch):
                mine = slice(start + self.rank, min(start + self.batch, n), step)  # this rank's share of the batch
                idx = order[mine] if order is not None else mine
                yield self._flip(self.x[idx], idx, epoch), self.y[idx]
            return
        positions = order.cpu().numpy() if order is not None else np.arange(n)
        ready: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def produce() -> None:
            try:
                for start in range(first * self.batch, n, self.batch):
                    if stop.is_set():
                        return
                    mine = slice(start + self.rank, min(start + self.batch, n), step)
                    pos = np.sort(positions[mine])  # sorted rows: sequential reads
                    x = torch.from_numpy(read_rows(self.images, self.index[pos]))
                    ready.put((x.pin_memory() if self.device.type == "cuda" else x, pos))
            except BaseException as exc:  # surface reader errors in the training thread
                ready.put(exc)
            ready.put(None)

        thread = threading.Thread(target=produce, daemon=True)
        thread.start()
        try:
            while (item := ready.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                x, pos = item
                idx = torch.from_numpy(pos).to(self.y.device)
                yield self._flip(x.to(self.device, non_blocking=True), idx, epoch), self.y[idx]
        finally:
            stop.set()
            while thread.is_alive():  # let the reader see the stop flag even if the queue is full
                try:
                    ready.get_nowait()
                except queue.Empty:
                    thread.join(0.05)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.iterate(self.new_order())

    def iterate(self, order: torch.Tensor | None, first: int = 0,
                epoch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of epoch `epoch` (0-based) in `order`, from batch number `first` on: with the generator
        state saved alongside, a resumed epoch sees exactly the images and augmentations the interrupted one
        would have."""
        for xb, y in self._batches(order, first, epoch):
            if xb.dtype != torch.uint8:  # float rows are features (a frozen backbone's, cached): served as they are
                yield xb, (y.float() if self.task == "multilabel" else y)
                continue
            x = normalize(xb, self.mean, self.inv_std, lambda x: self._augment(x, y))  # (B, C, H, W) float32
            yield x.contiguous(memory_format=self.memory_format), (
                y.float() if self.task == "multilabel" else y)  # BCE wants float targets, (B, L)

    def _augment(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Augment a [0, 1] batch: every image, or with `augment_classes` only theirs."""
        if self.augment_mask is None:
            return self.augment(x, self.generator)
        return torch.where(self.augment_mask[y].view(-1, 1, 1, 1), self.augment(x, self.generator), x)
