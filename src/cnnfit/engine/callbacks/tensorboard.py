from __future__ import annotations

import numbers
import warnings
from pathlib import Path

import torch

from cnnfit.engine.callbacks.base import Callback
from cnnfit.engine.state import State
from cnnfit.errors import CnnfitError


def scalar_tag(name: str) -> str:
    """`train_loss` -> `loss/train`, `val_macro_f1` -> `macro_f1/val`: TensorBoard draws one card per prefix,
    so train and val curves of a metric sit side by side. Other names keep their own card."""
    for split in ("train", "val"):
        if name.startswith(f"{split}_"):
            return f"{name[len(split) + 1:]}/{split}"
    return "lr/epoch" if name == "lr" else name  # "lr" alone is the per-step curve


class TensorBoard(Callback):
    """Log to TensorBoard: the model graph and sample images once, the LR every `every` steps, every numeric
    epoch metric against the epoch number (1-based). View with `tensorboard --logdir <run dir>`.

    `images`: float (N, C, H, W) in [0, 1] (clipped), e.g. a training batch before normalization.
    `graph_input`: one input batch for tracing the model graph, e.g. `x[:1]`.
    """

    def __init__(self, log_dir: Path, *, images: torch.Tensor | None = None,
                 graph_input: torch.Tensor | None = None, every: int = 50) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise CnnfitError(
                "tensorboard=true needs the tensorboard package; pip install 'cnnfit[tensorboard]'") from None
        self.writer = SummaryWriter(log_dir=str(log_dir))
        self.images, self.graph_input, self.every = images, graph_input, max(int(every), 1)

    def on_fit_start(self, state: State) -> None:
        if self.graph_input is not None:
            self._add_graph(state.model, self.graph_input)
        if self.images is not None:
            x = self.images.detach().float().clamp(0, 1).cpu()  # (N, C, H, W)
            self.writer.add_images("samples", x, global_step=0, dataformats="NCHW")
        self.writer.flush()

    def on_step_end(self, state: State) -> None:
        if state.step % self.every == 0:
            self.writer.add_scalar("lr", state.optimizer.param_groups[0]["lr"], global_step=state.step)

    def on_epoch_end(self, state: State) -> None:
        epoch = state.epoch + 1
        for name, value in state.metrics.items():
            if name != "epoch" and isinstance(value, numbers.Real) and not isinstance(value, bool):
                self.writer.add_scalar(scalar_tag(name), float(value), global_step=epoch)
        self.writer.flush()  # a TensorBoard open during training shows each epoch as it ends

    def on_fit_end(self, state: State) -> None:
        self.writer.flush()
        self.writer.close()

    def _add_graph(self, model: torch.nn.Module, x: torch.Tensor) -> None:
        """Trace in eval mode: a train-mode trace would update batch-norm statistics and draw dropout masks."""
        param = next(model.parameters(), None)
        if param is not None:
            x = x.to(param.device)
        was_training = model.training
        model.eval()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the tracer warns about every data-dependent branch
                self.writer.add_graph(model, x)
        except Exception as exc:  # tracing fails on some models (dynamic control flow, tuple outputs)
            self.writer.add_text("graph", f"model graph not written: tracing failed with "
                                          f"{type(exc).__name__}: {exc}")
        finally:
            model.train(was_training)
