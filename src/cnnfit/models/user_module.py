"""A user's own model, `model=pkg.mod:Class` (or a factory function): imported, and called with whichever of
num_classes, in_chans and imgsz its signature names, plus the model options; through **kwargs it gets num_classes
only (as torchvision's builders take it). It must return an nn.Module; a `.head` Linear is optional.

A name the user typed (the command line, a Python call) is imported with the working directory on sys.path, as
`python -m` does, and is remembered as trusted for this process: a checkpoint of the run it trains may name it
again. A name read from a file is imported only when the user trusts that file (`trust_code=true`), and never
from the working directory: a downloaded run must not run a module that sits beside it."""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from typing import Any, Callable

import torch.nn as nn

from cnnfit.errors import CnnfitError, suggest


_TYPED: set[str] = set()  # names the user typed in this process: their code has run already


def is_typed(name: str) -> bool:
    """Whether the user named `name` themselves in this process (so a file naming it runs no new code)."""
    return name in _TYPED


def load(name: str, *, typed: bool = True) -> Callable[..., Any]:
    """The class or factory that `pkg.mod:Attr` names. `typed`: the user wrote the name (not a file), so the working
    directory goes on sys.path and the name is remembered as trusted."""
    module_name, _, attr = name.partition(":")
    if not module_name or not attr or ":" in attr:
        raise CnnfitError(f"model '{name}' must read module:attribute, e.g. mynets:Net for class Net in mynets.py")
    if module_name.endswith(".py") or "/" in module_name or "\\" in module_name:
        dotted = module_name.removesuffix(".py").replace("\\", "/").strip("/").replace("/", ".")
        raise CnnfitError(f"model '{name}' names a file; write its module as a dotted name, e.g. {dotted}:{attr}, "
                          f"and run from the folder that holds it")
    cwd = os.getcwd()
    if typed and cwd not in sys.path:
        sys.path.insert(0, cwd)  # as `python -m` does: the user's modules sit beside their config
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            where, fix = ((f"in {cwd} or the installed packages", "run from the folder that holds it") if typed else
                          ("in the installed packages", "install it or add its folder to PYTHONPATH"))
            raise CnnfitError(f"model '{name}': no module named '{module_name}' {where}; {fix}, "
                              f"or fix the name") from None
        raise CnnfitError(f"model '{name}': {module_name} imports '{exc.name}', which is not installed; "
                          f"install it") from None
    except Exception as exc:  # a user's module may raise anything at import
        raise CnnfitError(f"model '{name}': importing {module_name} failed ({type(exc).__name__}: "
                          f"{_first_line(exc)}); fix the module") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            public = [n for n in dir(obj) if not n.startswith("_")]
            hint = suggest(part, public)
            own = [n for n in public if _defines_model(getattr(obj, n), module.__name__)]
            listing = f"it defines: {', '.join(own[:12])}" if own else "name a class or function it defines"
            raise CnnfitError(f"model '{name}': {module_name} has no attribute '{attr}'; {hint}{listing}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise CnnfitError(f"model '{name}': {attr} is of type {type(obj).__name__}, not a class or function; "
                          f"name an nn.Module class or a function that returns one")
    if typed:
        _TYPED.add(name)
    return obj


def _defines_model(obj: Any, module_name: str) -> bool:
    """An nn.Module class or a function, written in that module (not imported into it)."""
    is_model = inspect.isfunction(obj) or (inspect.isclass(obj) and issubclass(obj, nn.Module))
    return is_model and getattr(obj, "__module__", None) == module_name


def params_of(fn: Callable[..., Any]) -> tuple[list[str], bool]:
    """The keyword names `fn` takes, and whether it also takes **kwargs."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # builtins and some C extensions have no signature
        return [], True
    named = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return named, any(p.kind is p.VAR_KEYWORD for p in params)


def build(name: str, *, num_classes: int, in_chans: int, imgsz: int | None, options: dict,
          typed: bool = True) -> nn.Module:
    """The model `name` builds for these sizes and options; `typed` as in `load`."""
    fn = load(name, typed=typed)
    named, var_kw = params_of(fn)
    kwargs = {k: v for k, v in (("num_classes", num_classes), ("in_chans", in_chans), ("imgsz", imgsz))
              if k in named and v is not None}
    if "num_classes" not in named and var_kw:
        kwargs["num_classes"] = num_classes  # torchvision's builders take it through **kwargs
    unknown = [] if var_kw else sorted(set(options) - set(named))
    if unknown:
        takes = [k for k in named if k not in ("num_classes", "in_chans", "imgsz")]
        raise CnnfitError(f"model '{name}' has no option {', '.join(unknown)}; it takes: {', '.join(takes) or 'none'}")
    kwargs.update(options)
    try:
        model = fn(**kwargs)
    except CnnfitError:
        raise
    except Exception as exc:  # a user's constructor may raise anything
        args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        raise CnnfitError(f"model '{name}' failed to build as {name.partition(':')[2]}({args}): "
                          f"{type(exc).__name__}: {_first_line(exc)}; fix the constructor or the options") from None
    if not isinstance(model, nn.Module):
        raise CnnfitError(f"model '{name}' returned type {type(model).__name__}, not a torch.nn.Module; "
                          f"return the model itself")
    return model


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no message"
