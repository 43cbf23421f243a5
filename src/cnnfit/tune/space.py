"""The search space: config key -> distribution, written the way people say it: loguniform(1e-4, 1e-1),
uniform(0, 0.5), int(16, 128), choice([sgd, adamw]). Parsed once, checked against the config before any trial."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Any

import yaml

from cnnfit.config import SHORT_KEYS, VALID_KEYS
from cnnfit.errors import CnnfitError

_FORM = re.compile(r"^\s*(loguniform|uniform|int|choice)\s*\((.*)\)\s*$", re.S)
_EXAMPLE = "loguniform(1e-4, 1e-1), uniform(0, 0.5), int(16, 128) or choice([sgd, adamw])"


@dataclass(frozen=True)
class Dist:
    kind: str  # loguniform | uniform | int | choice
    args: tuple  # (low, high) or the choices

    def suggest(self, trial: Any, name: str) -> Any:
        """The value an Optuna trial draws (or, for an enqueued grid point, is given) for `name`."""
        if self.kind == "choice":
            return trial.suggest_categorical(name, list(self.args))
        if self.kind == "int":
            return trial.suggest_int(name, *self.args)
        return trial.suggest_float(name, *self.args, log=self.kind == "loguniform")

    def grid(self) -> list[Any]:
        if self.kind == "choice":
            return list(self.args)
        if self.kind == "int" and self.args[1] - self.args[0] < 1000:
            return list(range(self.args[0], self.args[1] + 1))
        raise CnnfitError(f"sampler=grid needs a finite list of values, not {self.kind}{self.args}; "
                          f"write choice([...]) or a small int(a, b)")


def parse_dist(key: str, spec: str | list) -> Dist:
    if isinstance(spec, list):  # a YAML list is a choice
        return _choice(key, spec)
    match = _FORM.match(str(spec))
    if not match:
        raise CnnfitError(f"space.{key}={spec!r} is not a distribution; write {_EXAMPLE}")
    kind, inner = match.groups()
    try:
        args = [_scalar(a) for a in yaml.safe_load(f"[{inner}]")]
    except (yaml.YAMLError, TypeError):
        raise CnnfitError(f"space.{key}: cannot read the arguments of {spec!r}; write {_EXAMPLE}") from None
    if kind == "choice":
        return _choice(key, args[0] if len(args) == 1 and isinstance(args[0], list) else args)
    if len(args) != 2 or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
        raise CnnfitError(f"space.{key}: {kind} takes two numbers (low, high), got {inner.strip()!r}")
    low, high = args
    if not low < high:
        raise CnnfitError(f"space.{key}: {kind}({low}, {high}) needs low < high")
    if kind == "loguniform" and low <= 0:
        raise CnnfitError(f"space.{key}: loguniform needs a positive low end, got {low}; use uniform for 0")
    if kind == "int":
        if not all(float(a).is_integer() for a in args):
            raise CnnfitError(f"space.{key}: int takes whole numbers, got {inner.strip()!r}")
        return Dist("int", (int(low), int(high)))
    return Dist(kind, (float(low), float(high)))


def _scalar(value: Any) -> Any:
    """YAML 1.1 reads 1e-4 (no dot) as a string; people mean the number."""
    if isinstance(value, list):
        return [_scalar(v) for v in value]
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _choice(key: str, values: list) -> Dist:
    if not values:
        raise CnnfitError(f"space.{key}: choice needs at least one value, e.g. choice([sgd, adamw])")
    if any(isinstance(v, (list, dict)) for v in values):
        raise CnnfitError(f"space.{key}: choice values must be plain numbers, strings or booleans")
    return Dist("choice", tuple(values))


# searched when no space is given: the three settings that matter most for any model, around AdamW's defaults
DEFAULT_SPACE = {"optim.lr": "loguniform(1e-4, 1e-2)", "optim.weight_decay": "loguniform(1e-4, 0.3)",
                 "train.batch": "choice([32, 64, 128])"}


def parse_space(space: dict[str, str | list]) -> dict[str, Dist]:
    """{dotted config key: Dist}; short keys (lr, batch, model) become their dotted names; empty: DEFAULT_SPACE."""
    space = space or DEFAULT_SPACE
    out: dict[str, Dist] = {}
    for key, spec in space.items():
        full = SHORT_KEYS.get(key, key)
        if full not in VALID_KEYS or full.startswith(("tune.", "resume.")) or full in ("name", "project"):
            raise CnnfitError(f"space.{key}: '{key}' is not a setting a trial can vary; use a config key such as "
                              "lr, batch, optim, model, model.dropout, optim.weight_decay or aug.shift")
        out[full] = parse_dist(key, spec)
    return out


def contains(dist: Dist, value: Any) -> bool:
    if dist.kind == "choice":
        return value in dist.args
    return isinstance(value, (int, float)) and not isinstance(value, bool) and dist.args[0] <= value <= dist.args[1]


def grid_points(space: dict[str, Dist]) -> list[dict[str, Any]]:
    """Every combination, in a fixed order: what sampler=grid runs, each exactly once."""
    keys = list(space)
    return [dict(zip(keys, values)) for values in itertools.product(*(space[k].grid() for k in keys))]


__all__ = ["DEFAULT_SPACE", "Dist", "contains", "grid_points", "parse_dist", "parse_space"]
