"""How the run report reads and writes numbers, so that every figure on the page can be traced to its file.

Numbers from metrics.json
-------------------------
Every number taken from metrics.json is written by `metric_span` as
``<span class="num" data-metric="PATH">TEXT</span>``, so a test can check each one against the file.

PATH (`metric_path`): the keys and list indices from the top of metrics.json down to the value, joined by ".".
In a key, "~" is written "~0" and "." is written "~1" (JSON Pointer's escaping, RFC 6901, with "." in place of
"/"); a list index is its decimal number. Spaces and other characters stay as they are (the attribute is
HTML-escaped). `lookup_metric(metrics, PATH)` reads the value back, e.g. ``per_class.cat~1big.f1`` is
``metrics["per_class"]["cat.big"]["f1"]`` and ``confusion_matrix.2.0`` is ``metrics["confusion_matrix"][2][0]``.

TEXT (`format_metric(value, PATH)`), by the value's JSON type:
  - null: "n/a"; true/false: "yes"/"no"
  - integer: thousands separators, "12,345"
  - float: "nan", "inf" or "-inf" when not finite; one decimal with thousands separators when the last key of
    PATH ends in "seconds" ("1,234.5"); three-decimal scientific when 0 < |x| < 0.001 or |x| >= 1e6
    ("1.234e-05"); otherwise four decimals ("0.9157")
  - anything else: str(value)

Numbers from the other files (history.csv, data_report.json, config.yaml, predictions.csv) are plain text
(`plain_text`).
"""

from __future__ import annotations

import math
from typing import Any

from cnnfit.report.html import esc

_NAMES = {"f1": "F1", "roc_auc": "ROC AUC", "pr_auc": "PR AUC", "ece": "ECE", "mae": "MAE", "rmse": "RMSE",
          "r2": "R²", "val_acc": "val accuracy", "val_macro_f1": "val macro F1", "val_r2": "val R²",
          "val_f1": "val micro F1", "val_mae": "val MAE", "val_loss": "val loss", "lr": "LR"}


# --- numbers from metrics.json: one path rule, one format rule -------------------------------------------

def metric_path(keys: tuple | list) -> str:
    """The data-metric attribute of the value at metrics[k0][k1]...: keys escaped ~ -> ~0, . -> ~1, joined by '.'."""
    return ".".join(str(k).replace("~", "~0").replace(".", "~1") for k in keys)


def lookup_metric(metrics: Any, path: str) -> Any:
    """The value a data-metric path names (list indices as numbers); KeyError/IndexError when there is none."""
    value = metrics
    for part in path.split("."):
        key = part.replace("~1", ".").replace("~0", "~")
        value = value[int(key)] if isinstance(value, list) else value[key]
    return value


def format_metric(value: Any, path: str = "") -> str:
    """The one way a metrics.json value is written in the report (the rule is in the module docstring)."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        last = path.rsplit(".", 1)[-1].replace("~1", ".").replace("~0", "~")
        if last.endswith("seconds"):
            return f"{value:,.1f}"
        if 0 < abs(value) < 1e-3 or abs(value) >= 1e6:
            return f"{value:.3e}"
        return f"{value:.4f}"
    return str(value)


def metric_span(value: Any, keys: tuple | list) -> str:
    """The value at metrics[k0][k1]... as the page writes it: formatted, and tagged with its path."""
    path = metric_path(keys)
    return f'<span class="num" data-metric="{esc(path)}">{esc(format_metric(value, path))}</span>'


_MISSING = object()


class Metrics:
    """metrics.json with lookups that never raise: `num` gives the value's span, or '' when it is absent."""

    def __init__(self, data: dict):
        self.data = data

    def _walk(self, keys: tuple) -> Any:
        value = self.data
        for k in keys:
            if isinstance(value, dict) and k in value:
                value = value[k]
            elif isinstance(value, list) and isinstance(k, int) and 0 <= k < len(value):
                value = value[k]
            else:
                return _MISSING
        return value

    def get(self, *keys: Any) -> Any:
        value = self._walk(keys)
        return None if value is _MISSING else value

    def has(self, *keys: Any) -> bool:
        return self._walk(keys) is not _MISSING

    def num(self, *keys: Any) -> str:
        return metric_span(value, keys) if is_number(value := self._walk(keys)) else ""  # _MISSING is no number


def is_number(v: Any) -> bool:
    """A JSON number or null (a metric that could not be computed), not a bool."""
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


# --- numbers and names from the other files ----------------------------------------------------------------

def metric_label(key: str) -> str:
    """How the page names a metrics.json or history.csv key."""
    return _NAMES.get(key, key.replace("_", " "))


def plain_text(value: Any) -> str:
    """A number from a file other than metrics.json as plain text, written as format_metric writes its own
    (integers with thousands separators, other numbers as floats); anything else escaped as it is."""
    if isinstance(value, bool) or value is None:
        return esc(value)
    if isinstance(value, int):
        return format_metric(value)
    try:
        x = float(value)
    except (TypeError, ValueError):
        return esc(value)
    text = str(value).strip()
    return format_metric(int(text) if x.is_integer() and text.lstrip("-").isdigit() else x)


def to_float(text: str) -> float:
    """A CSV cell as a float; nan when it is not a number."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return float("nan")


__all__ = ["Metrics", "format_metric", "is_number", "lookup_metric", "metric_label", "metric_path", "metric_span",
           "plain_text", "to_float"]
