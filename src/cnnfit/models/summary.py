"""Numbers about models, as data for `cnnfit models` and `cnnfit summary` to render: parameter and FLOP counts,
the zoo at one input size, and a model's leaf layers in forward order."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from cnnfit.models import registry


def count_params(model: nn.Module) -> int:
    """Parameters, each shared tensor once."""
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, *, in_chans: int, imgsz: int) -> int:
    """Forward FLOPs of one (in_chans, imgsz, imgsz) image as torch's FlopCounterMode counts them: 2 per
    multiply-accumulate of convolutions, linear layers and matmuls; bn, activations and pooling are not counted."""
    counter = FlopCounterMode(display=False)
    with _inference(model), counter:
        model(_image(model, in_chans, imgsz))
    return counter.get_total_flops()


def zoo_table(*, imgsz: int = 32, in_chans: int = 3, num_classes: int = 10) -> list[dict[str, Any]]:
    """One row per registered model: name, params, flops (None, with `note` saying why, when imgsz is below the
    model's min_size), min_size, options. Params are those of the model built for max(imgsz, min_size)."""
    rows = []
    for name in registry.list_models():
        least = registry.min_size(name)
        fits = imgsz >= least
        params, flops = _measure(name, num_classes=num_classes, in_chans=in_chans, imgsz=max(imgsz, least), flops=fits)
        rows.append({"name": name, "params": params, "flops": flops,
                     "note": None if fits else f"needs imgsz >= {least}",
                     "min_size": least, "options": registry.options_of(name)})
    return rows


def layer_table(model: nn.Module, *, in_chans: int, imgsz: int) -> dict[str, Any]:
    """The leaf modules (those without children) in the order one forward pass of a single image calls them.

    Returns {"rows": [{"name", "type", "shape", "params"}], "output", "params", "trainable", "frozen"}. `shape` is
    the output without the batch dim, a tuple of shapes for a module (or model, in "output") returning several
    tensors. A module called twice gets two rows; its params count on the first. The totals count every
    parameter, also those held by non-leaf modules."""
    names = {module: name for name, module in model.named_modules()}
    rows: list[dict[str, Any]] = []
    seen: set[int] = set()

    def record(module: nn.Module, inputs: Any, output: Any) -> None:
        rows.append({"name": names[module], "type": type(module).__name__, "shape": _shape(output),
                     "params": 0 if id(module) in seen else count_params(module)})
        seen.add(id(module))

    leaves = [m for m in names if next(m.children(), None) is None]
    handles = [m.register_forward_hook(record) for m in leaves]
    try:
        with _inference(model):
            out = model(_image(model, in_chans, imgsz))
    finally:
        for h in handles:
            h.remove()
    total = count_params(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"rows": rows, "output": _shape(out), "params": total, "trainable": trainable, "frozen": total - trainable}


@contextmanager
def _inference(model: nn.Module) -> Iterator[None]:
    """Eval mode and no grad for one pass; the training flag comes back as it was."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _image(model: nn.Module, in_chans: int, imgsz: int) -> torch.Tensor:
    """A batch of one zero image on the model's device and in its dtype."""
    p = next(model.parameters(), None)
    device, dtype = (p.device, p.dtype) if p is not None else (torch.device("cpu"), torch.float32)
    return torch.zeros(1, in_chans, imgsz, imgsz, device=device, dtype=dtype)  # (1, C, H, W)


def _measure(name: str, *, num_classes: int, in_chans: int, imgsz: int, flops: bool) -> tuple[int, int | None]:
    """Params and (if `flops`) FLOPs of a registered model built for `imgsz`. Built on the meta device: shapes
    without weight init or arithmetic, so the zoo takes a fraction of a second; a family whose build or forward
    needs real values falls back to the CPU."""
    kwargs = registry.builder_kwargs(name, imgsz=imgsz)

    def measure() -> tuple[int, int | None]:
        model = registry.create(name, num_classes=num_classes, in_chans=in_chans, **kwargs)
        return count_params(model), count_flops(model, in_chans=in_chans, imgsz=imgsz) if flops else None

    try:
        with torch.device("meta"):
            return measure()
    except Exception:  # noqa: BLE001  (an op without a meta kernel, a .item() in a forward)
        return measure()


def _shape(output: Any) -> Any:
    if isinstance(output, torch.Tensor):
        return tuple(output.shape[1:])
    if isinstance(output, (tuple, list)):
        return tuple(_shape(o) for o in output)
    if isinstance(output, dict):
        return {k: _shape(v) for k, v in output.items()}
    return None
