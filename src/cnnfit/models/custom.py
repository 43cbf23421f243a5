"""Models the user brings: a YAML list of layers (`model=net.yaml`) or their own module (`model=pkg.mod:Class`).

A layers file
-------------
One key, `layers`, a list read top to bottom like a Keras Sequential model::

    layers:
      - conv: {filters: 32, kernel: 3}   # stride 1, padding same; no bias when bn comes next
      - bn
      - relu                             # shorthand for act: relu
      - pool: 2                          # a scalar sets the first argument: pool: {size: 2}
      - residual:                        # output = input + block(input)
          - conv: 32
          - bn
          - relu
      - dropout: 0.25
      - flatten                          # or gpool: global average pool, (C, H, W) -> (C,)
      - dense: 128
      - relu

An entry is a bare name (every argument at its default) or one `type: arguments` pair, where the arguments are
a mapping, a scalar for the type's first argument, or empty. Types and arguments (default):

    conv      filters, kernel (3), stride (1), padding (same | valid | pixels), groups (1), dilation (1), bias (auto)
    bn        -                  BatchNorm2d on a map, BatchNorm1d on a vector
    act       name               relu | relu6 | gelu | elu | tanh | sigmoid | silu; the name alone is shorthand
    pool      size (2), stride (size), type (max | avg)
    gpool     -                  global average pool, (C, H, W) -> (C,)
    dropout   p (0.5)
    flatten   -                  (C, H, W) -> (C*H*W,)
    dense     units, bias (auto) needs a vector: put flatten or gpool before it
    residual  layers             a list in this same format; the shortcut is the identity, or a strided 1x1 conv
                                 (a Linear on vectors) when the block changes the shape, followed by bn when the
                                 block uses bn (He et al. 2016, projection shortcut "B")

`bias: auto` is off when bn comes next in the same list (bn's shift makes it redundant), on otherwise. No size is
ever written: input channels, dense in-features and bn widths come from pushing a zero image of the training size
through each layer as it is built. After the last layer a (C, H, W) output is global-average pooled and `head`,
a Linear to the class count, is added, so the file never names the number of classes. Errors number layers from 1;
layer 3.2 is the second layer of the residual block at position 3.

The parsed list travels in the checkpoint (`builder_kwargs` returns it), so a run reloads without the file.
Your own module (`model=pkg.mod:Class`) is described in user_module.py.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
import yaml

from cnnfit.errors import CnnfitError, suggest
from cnnfit.models import user_module
from cnnfit.models.layers import ACTIVATIONS, Dropout, make_act

_REQUIRED = object()
# type -> {argument: default}, in the order a user reads them; a scalar value sets the first argument
_LAYERS: dict[str, dict[str, Any]] = {
    "conv": {"filters": _REQUIRED, "kernel": 3, "stride": 1, "padding": "same", "groups": 1, "dilation": 1,
             "bias": "auto"},
    "bn": {},
    "act": {"name": _REQUIRED},
    "pool": {"size": 2, "stride": None, "type": "max"},
    "gpool": {},
    "dropout": {"p": 0.5},
    "flatten": {},
    "dense": {"units": _REQUIRED, "bias": "auto"},
    "residual": {"layers": _REQUIRED},
}
_EXAMPLES = {"conv": "conv: {filters: 32}", "act": "act: relu", "dense": "dense: 128",
             "residual": "residual: [conv: 32, bn, relu]"}
_NEW_TENSOR = {"conv", "bn", "pool", "gpool", "dense", "residual"}  # an activation after these may work in place


def is_int(v: Any) -> bool:
    """An int that is not a bool (True is an int to Python, never a size here)."""
    return isinstance(v, int) and not isinstance(v, bool)


_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    **dict.fromkeys(("filters", "kernel", "stride", "groups", "dilation", "size", "units"),
                    (lambda v: is_int(v) and v > 0, "a positive integer")),
    "padding": (lambda v: v in ("same", "valid") or (is_int(v) and v >= 0), "same, valid or a number of pixels"),
    "bias": (lambda v: isinstance(v, bool) or v == "auto", "true, false or auto"),
    "name": (lambda v: isinstance(v, str) and v in ACTIVATIONS, f"one of {', '.join(ACTIVATIONS)}"),
    "type": (lambda v: v in ("max", "avg"), "max or avg"),
    "p": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1, "a number in [0, 1)"),
    "layers": (lambda v: isinstance(v, list) and len(v) > 0, "a non-empty list of layers"),
}


def is_custom(name: str) -> bool:
    """A layers file (ends in .yaml/.yml) or a user's module (pkg.mod:Class) rather than a registered name."""
    return is_yaml(name) or ":" in name


def is_yaml(name: str) -> bool:
    return name.lower().endswith((".yaml", ".yml"))


# ---- the registry's five questions, answered for custom names -------------------------------------------------

def check(name: str) -> None:
    """Fail now, before a run directory exists, if the file or module is unusable."""
    if is_yaml(name):
        read_layers(name)
    else:
        user_module.load(name)


def create(name: str, *, num_classes: int, in_chans: int = 3, imgsz: int | None = None, **options) -> nn.Module:
    """Build a custom model; a layers file's parsed list may come as `layers` (from a checkpoint) instead."""
    if not is_yaml(name):
        return user_module.build(name, num_classes=num_classes, in_chans=in_chans, imgsz=imgsz, options=options)
    layers = options.pop("layers", None)
    if options:
        raise CnnfitError(f"{name} has no option {', '.join(sorted(options))}; a layers file takes its "
                          f"arguments inside the file")
    if imgsz is None:
        raise CnnfitError(f"{name}: the layer sizes follow from the input size; pass imgsz")
    return build(read_layers(name) if layers is None else layers, num_classes=num_classes, in_chans=in_chans,
                 imgsz=imgsz, source=name)


def options_of(name: str) -> list[str]:
    if is_yaml(name):
        return ["layers"]  # the parsed list, which replaces reading the file (how a checkpoint reloads)
    named, _ = user_module.params_of(user_module.load(name))
    return [k for k in named if k not in ("num_classes", "in_chans", "imgsz")]


def builder_kwargs(name: str, **hints) -> dict:
    if is_yaml(name):
        return {**{k: v for k, v in hints.items() if k == "imgsz"}, "layers": read_layers(name)}
    named, _ = user_module.params_of(user_module.load(name))
    return {k: v for k, v in hints.items() if k in named}


# ---- layers files -----------------------------------------------------------------------------------------------

def read_layers(path: str | Path) -> list:
    """The `layers:` list of a file, checked for types and arguments (shapes are checked when built)."""
    p = Path(path)
    if not p.is_file():
        raise CnnfitError(f"model file '{path}' not found in {Path.cwd()}; check the path, or pick a registered "
                          f"model (see `cnnfit models`)")
    try:
        doc = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise CnnfitError(f"{path} is not valid YAML ({problem}{where}); fix the syntax there") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CnnfitError(f"{path} cannot be read ({type(exc).__name__}); check the file") from None
    if not isinstance(doc, dict) or "layers" not in doc:
        raise CnnfitError(f"{path} must hold a `layers:` list, e.g. layers: [{{conv: 32}}, bn, relu]")
    extra = sorted(str(k) for k in doc if k != "layers")
    if extra:
        raise CnnfitError(f"{path} has unknown key {', '.join(extra)}; a layers file holds only `layers:`")
    layers = doc["layers"]
    if not isinstance(layers, list) or not layers:
        raise CnnfitError(f"{path}: `layers:` must be a non-empty list, e.g. layers: [{{conv: 32}}, bn, relu]")
    _parse(layers, str(path))
    return layers


@dataclass
class _Layer:
    kind: str
    args: dict[str, Any]  # every argument, defaults filled in; a residual's `layers` parsed
    where: str  # "3" or "3.2", numbered from 1 as a reader counts


def _parse(entries: list, src: str, prefix: str = "") -> list[_Layer]:
    out = []
    for i, entry in enumerate(entries, 1):
        where = f"{prefix}{i}"
        if isinstance(entry, str):
            kind, value = entry, None
        elif isinstance(entry, dict) and len(entry) == 1:
            ((kind, value),) = entry.items()
        else:
            raise CnnfitError(f"{src}: layer {where} is {entry!r}; write a name such as bn, or one "
                              f"`type: arguments` pair such as conv: {{filters: 32}}")
        kind = str(kind)
        if kind in ACTIVATIONS:  # `relu` is shorthand for `act: relu`
            if value not in (None, {}):
                raise CnnfitError(f"{src}: layer {where} ({kind}) takes no arguments; write it as `{kind}`")
            kind, value = "act", kind
        if kind not in _LAYERS:
            choices = [*_LAYERS, *ACTIVATIONS]
            raise CnnfitError(f"{src}: layer {where} has unknown type '{kind}'; {suggest(kind, choices)}"
                              f"choose from: {', '.join(choices)}")
        defaults = _LAYERS[kind]
        if value is None:
            given = {}
        elif isinstance(value, dict):
            given = {str(k): v for k, v in value.items()}
        elif defaults:
            given = {next(iter(defaults)): value}
        else:
            raise CnnfitError(f"{src}: layer {where} ({kind}) takes no arguments; write it as `{kind}`")
        for arg, v in given.items():
            if arg not in defaults:
                raise CnnfitError(f"{src}: layer {where} ({kind}) has no argument '{arg}'; {suggest(arg, defaults)}"
                                  f"it takes: {', '.join(defaults) or 'none'}")
            ok, what = _CHECKS[arg]
            if not ok(v):
                raise CnnfitError(f"{src}: layer {where} ({kind}) has {arg}={v!r}; {arg} must be {what}")
        missing = [a for a, d in defaults.items() if d is _REQUIRED and a not in given]
        if missing:
            raise CnnfitError(f"{src}: layer {where} ({kind}) needs {missing[0]}, e.g. {_EXAMPLES[kind]}")
        args = {**defaults, **given}
        if kind == "residual":
            args["layers"] = _parse(args["layers"], src, f"{where}.")
        out.append(_Layer(kind, args, where))
    return out


class GlobalAvgPool(nn.Module):
    """(B, C, H, W) -> (B, C): the mean over the map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3))


class Residual(nn.Module):
    """output = shortcut(x) + block(x); the shortcut is the identity unless the block changes the shape."""

    def __init__(self, block: nn.Module, shortcut: nn.Module) -> None:
        super().__init__()
        self.block = block
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.block(x)


class CustomNet(nn.Module):
    """The user's layers in order, then a global average pool when the output is still a map, then `head`."""

    tv_renames = None  # no torchvision weights map onto a user's layers

    def __init__(self, layers: list[tuple[str, nn.Module]], *, features: int, num_classes: int, pool: bool) -> None:
        super().__init__()
        for name, module in layers:
            self.add_module(name, module)
        self.stage_names = tuple(name for name, _ in layers)
        self.global_pool = GlobalAvgPool() if pool else None
        self.head = nn.Linear(features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.stage_names:
            x = getattr(self, name)(x)
        if self.global_pool is not None:
            x = self.global_pool(x)  # (B, C)
        return self.head(x)  # (B, num_classes)


def build(layers: list, *, num_classes: int, in_chans: int, imgsz: int, source: str = "layers") -> CustomNet:
    """A CustomNet from a `layers:` list; `source` names the file in errors."""
    if not isinstance(layers, list) or not layers:
        raise CnnfitError(f"{source}: `layers` must be a non-empty list, e.g. [{{conv: 32}}, bn, relu]; got {layers!r}")
    parsed = _parse(layers, source)
    x = torch.zeros(1, in_chans, imgsz, imgsz)  # the probe: each layer's output shape sizes the next layer
    named, x = _build(parsed, x, source, imgsz)
    return CustomNet(named, features=x.shape[1], num_classes=num_classes, pool=x.ndim == 4)


def _build(layers: list[_Layer], x: torch.Tensor, src: str,
           imgsz: int) -> tuple[list[tuple[str, nn.Module]], torch.Tensor]:
    """Each layer built for the probe `x` (1, C, H, W) or (1, N), then run on it; returns (name, module) pairs and
    the last output."""
    named, counts = [], Counter()
    for i, layer in enumerate(layers):
        if layer.kind == "residual":
            block, y = _build(layer.args["layers"], x, src, imgsz)
            uses_bn = any(sub.kind == "bn" for sub in layer.args["layers"])
            shortcut = _shortcut(x, y, uses_bn, layer, src)
            module = Residual(nn.Sequential(OrderedDict(block)), shortcut)
            _probe(shortcut, x, layer, src, imgsz)
        else:
            bias = i + 1 == len(layers) or layers[i + 1].kind != "bn"
            # in place only on a tensor this list made; an input tensor may still be needed (the shortcut)
            inplace = i > 0 and layers[i - 1].kind in _NEW_TENSOR
            module = _make(layer, x, bias=bias, inplace=inplace, src=src)
            y = _probe(module, x, layer, src, imgsz)
        counts[layer.kind] += 1
        named.append((f"{layer.kind}{counts[layer.kind]}", module))
        x = y
    return named, x


def _make(layer: _Layer, x: torch.Tensor, *, bias: bool, inplace: bool, src: str) -> nn.Module:
    a, kind, at = layer.args, layer.kind, f"{src}: layer {layer.where} ({layer.kind})"
    if kind in ("conv", "pool", "gpool") and x.ndim != 4:
        raise CnnfitError(f"{at} needs a (C, H, W) map but gets a vector of {x.shape[1]}; move it before "
                          f"flatten, gpool and dense")
    if kind == "dense" and x.ndim != 2:
        raise CnnfitError(f"{at} needs a vector but gets a {_shape(x)} map; put flatten or gpool before it")
    if a.get("bias", "auto") != "auto":
        bias = a["bias"]
    if kind == "conv":
        c, f, k, s, g, d = x.shape[1], a["filters"], a["kernel"], a["stride"], a["groups"], a["dilation"]
        if c % g or f % g:
            raise CnnfitError(f"{at} has groups={g}, which must divide both its {c} input channels and filters={f}")
        # "same": out = ceil(in / stride), as in Keras. torch's padding="same" exists only for stride 1; past it,
        # symmetric padding matches for odd kernels, and an even kernel may give one pixel less (Keras pads unevenly)
        padding = {"valid": 0, "same": "same" if s == 1 else d * (k - 1) // 2}.get(a["padding"], a["padding"])
        return nn.Conv2d(c, f, k, s, padding, dilation=d, groups=g, bias=bias)
    if kind == "bn":
        return nn.BatchNorm2d(x.shape[1]) if x.ndim == 4 else nn.BatchNorm1d(x.shape[1])
    if kind == "act":
        act = make_act(a["name"])
        if hasattr(act, "inplace"):
            act.inplace = act.inplace and inplace
        return act
    if kind == "pool":
        pool = nn.MaxPool2d if a["type"] == "max" else nn.AvgPool2d
        return pool(a["size"], a["stride"] or a["size"])
    if kind == "dense":
        return nn.Linear(x.shape[1], a["units"], bias=bias)
    return {"gpool": GlobalAvgPool, "flatten": nn.Flatten, "dropout": lambda: Dropout(a["p"])}[kind]()


def _shortcut(x: torch.Tensor, y: torch.Tensor, uses_bn: bool, layer: _Layer, src: str) -> nn.Module:
    """Identity when the block keeps the shape, else a projection: strided 1x1 conv on maps, Linear on vectors."""
    at = f"{src}: layer {layer.where} (residual)"
    if x.shape == y.shape:
        return nn.Identity()
    if x.ndim != y.ndim:
        raise CnnfitError(f"{at} turns a {_shape(x)} input into {_shape(y)}; a block must keep a map a map, so "
                          f"move flatten, gpool and dense out of it")
    if x.ndim == 2:
        proj = nn.Linear(x.shape[1], y.shape[1], bias=not uses_bn)
        return nn.Sequential(proj, nn.BatchNorm1d(y.shape[1])) if uses_bn else proj
    (hi, wi), (ho, wo) = x.shape[2:], y.shape[2:]
    # a 1x1 conv with stride s maps H to ceil(H / s)
    strides = [s for s in range(1, hi + 1) if -(-hi // s) == ho and -(-wi // s) == wo]
    if not strides:
        raise CnnfitError(f"{at} turns the {hi}x{wi} map into {ho}x{wo}, which no strided 1x1 shortcut matches; "
                          f"keep padding: same inside the block")
    proj = nn.Conv2d(x.shape[1], y.shape[1], 1, strides[0], bias=not uses_bn)
    return nn.Sequential(proj, nn.BatchNorm2d(y.shape[1])) if uses_bn else proj


@torch.no_grad()
def _probe(module: nn.Module, x: torch.Tensor, layer: _Layer, src: str, imgsz: int) -> torch.Tensor:
    """The layer's output on the probe; an empty map is reported with the fix rather than as a torch error."""
    module.eval()  # batch 1: BatchNorm1d refuses to train on a single value per channel
    try:
        y = module(x)
    except RuntimeError as exc:
        if x.ndim == 4 and "size" in str(exc).lower():
            raise _empty_map(layer, x, src, imgsz) from None
        raise CnnfitError(f"{src}: layer {layer.where} ({layer.kind}) fails on a {_shape(x)} input "
                          f"({str(exc).splitlines()[0]}); check its arguments") from None
    finally:
        module.train()
    if y.numel() == 0:
        raise _empty_map(layer, x, src, imgsz)
    return y


def _empty_map(layer: _Layer, x: torch.Tensor, src: str, imgsz: int) -> CnnfitError:
    fix = {"conv": "use padding: same or a smaller kernel or stride, or raise imgsz",
           "pool": "remove a pool or raise imgsz"}.get(layer.kind, "raise imgsz")
    return CnnfitError(f"{src}: layer {layer.where} ({layer.kind}) makes the {x.shape[2]}x{x.shape[3]} map empty "
                       f"at imgsz={imgsz}; {fix}")


def _shape(x: torch.Tensor) -> str:
    return "x".join(str(n) for n in x.shape[1:])
