"""Grad-CAM (Selvaraju et al. 2017, arXiv 1610.02391): where in an image the model looked for the class it named.

    module = pixels_module(load_checkpoint("runs/train3/best.pt"))   # uint8 in, as predict feeds it
    heat = gradcam(module, images)                                   # (N, H, W) float32 in [0, 1], top-1 class
    save_overlay("cat.png", images[0], heat[0])                      # the image with the heatmap blended in

The map is the last spatial layer's activations weighted by the class score's mean gradient per channel (Captum's
`LayerGradCam`), upsampled bilinearly to the input size, ReLU'd and scaled so each image's peak is 1."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from cnnfit.errors import CnnfitError
from cnnfit.eval.tta import TTA
from cnnfit.files import atomic_path

BATCH = 64  # images per backward pass; the graph starts at the layer: fastnet at 64 px, 64x256x8x8 fp32 + grad ~8 MB
ALPHA = 0.45  # heatmap weight in an overlay: the image stays readable under the colours


# Models whose global max pooling over maps of very large receptive fields leaves Grad-CAM without a place: on a
# dataset decided by a 4 px marker, fastnet reached 1.00 test accuracy with 0.11 of its heatmap peaks on the
# marker (the centre pixel scores 0.12), against 0.99 for simplecnn and a small average-pooled conv net.
UNLOCALISED = ("fastnet", "airnet")

def target_layer(model: nn.Module, sample: torch.Tensor) -> tuple[str, nn.Module]:
    """The layer Grad-CAM reads: the last module, in forward execution order, whose output is an (N, C, H, W)
    tensor with H, W >= 2: the last convolutional stage before global pooling. A forward hook fires when its
    module returns, so a block's fires after those of the layers inside it: of a block and its last activation,
    which return the same map, the block is picked (resnet18: layer4, fastnet: block3). `sample` is one input batch
    as the model takes it (uint8 for predictor.Pixels); a model with no such map (an MLP) is refused."""
    names = {m: name for name, m in model.named_modules() if name}  # the root's own output is the answer, not a layer
    calls: list[tuple[nn.Module, bool, bool]] = []  # (module, returned a map >= 2x2, returned any 4-D), in order

    def hook(module: nn.Module, _inputs, output) -> None:
        four_d = isinstance(output, torch.Tensor) and output.ndim == 4
        calls.append((module, four_d and min(output.shape[-2:]) >= 2, four_d))

    handles = [m.register_forward_hook(hook) for m in names]
    try:
        with _eval_mode(model), torch.no_grad():
            model(sample)
    finally:
        for h in handles:
            h.remove()
    # a module called again later (lenet5's one `act`, on the maps and then on the dense layers) is read by Captum
    # at its last call, so it qualifies only if that call returned a map
    last = {m: spatial for m, spatial, _ in calls}  # module -> whether its last call returned a map
    fired = [m for m, spatial, _ in calls if spatial and last[m]]
    if not fired:
        size = "x".join(map(str, sample.shape[-2:]))
        fix = ("feed larger images: every map is under 2x2 px" if any(o for _, _, o in calls) else
               "explain a model with conv layers, such as simplecnn")
        raise CnnfitError(f"{type(model).__name__} has no layer with an (N, C, H, W) output of 2x2 px or more at "
                          f"{size} px input, so Grad-CAM has no map to show; {fix}")
    return names[fired[-1]], fired[-1]


def gradcam(module: nn.Module, images: np.ndarray | torch.Tensor, *, target: np.ndarray | None = None,
            layer: nn.Module | str | None = None, batch: int = BATCH,
            device: torch.device | str | None = None) -> np.ndarray:
    """(N, H, W) float32 Grad-CAM heatmaps in [0, 1] at the input size, for class `target` (N,) of each image
    (default: the predicted class). `module` is predictor.Pixels (uint8 (N, C, H, W) in; its layout="nhwc" takes
    (N, H, W, C)) or a plain model fed what it takes (normalized float). `layer` (a module or its name) defaults to
    `target_layer`. Runs in eval mode on `device` (default: the module's) with parameter gradients off, both restored
    after: only activations need gradients, and no parameter's .grad is touched."""
    try:
        from captum.attr import LayerAttribution, LayerGradCam
    except ImportError:
        raise CnnfitError("explanations need Captum: pip install 'cnnfit[explain]'") from None
    if any(isinstance(m, TTA) for m in module.modules()):
        raise CnnfitError("Grad-CAM explains one view of each image; build the module with tta='none'")
    x_all = torch.as_tensor(images)
    device = torch.device(device) if device is not None else _device_of(module)
    size = tuple(x_all.shape[1:3] if getattr(module, "layout", "nchw") == "nhwc" else x_all.shape[-2:])  # (H, W)
    if layer is None:
        layer = target_layer(module, x_all[:1].to(device))[1]
    elif isinstance(layer, str):
        layer = _named(module, layer)
    scores = _scores(module)
    heat = np.empty((len(x_all), *size), dtype=np.float32)  # (N, H, W)
    with _eval_mode(module), _frozen(module):
        cam = LayerGradCam(scores, layer)
        for i in range(0, len(x_all), batch):
            x = x_all[i:i + batch].to(device)
            if target is None:
                with torch.no_grad():
                    want = scores(x).argmax(1)  # (n,)
            else:
                want = torch.as_tensor(np.asarray(target[i:i + batch]), dtype=torch.long, device=device)
            maps = cam.attribute(x, target=want)  # (n, 1, h, w) at the layer's size
            maps = LayerAttribution.interpolate(maps, size, interpolate_mode="bilinear").relu()  # (n, 1, H, W)
            peak = maps.amax(dim=(1, 2, 3), keepdim=True)  # (n, 1, 1, 1)
            maps = torch.where(peak > 0, maps / peak.clamp_min(1e-30), 0.0)  # all-zero maps stay zero
            heat[i:i + len(x)] = maps[:, 0].detach().float().cpu().numpy()  # (n, H, W)
    return heat


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """A (C, H, W) uint8 image (gray or RGB) with an (H, W) heatmap in [0, 1] blended in through matplotlib's
    'jet' colormap (red: where the model looked) -> (H, W, 3) uint8."""
    from matplotlib import colormaps

    if image.ndim != 3 or image.shape[0] not in (1, 3) or image.shape[1:] != heat.shape:
        raise CnnfitError(f"overlay takes a (1 or 3, H, W) image and an (H, W) heatmap of the same size, got "
                          f"{image.shape} and {heat.shape}")
    rgb = np.repeat(image, 3, axis=0) if image.shape[0] == 1 else image  # (3, H, W)
    colour = colormaps["jet"](np.clip(heat, 0, 1))[..., :3] * 255  # (H, W, 3), the alpha channel dropped
    out = (1 - alpha) * rgb.transpose(1, 2, 0).astype(np.float32) + alpha * colour  # (H, W, 3)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def save_overlay(path: str | Path, image: np.ndarray, heat: np.ndarray, alpha: float = ALPHA) -> Path:
    """`overlay` written as a PNG through `files.atomic_path`: a reader never sees half an image."""
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(overlay(image, heat, alpha)).save(tmp, format="PNG")
    return Path(path)


def _scores(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """What the gradient is taken of: a wrapper's inner model's output (predictor.Pixels' `model`: the logits,
    before temperature and softmax), else the module's. Not the probabilities: at a logit gap over ~17 a float32
    softmax rounds p to 1.0 and its gradient for the named class to exactly 0, so a confident map would go blank."""
    inner = getattr(module, "model", None)
    if not isinstance(inner, nn.Module):
        return module

    def logits(x: torch.Tensor) -> torch.Tensor:
        seen: list[torch.Tensor] = []
        handle = inner.register_forward_hook(lambda _m, _i, out: seen.append(out))
        try:
            module(x)
        finally:
            handle.remove()
        return seen[-1].float().reshape(len(x), -1)  # (N, K); a regressor's (N,) as (N, 1)

    return logits


@contextlib.contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """The module in eval mode (BatchNorm's running statistics, no dropout), each submodule's mode restored after."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


@contextlib.contextmanager
def _frozen(module: nn.Module) -> Iterator[None]:
    """Parameters without requires_grad, restored after: autograd then records the graph from the layer's
    activations on (Captum sets requires_grad on them), and no parameter ever gets a .grad."""
    params = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in params:
        p.requires_grad_(False)
    try:
        with torch.enable_grad():  # Grad-CAM needs a backward pass even under a caller's no_grad
            yield
    finally:
        for p, wanted in params:
            p.requires_grad_(wanted)


def _device_of(module: nn.Module) -> torch.device:
    tensor = next(module.parameters(), None)
    if tensor is None:
        tensor = next(module.buffers(), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def _named(module: nn.Module, name: str) -> nn.Module:
    found = dict(module.named_modules())
    if name not in found or not name:
        names = [n for n in found if n]
        raise CnnfitError(f"{type(module).__name__} has no layer '{name}'; choose from: {', '.join(names[-8:])}, ...")
    return found[name]


__all__ = ["ALPHA", "BATCH", "UNLOCALISED", "gradcam", "overlay", "save_overlay", "target_layer"]
