"""Start a model from saved weights: torchvision or timm state_dicts (.pth/.pt), .safetensors files, cnnfit
checkpoints or run directories. Names are translated through each family's `tv_renames`; nothing is dropped
without being reported."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from cnnfit.errors import CnnfitError
from cnnfit.models import custom, user_module
from cnnfit.models.registry import create, list_models, options_of


@dataclass
class InitReport:
    source: str
    loaded: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)  # first conv summed/repeated to the model's channel count
    new_head: list[str] = field(default_factory=list)  # head tensors re-initialised for a different class count
    mismatched: list[str] = field(default_factory=list)  # other keys whose shapes differ: left at their init
    missing: list[str] = field(default_factory=list)  # model keys absent from the file: left at their init
    unexpected: list[str] = field(default_factory=list)  # file keys the model has no place for

    def summary(self) -> str:
        parts = [f"{len(self.loaded) + len(self.adapted)} tensors loaded"]
        if self.adapted:
            parts.append(f"input conv adapted ({', '.join(self.adapted)})")
        if self.new_head:
            parts.append(f"new head ({len(self.new_head)} tensors)")
        for name in ("mismatched", "missing", "unexpected"):
            keys = getattr(self, name)
            if keys:
                more = f" +{len(keys) - 3} more" if len(keys) > 3 else ""
                parts.append(f"{len(keys)} {name}: {', '.join(keys[:3])}{more}")
        return "; ".join(parts)


def to_torchvision(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """cnnfit names -> torchvision names (only the head differs for the classic families)."""
    return _rename(state_dict, _renames(model))


def from_torchvision(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    return _rename(state_dict, {tv: ours for ours, tv in _renames(model).items()})


def _renames(model: nn.Module) -> dict[str, str]:
    renames = getattr(model, "tv_renames", None)
    if renames is None:
        raise CnnfitError(f"{type(model).__name__} has no torchvision counterpart, so it has no torchvision names")
    return renames


def _rename(state_dict: dict[str, torch.Tensor], renames: dict[str, str]) -> dict[str, torch.Tensor]:
    return {next((new + key[len(old):] for old, new in renames.items() if key.startswith(old)), key): value
            for key, value in state_dict.items()}


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, whatever wrapper it comes in (cnnfit, timm, Lightning, DDP)."""
    return _read(path)[0]


def _read(path: str | Path) -> tuple[dict[str, torch.Tensor], list[str] | None]:
    """State dict, and the class names when the file is a cnnfit checkpoint."""
    path = Path(path)
    if path.is_dir():
        path = path / "best.pt"
    if not path.is_file():
        raise CnnfitError(f"init weights '{path}' not found; pass a .pth, .pt or .safetensors file or a run directory")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch and safetensors raise many types for a damaged or foreign file
        raise CnnfitError(f"init weights '{path}' cannot be read ({type(exc).__name__}); is it a PyTorch weights "
                          "file? (pickled whole models are refused: save model.state_dict() instead)") from None
    classes = sd.get("classes") if isinstance(sd, dict) and isinstance(sd.get("classes"), list) else None
    for wrapper in ("state_dict", "model", "model_state_dict", "state_dict_ema"):
        if isinstance(sd, dict) and isinstance(sd.get(wrapper), dict):
            sd = sd[wrapper]
            break
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CnnfitError(f"init weights '{path}' hold no state_dict (a mapping of names to tensors)")
    prefix = "module."  # DistributedDataParallel and DataParallel wrap every name in it
    if sd and all(k.startswith(prefix) for k in sd):
        sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd, classes


def _adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """RGB filters for grayscale input: summed, so a gray image sees what its RGB copy would (timm does the same);
    grayscale filters for more channels: repeated and scaled so activations keep their size."""
    if in_chans == 1:
        return weight.sum(1, keepdim=True)
    reps = -(-in_chans // weight.shape[1])
    return weight.repeat(1, reps, 1, 1)[:, :in_chans] * (weight.shape[1] / in_chans)


def load_pretrained(model: nn.Module, path: str | Path | dict[str, torch.Tensor], *, classes: list[str] | None = None,
                    name: str | None = None) -> InitReport:
    """Copy every tensor that fits into `model`; report the rest. A file that matches under half of the model is
    refused: it is almost surely weights of another architecture. The head is replaced when its shape differs,
    or when a cnnfit checkpoint was trained on other class names than `classes` (same count, other meaning).
    `path` may be a state_dict already read (ImageNet weights); `name` then says where it came from."""
    source, source_classes = (path, None) if isinstance(path, dict) else _read(path)
    label = (name or "a state_dict") if isinstance(path, dict) else str(path)
    other_classes = classes is not None and source_classes is not None and source_classes != classes
    ours = model.state_dict()
    renames = getattr(model, "tv_renames", None)
    if renames and not any(k.startswith(tuple(renames)) for k in source):
        source = from_torchvision(source, model)  # torchvision/timm names: no key under cnnfit's head prefix
    # the classifier and any auxiliary classifiers: the parts whose shape follows the class count
    head_prefixes = tuple(f"{name}." for name, _ in model.named_children() if name == "head" or name.startswith("aux"))
    first_conv = next((n + ".weight" for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    report, merged = InitReport(label), {}
    for key, value in source.items():
        if key not in ours:
            report.unexpected.append(key)
        elif key.startswith(head_prefixes) and (other_classes or value.shape != ours[key].shape):
            report.new_head.append(key)
        elif value.shape == ours[key].shape:
            merged[key] = value
            report.loaded.append(key)
        elif key == first_conv and value.ndim == 4 and value.shape[0] == ours[key].shape[0] \
                and value.shape[2:] == ours[key].shape[2:]:
            merged[key] = _adapt_input_conv(value, ours[key].shape[1])
            report.adapted.append(f"{key} {value.shape[1]}->{ours[key].shape[1]} channels")
        else:
            report.mismatched.append(f"{key} {tuple(value.shape)} vs {tuple(ours[key].shape)}")
    report.missing = [k for k in ours if k not in source]
    tensors = [k for k in ours if not k.endswith("num_batches_tracked")]
    matched = sum(1 for k in tensors if k in merged or k in report.new_head)
    if matched < len(tensors) / 2:
        raise CnnfitError(f"init weights '{label}' match only {matched} of {len(tensors)} tensors of this model "
                          f"({report.summary()}); are they for another architecture?")
    model.load_state_dict(merged, strict=False)
    return report


# What a checkpoint or model.json may describe. A file is data, so each value is checked before it sizes anything:
# a side of 200,000 px would allocate ~40 GB per decoded image.
MIN_IMGSZ = 4  # px, data.imgsz's own lower bound
MAX_IMGSZ = 4096  # px, 4x data.imgsz's upper bound (1024): room for exported models, a 4096^2 RGB image is 50 MB
CHANNELS = (1, 3)  # grayscale or RGB, as data.channels
_MAX_DEPTH = 32  # nesting of model options: a layers list with residual blocks inside residual blocks
_NEEDED = ("model", "model_kwargs", "classes", "channels", "imgsz", "state_dict")


def from_checkpoint(ckpt: dict, device: torch.device | str = "cpu", channels_last: bool = False, *,
                    trust_code: bool = False, source: str = "the checkpoint") -> nn.Module:
    """The model a checkpoint (or an exported model.json) describes, with its weights, in eval mode: the one way
    evaluate, predict, serve and export rebuild a model. channels_last: NHWC weights, 2.2x faster fp32 inference
    than NCHW for fastnet on 2 CPU cores (oneDNN).

    The file is data: it may name a registered model or carry a layers list, with options the builder declares and
    plain JSON values. A `pkg.mod:Class` it names is imported only with `trust_code=True` (or when the user named
    that model in this process), never from the working directory. `source` names the file in errors."""
    name, kwargs = _described(ckpt, source)
    if custom.is_yaml(name):
        if not isinstance(kwargs.get("layers"), list):  # a layers file is never read on a file's word
            raise CnnfitError(f"{source} names the layers file '{name}' without its layers list; it is damaged "
                              "or not written by cnnfit: retrain, or rebuild it from the file with models.create")
    elif custom.is_custom(name) and not (trust_code or user_module.is_typed(name)):
        raise CnnfitError(f"{source} names model '{name}', which runs code from the file; if you trust it, "
                          "add trust_code=true")
    elif not custom.is_custom(name) and name not in list_models():
        raise CnnfitError(f"{source} names model '{name}', which is not a registered model; "
                          f"choose a run trained with one of: {', '.join(list_models())}")
    num_classes, in_chans = len(ckpt["classes"]), ckpt["channels"]
    if custom.is_custom(name) and not custom.is_yaml(name):
        imgsz = kwargs.pop("imgsz", None)
        model = user_module.build(name, num_classes=num_classes, in_chans=in_chans, imgsz=imgsz, options=kwargs,
                                  typed=False)
    else:
        takes = {"imgsz", *(["layers"] if custom.is_yaml(name) else options_of(name))}
        unknown = sorted(set(kwargs) - takes)
        if unknown:
            raise CnnfitError(f"{source}: model {name} has no option {', '.join(unknown)}; it takes: "
                              f"{', '.join(sorted(takes))}; the file is damaged or not written by cnnfit")
        model = create(name, num_classes=num_classes, in_chans=in_chans, **kwargs)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, TypeError, AttributeError) as exc:  # missing, unexpected or misshapen tensors
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CnnfitError(f"{source}: its weights do not fit model {name} ({why[:200]}); the file is damaged or "
                          "not written by cnnfit") from None
    return model.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format).eval()


def _described(ckpt: Any, source: str) -> tuple[str, dict[str, Any]]:
    """The model name and a copy of its options, once the fields that size the model are checked."""
    if not isinstance(ckpt, dict):
        raise CnnfitError(f"{source} holds a {type(ckpt).__name__}, not a model description; pass a run directory "
                          "or an export written by cnnfit")
    missing = [k for k in _NEEDED if k not in ckpt]
    if missing:
        raise CnnfitError(f"{source} has no {', '.join(missing)}; it is damaged or not written by cnnfit")
    name, kwargs, classes, channels = ckpt["model"], ckpt["model_kwargs"], ckpt["classes"], ckpt["channels"]
    checks = [(isinstance(name, str) and name != "", "model must be a model name"),
              (isinstance(kwargs, dict) and _plain(kwargs), "model_kwargs must hold plain JSON values"),
              (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes),
               "classes must be a list of names"),
              (custom.is_int(channels) and channels in CHANNELS, f"channels must be one of {CHANNELS}"),
              (custom.is_int(ckpt["imgsz"]) and MIN_IMGSZ <= ckpt["imgsz"] <= MAX_IMGSZ,
               f"imgsz must be a size from {MIN_IMGSZ} to {MAX_IMGSZ} px")]
    if isinstance(kwargs, dict) and "imgsz" in kwargs:
        checks.append((custom.is_int(kwargs["imgsz"]) and MIN_IMGSZ <= kwargs["imgsz"] <= MAX_IMGSZ,
                       f"model_kwargs imgsz must be a size from {MIN_IMGSZ} to {MAX_IMGSZ} px"))
    failed = [what for ok, what in checks if not ok]
    if failed:
        raise CnnfitError(f"{source} is not a valid cnnfit model description: {failed[0]}; it is damaged or not "
                          "written by cnnfit")
    return name, dict(kwargs)


def _plain(value: Any, depth: int = 0) -> bool:
    """None, bool, int, float, str, and lists and str-keyed dicts of them: values JSON can hold, nothing callable."""
    if depth > _MAX_DEPTH:
        return False
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, list):
        return all(_plain(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v, depth + 1) for k, v in value.items())
    return False
