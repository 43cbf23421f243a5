"""report.html: one self-contained page per run that answers a reviewer's questions: what was trained on what, how
well it scores, where it fails, what the data looked like, and with which settings and software.

The page reads only files in the run directory (metrics.json, config.yaml, data_report.json, history.csv,
split.json, skipped.txt, predictions.csv, plots/*.png and, for older runs, the PNGs in the run directory itself);
any may be missing, and a section is written only when one of its inputs exists. Images are embedded as
data:image/png;base64 URIs and the CSS is inline: no external resource, no JavaScript.

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

Numbers from the other files (history.csv, data_report.json, config.yaml, predictions.csv) are plain text.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import yaml
from PIL import Image

from cnnfit.files import write_atomic

# title and how-to-read caption of each plot that train and evaluate write; any other PNG in plots/ goes into
# "More plots"
_CAPTIONS = {
    "curves.png": ("Loss and score per epoch", "Training and validation loss and score per epoch, the best epoch "
                   "(whose weights were tested) marked; validation falling behind training means overfitting."),
    "lr.png": ("Learning rate per step", "The learning rate the schedule set at every optimizer step; "
               "warmup rises, decay falls."),
    "regression.png": ("Predicted against true target", "Each dot is a test image, predicted against true "
                       "target; dots on the diagonal are exact, the spread around it is the error."),
    "per_class_f1.png": ("F1 per class", "Test F1 of each class; the shortest bars are the classes the model "
                         "finds hardest."),
    "confusion.png": ("Confusion matrix, counts", "Test images by true class (rows) and predicted class "
                      "(columns); the diagonal is correct, any other cell counts one kind of mix-up."),
    "confusion_normalized.png": ("Confusion matrix, row-normalized", "Each row divided by its class's test "
                                 "images, so the diagonal is each class's recall and rows compare at any size."),
    "roc.png": ("ROC curves", "True-positive against false-positive rate per class (one against the rest) as "
                "the threshold moves; curves near the top-left corner are good, the diagonal is chance."),
    "pr.png": ("Precision-recall curves", "Precision against recall per class as the threshold moves; curves "
               "near the top-right corner are good, a flat line at the class's share is chance."),
    "reliability.png": ("Reliability diagram", "Accuracy against predicted confidence in bins, before and after "
                        "temperature scaling; a calibrated model lies on the diagonal, below it is overconfident."),
    "wrong.png": ("Most confidently wrong test images", "The test images the model got wrong with the highest "
                  "confidence, true and predicted class above each; look for wrong labels and look-alike classes."),
    "samples.png": ("Augmented training samples", "Training images after augmentation, as the model sees them; "
                    "check that each still shows its label and the augmentation is not too strong."),
}

_SECTIONS = (("summary", "Summary"), ("metrics", "Metrics"), ("curves", "Training curves"),
             ("per-class", "Per class"), ("confusion", "Confusion"), ("roc", "ROC and PR"),
             ("calibration", "Calibration"), ("errors", "Errors"), ("data", "Data"), ("config", "Config"),
             ("environment", "Environment"), ("timing", "Timing"), ("more-plots", "More plots"))

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
    path = metric_path(keys)
    return f'<span class="num" data-metric="{_esc(path)}">{_esc(format_metric(value, path))}</span>'


_MISSING = object()


class _Metrics:
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
        return metric_span(self.get(*keys), keys) if self.has(*keys) and _is_number(self.get(*keys)) else ""


def _is_number(v: Any) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


# --- reading the run directory: every reader returns None for a missing or unreadable file --------------

class _Run:
    def __init__(self, run_dir: Path):
        self.dir = run_dir
        self.problems: list[str] = []  # files that exist but could not be read, said at the top of the page
        metrics = self._json("metrics.json")
        if metrics is not None and not isinstance(metrics, dict):
            self.problems.append(f"metrics.json: a JSON {type(metrics).__name__}, not an object")
        self.metrics = _Metrics(metrics if isinstance(metrics, dict) else {})
        self.config = self._yaml("config.yaml")
        self.data_report = self._json("data_report.json")
        self.split = self._json("split.json")
        self.history = self._csv("history.csv")
        self.predictions = self._csv("predictions.csv")
        self.skipped_txt = self._text("skipped.txt")
        self.plots = self._plots()

    def _text(self, name: str) -> str | None:
        path = self.dir / name
        if not path.is_file():
            return None
        try:
            return path.read_text(errors="replace")
        except OSError as e:
            self.problems.append(f"{name}: {e}")
            return None

    def _json(self, name: str) -> Any:
        text = self._text(name)
        try:
            return None if text is None else json.loads(text)
        except ValueError as e:
            self.problems.append(f"{name}: {e}")
            return None

    def _yaml(self, name: str) -> Any:
        text = self._text(name)
        if text is None:
            return None
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as e:
            self.problems.append(f"{name}: {str(e).splitlines()[0]}")
            return None

    def _csv(self, name: str) -> list[dict[str, str]] | None:
        text = self._text(name)
        try:
            return None if text is None else list(csv.DictReader(io.StringIO(text)))
        except csv.Error as e:
            self.problems.append(f"{name}: {e}")
            return None

    def _plots(self) -> dict[str, tuple[str, int, int]]:
        """name -> (data URI, width, height) of every PNG that opens as one; plots/ first, then the run root."""
        found: dict[str, tuple[str, int, int]] = {}
        folder = self.dir / "plots"
        names = sorted(p.name for p in folder.glob("*.png")) if folder.is_dir() else []
        # runs from before plots/ keep curves.png, confusion.png and samples.png in the run directory itself
        candidates = [folder / n for n in names] + [self.dir / n for n in _CAPTIONS]
        for path in candidates:
            if path.name in found or not path.is_file():
                continue
            try:
                data = path.read_bytes()
                with Image.open(io.BytesIO(data)) as im:
                    if im.format != "PNG":
                        raise ValueError(f"a {im.format} file, not a PNG")
                    im.verify()  # a truncated PNG fails here, not as a broken image in the page
                    width, height = im.size
            except Exception as e:
                self.problems.append(f"{path.relative_to(self.dir)}: {e}")
                continue
            found[path.name] = ("data:image/png;base64," + base64.b64encode(data).decode("ascii"), width, height)
        return found

    @property
    def task(self) -> str:
        return (self.metrics.get("task") or _dig(self.config, "data", "task") or
                (self.data_report or {}).get("task") or "classify")


def _dig(d: Any, *keys: str) -> Any:
    for k in keys:
        d = d.get(k) if isinstance(d, dict) else None
    return d


# --- HTML pieces ----------------------------------------------------------------------------------------

def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _figure(run: _Run, name: str) -> str:
    if name not in run.plots:
        return ""
    uri, width, height = run.plots[name]
    title, how = _CAPTIONS.get(name, (name.removesuffix(".png").replace("_", " "),
                                      "A further plot the run wrote; its title and axes say what it shows."))
    wide = ' class="wide"' if width >= 1.6 * height else ""  # curves, bar charts, image grids: a row of their own
    return (f'<figure{wide}><img src="{uri}" width="{width}" height="{height}" alt="{_esc(title)}: {_esc(how)}">'
            f'<figcaption><b>{_esc(title)}.</b> {_esc(how)}</figcaption></figure>')


def _figures(run: _Run, *names: str) -> str:
    shown = [f for f in (_figure(run, n) for n in names) if f]
    return f'<div class="figs">{"".join(shown)}</div>' if shown else ""


def _tile(label: str, value: str, note: str = "") -> str:
    if not value:
        return ""
    small = f'<div class="t">{_esc(note)}</div>' if note else ""
    return f'<div class="tile"><div class="k">{_esc(label)}</div><div class="v">{value}</div>{small}</div>'


def _tiles(tiles: list[str]) -> str:
    tiles = [t for t in tiles if t]
    return f'<div class="tiles">{"".join(tiles)}</div>' if tiles else ""


def _table(head: list[str], rows: list[list[str]], numeric: set[int] | None = None, cls: str = "") -> str:
    """A table in a horizontally scrolling box; cells are HTML already, columns in `numeric` right-aligned."""
    if not rows:
        return ""
    numeric = numeric or set()
    align = lambda i: ' class="n"' if i in numeric else ""  # noqa: E731
    th = "".join(f"<th{align(i)} scope=\"col\">{h}</th>" for i, h in enumerate(head))
    body = "".join("<tr>" + "".join(f"<td{align(i)}>{c}</td>" for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f'<div class="scroll"><table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table></div>'


def _kv(rows: list[tuple[str, str]]) -> str:
    """Two-column label/value table; rows whose value is empty are left out."""
    rows = [(k, v) for k, v in rows if v != ""]
    if not rows:
        return ""
    # numbers right-aligned where every value is one; beside text they read better on the left
    align = ' class="n"' if all(_is_number_cell(v) for _, v in rows) else ""
    body = "".join(f'<tr><th scope="row">{_esc(k)}</th><td{align}>{v}</td></tr>' for k, v in rows)
    return f'<div class="scroll"><table class="kv"><tbody>{body}</tbody></table></div>'


_NUMBER = re.compile(r"-?[\d,]+(\.\d+)?(e[-+]\d+)?|n/a|nan|-?inf")


def _is_number_cell(cell: str) -> bool:
    """A cell that holds one number and nothing else."""
    return bool(cell.startswith('<span class="num"') and cell.count("<span") == 1 or _NUMBER.fullmatch(cell))


def _note(text: str) -> str:
    return f'<p class="note">{_esc(text)}</p>'


def _name(key: str) -> str:
    return _NAMES.get(key, key.replace("_", " "))


def _plain(value: Any) -> str:
    """A number from a file other than metrics.json as plain text, written as format_metric writes its own
    (integers with thousands separators, other numbers as floats); anything else escaped as it is."""
    if isinstance(value, bool) or value is None:
        return _esc(value)
    if isinstance(value, int):
        return format_metric(value)
    try:
        x = float(value)
    except (TypeError, ValueError):
        return _esc(value)
    text = str(value).strip()
    if x.is_integer() and text.lstrip("-").isdigit():
        return format_metric(int(text))
    return format_metric(x)


# --- the sections, each a function of the run returning its inner HTML ('' when it has nothing to show) ----

def _summary(run: _Run) -> str:
    m, cfg = run.metrics, run.config or {}
    source = m.get("dataset") or _dig(cfg, "data", "source")
    images = (run.data_report or {}).get("images")
    data = _esc(source) if source else ""
    if images is not None:
        data += f" ({_plain(images)} images)" if data else f"{_plain(images)} images"
    model = m.get("model") or _dig(cfg, "model", "name")
    model_html = _esc(model) if model else ""
    if m.has("params"):
        model_html += f" · {m.num('params')} parameters"
    monitor = _dig(cfg, "train", "monitor")
    best = m.num("val", monitor) if isinstance(monitor, str) else ""
    headline = {"classify": ("test accuracy", ("accuracy",)), "multilabel": ("test micro F1", ("micro", "f1")),
                "regress": ("test R²", ("r2",))}.get(run.task, ("", ()))
    epochs_run = len(run.history) if run.history else None
    planned = _dig(cfg, "train", "epochs")
    epochs = ""
    if m.has("best_epoch"):
        epochs = m.num("best_epoch")
        if epochs_run is not None or planned is not None:
            epochs += " of " + _plain(epochs_run if epochs_run is not None else planned)
    stop = m.get("stop")
    stop_text = _esc(stop) if stop else ("ran every epoch" if m.has("stop") else "")
    device = m.get("environment", "device") or _dig(cfg, "train", "device")
    gpu = m.get("environment", "gpu")
    written = datetime.now().astimezone().isoformat(timespec="seconds")
    tiles = [_tile(headline[0], m.num(*headline[1])) if headline[1] else "",
             _tile(f"best {_name(monitor)}" if best else "", best, "the monitored score"),
             _tile("best epoch", epochs),
             _tile("train time (s)", m.num("timings", "train_seconds"),
                   f"since the resume at step {resumed}" if (resumed := m.get("timings", "resumed_at_step")) else ""),
             _tile("test images", m.num("num_images"))]
    rows = [("run", f"<code>{_esc(run.dir.name)}</code>"), ("task", _esc(run.task)), ("data", data),
            ("model", model_html), ("stopped", stop_text),
            ("device", _esc(device) + (f" ({_esc(gpu)})" if gpu else "") if device else ""),
            ("report written", _esc(written))]
    problems = "".join(f'<p class="problem">Could not read {_esc(p)}</p>' for p in run.problems)
    if not m.data:
        problems += _note("No metrics.json: the run did not finish evaluating; the sections below show what it wrote.")
    return problems + _tiles(tiles) + _kv(rows)


def _numbers_of(m: _Metrics, key: str, label: str) -> list[str]:
    """Tiles for metrics[key]: one for a number, one per numeric entry for a dict (top_k, roc_auc, ...)."""
    value = m.get(key)
    if _is_number(value) and m.has(key):
        return [_tile(label, m.num(key))]
    if isinstance(value, dict):
        return [_tile(f"{label} {sub}" if key != "top_k" else f"top-{sub} accuracy", m.num(key, sub))
                for sub, v in value.items() if _is_number(v)]
    return []


_HEADLINES = {
    "classify": [("accuracy", "accuracy"), ("balanced_accuracy", "balanced accuracy"), ("top_k", "top-k"),
                 ("log_loss", "log loss"), ("loss", "loss"), ("ece", "ECE"), ("roc_auc", "ROC AUC"),
                 ("pr_auc", "PR AUC"), ("num_images", "test images")],
    "multilabel": [("subset_accuracy", "subset accuracy"), ("hamming_loss", "Hamming loss"),
                   ("macro_roc_auc", "macro ROC AUC"), ("log_loss", "log loss"), ("loss", "loss"),
                   ("num_images", "test images")],
    "regress": [("mae", "MAE"), ("rmse", "RMSE"), ("r2", "R²"), ("max_error", "max error"),
                ("num_images", "test images")],
}
_AVERAGES = ("micro", "macro", "weighted", "samples")
_SHOWN = {"task", "split", "per_class", "per_label", "confusion_matrix", "confusion_normalized", "classes", "labels",
          "calibration", "tta", "best_epoch", "val", "timings", "stop", "environment", "dataset", "model", "params",
          "thresholds", "thresholds_from", "repeats", *_AVERAGES, *(k for v in _HEADLINES.values() for k, _ in v)}


def _metrics(run: _Run) -> str:
    m = run.metrics
    if not m.data:
        return ""
    tiles = [t for key, label in _HEADLINES.get(run.task, []) for t in _numbers_of(m, key, label)]
    out = _tiles(tiles) + _figures(run, "regression.png")
    notes = []
    if m.get("split"):
        notes.append(f"split: {m.get('split')}")
    if m.get("dataset"):
        notes.append(f"scored on another dataset: {m.get('dataset')}")
    if m.get("tta"):
        notes.append(f"test-time augmentation: {m.get('tta')}")
    if m.get("thresholds_from"):
        notes.append(f"label thresholds from {m.get('thresholds_from')}")
    out += _note("; ".join(notes)) if notes else ""
    averages = [a for a in _AVERAGES if isinstance(m.get(a), dict)]
    if averages:
        cols = list(dict.fromkeys(k for a in averages for k, v in m.get(a).items() if _is_number(v)))
        rows = [[_esc(a)] + [m.num(a, c) if m.has(a, c) else "" for c in cols] for a in averages]
        out += "<h3>Averages</h3>" + _table(["average"] + [_esc(_name(c)) for c in cols], rows,
                                            set(range(1, len(cols) + 1)))
        out += _note("micro: over every decision pooled; macro: the plain mean over classes; weighted: the mean "
                     "weighted by each class's test images" + ("; samples: the mean over images"
                                                                 if "samples" in averages else "") + ".")
    out += _calibration_table(m)
    val = m.get("val")
    if isinstance(val, dict):
        rows = [(_name(k), m.num("val", k)) for k, v in val.items() if _is_number(v) and v == v]  # v == v: not nan
        scored = [v for k, v in val.items() if k.startswith("val_") and isinstance(v, float)]
        unscored = bool(scored) and all(math.isnan(v) for v in scored)  # merge_val: val was trained on
        out += "<h3>Validation at the best epoch</h3>" + (_note(
            "val not scored: its images were trained on (data.merge_val); the test split is the held-out measure.")
            if unscored else "") + _kv(rows)
    other = [(k, v) for k, v in m.data.items() if k not in _SHOWN]
    rows = [(_name(k), m.num(k)) for k, v in other if _is_number(v)]
    rows += [(f"{_name(k)} {sub}", m.num(k, sub)) for k, v in other if isinstance(v, dict)
             for sub, x in v.items() if _is_number(x)]
    if rows:
        out += "<h3>Other figures</h3>" + _kv(rows)
    return out


def _calibration_table(m: _Metrics) -> str:
    cal = m.get("calibration")
    if not isinstance(cal, dict):
        return ""
    rows = [[_esc(label), m.num("calibration", f"{key}_before"), m.num("calibration", f"{key}_after")]
            for key, label in (("ece", "ECE"), ("log_loss", "log loss"))
            if f"{key}_before" in cal or f"{key}_after" in cal]
    head = f"<h3>Calibration (temperature {m.num('calibration', 'temperature')}"
    head += f", fitted on {_esc(cal['fitted_on'])})</h3>" if cal.get("fitted_on") else ")</h3>"
    return head + _table(["", "before", "after"], rows, {1, 2})


def _curves(run: _Run) -> str:
    out = _figures(run, "curves.png", "lr.png")
    if run.history:
        cols = [c for c in run.history[0] if any(r.get(c, "") != "nan" for r in run.history)]  # unscored val: out
        rows = [[_plain(r.get(c, "")) for c in cols] for r in run.history]
        attr = "" if out else " open"
        out += (f"<details{attr}><summary>Per epoch, from history.csv ({len(rows)} epochs)</summary>"
                + _table([_esc(_name(c)) for c in cols], rows, set(range(len(cols)))) + "</details>")
    return out


_PER_CLASS_COLS = ("precision", "recall", "f1", "support", "roc_auc", "pr_auc", "threshold")


def _per_class(run: _Run) -> str:
    m = run.metrics
    key = "per_label" if isinstance(m.get("per_label"), dict) else "per_class"
    per = m.get(key)
    out = ""
    if isinstance(per, dict) and per:
        found = {k for v in per.values() if isinstance(v, dict) for k, x in v.items() if _is_number(x)}
        cols = [c for c in _PER_CLASS_COLS if c in found] + sorted(found - set(_PER_CLASS_COLS))
        rows = []
        for name, v in per.items():
            cells = [_esc(name)]
            for c in cols:
                cell = m.num(key, name, c)
                x = v.get(c) if isinstance(v, dict) else None
                if c == "f1" and isinstance(x, (int, float)) and cell:  # a bar behind the number, length = F1
                    cell = f'<span class="bar" style="--v:{max(0.0, min(1.0, float(x))):.3f}">{cell}</span>'
                cells.append(cell)
            rows.append(cells)
        what = "label" if key == "per_label" else "class"
        out += _table([what] + [_esc(_name(c)) for c in cols], rows, set(range(1, len(cols) + 1)), "perclass")
        out += _note(f"One row per {what}, on the test split; support is the number of test images "
                     f"{'carrying the label' if what == 'label' else 'of the class'}.")
    return out + _figures(run, "per_class_f1.png")


def _confusion(run: _Run) -> str:
    m = run.metrics
    out = _figures(run, "confusion.png", "confusion_normalized.png")
    cm, classes = m.get("confusion_matrix"), m.get("classes")
    if isinstance(cm, list) and cm and isinstance(classes, list) and len(classes) == len(cm) <= 20:
        head = ["true \\ predicted"] + [_esc(c) for c in classes]
        rows = [[f"<b>{_esc(classes[i])}</b>"] + [m.num("confusion_matrix", i, j) for j in range(len(row))]
                for i, row in enumerate(cm) if isinstance(row, list)]
        attr = "" if out else " open"
        out += (f"<details{attr}><summary>The counts as a table (rows: true class)</summary>"
                + _table(head, rows, set(range(1, len(classes) + 1)), "cm") + "</details>")
    return out


def _roc(run: _Run) -> str:
    m = run.metrics
    if not ({"roc.png", "pr.png"} & set(run.plots)):
        return ""
    tiles = _numbers_of(m, "roc_auc", "ROC AUC") + _numbers_of(m, "pr_auc", "PR AUC")
    return _tiles(tiles) + _figures(run, "roc.png", "pr.png")


def _calibration(run: _Run) -> str:
    m = run.metrics
    cal = m.get("calibration")
    if "reliability.png" not in run.plots and not isinstance(cal, dict):
        return ""
    out = _tiles([_tile("ECE", m.num("ece"), "expected calibration error, test split"),
                  _tile("temperature", m.num("calibration", "temperature"), "logits divided by it")])
    if not isinstance(cal, dict):
        out += _note("No temperature was fitted (eval.calibrate=false): probabilities are the model's own.")
    return out + _figures(run, "reliability.png") + _calibration_table(m)


def _errors(run: _Run) -> str:
    out = _figures(run, "wrong.png")
    rows = run.predictions or []
    if run.task == "classify" and rows and {"true", "pred", "confidence"} <= set(rows[0]):
        wrong = [r for r in rows if r["true"] != r["pred"]]
        wrong.sort(key=lambda r: -_float(r["confidence"]))
        out += _note(f"{len(wrong):,} of {len(rows):,} test images are wrong (predictions.csv)"
                     + ("; the most confident of them:" if wrong else "."))
        out += _prediction_table(wrong[:12], ["true", "pred", "confidence"], ["true", "predicted", "confidence"])
    elif run.task == "regress" and rows and "error" in rows[0]:
        worst = sorted(rows, key=lambda r: -abs(_float(r["error"])))[:12]
        out += _note("The test images with the largest errors (predictions.csv):")
        out += _prediction_table(worst, ["true", "pred", "error"], ["true", "predicted", "error"])
    return out


def _prediction_table(rows: list[dict[str, str]], keys: list[str], head: list[str]) -> str:
    """Rows of predictions.csv: the image's index in the dataset, its file when it has one, then `keys`."""
    with_files = any(r.get("file") for r in rows)
    table = [[_esc(r.get("index", ""))] + ([f'<span class="path">{_esc(r.get("file", ""))}</span>'] if with_files
                                           else []) + [_plain(r.get(k, "")) for k in keys] for r in rows]
    first = 2 if with_files else 1
    return _table(["index"] + ["file"] * with_files + head, table, {0} | set(range(first, first + len(keys))))


def _float(text: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return float("nan")


def _data(run: _Run) -> str:
    rep, out = run.data_report if isinstance(run.data_report, dict) else {}, ""
    if not (rep or run.split or run.skipped_txt is not None):
        return _figures(run, "samples.png")
    counts = rep.get("counts") or {}
    facts = [("images", _plain(rep["images"]) if "images" in rep else ""),
             ("decoded shape", _esc(" x ".join(map(str, rep["shape"]))) if isinstance(rep.get("shape"), list) else "")]
    split_how = rep.get("split") or (run.split or {}).get("how")
    facts.append(("split", _esc(split_how) if split_how else ""))
    per_split = counts.get("per_split") or {k: len(v) for k, v in (run.split or {}).items() if isinstance(v, list)}
    if per_split:
        facts.append(("images per split", " / ".join(f"{_esc(k)} {_plain(v)}" for k, v in per_split.items())))
    imb = rep.get("imbalance")
    if isinstance(imb, dict) and imb.get("ratio") is not None:
        facts.append(("imbalance", f"{_esc(imb['ratio'])}x, largest '{_esc(imb.get('largest'))}' / smallest "
                      f"'{_esc(imb.get('smallest'))}' ({_esc(imb.get('split'))})"))
    files = rep.get("files")
    if isinstance(files, dict) and isinstance(files.get("width"), dict):
        w, h = files["width"], files["height"]
        facts.append(("file sizes (px)", f"{_plain(w.get('min'))}-{_plain(w.get('max'))} x {_plain(h.get('min'))}-"
                      f"{_plain(h.get('max'))}, median {_plain(w.get('median'))} x {_plain(h.get('median'))}"))
    if isinstance(files, dict) and isinstance(files.get("modes"), dict):
        facts.append(("colour modes", ", ".join(f"{_esc(k)} {_plain(v)}" for k, v in files["modes"].items())))
    out += _kv(facts)

    key = next((k for k in ("per_class", "per_label") if isinstance(counts.get(k), dict)), None)
    if key:
        per = counts[key]
        cols = list(dict.fromkeys(c for v in per.values() if isinstance(v, dict) for c in v))
        rows = [[_esc(name)] + [_plain(v.get(c, "")) for c in cols] for name, v in per.items() if isinstance(v, dict)]
        out += (f"<h3>Images per {'class' if key == 'per_class' else 'label'} and split</h3>"
                + _table([key.removeprefix("per_")] + [_esc(c) for c in cols], rows, set(range(1, len(cols) + 1))))
    target = counts.get("target")
    if isinstance(target, dict):
        rows = [[_esc(s)] + [_plain((v or {}).get(k, "")) for k in ("min", "max", "mean", "std")]
                for s, v in {"all": target, **(target.get("per_split") or {})}.items()]
        out += (f"<h3>Target '{_esc(target.get('name', ''))}'</h3>"
                + _table(["split", "min", "max", "mean", "std"], rows, {1, 2, 3, 4}))

    skipped = [(s.get("file", ""), s.get("reason", "")) for s in rep.get("skipped") or [] if isinstance(s, dict)]
    if not skipped and run.skipped_txt:
        skipped = [tuple((line.split("\t", 1) + [""])[:2]) for line in run.skipped_txt.splitlines() if line.strip()]
    out += f"<h3>Skipped files: {len(skipped):,}</h3>"
    if skipped:
        out += _table(["file", "reason"], [[f'<span class="path">{_esc(f)}</span>', _esc(why)]
                                           for f, why in skipped[:10]])
        if len(skipped) > 10:
            out += _note(f"... and {len(skipped) - 10:,} more (skipped.txt, data_report.json)")
    else:
        out += _note("Every file decoded." if rep or run.skipped_txt is not None else "Not recorded.")

    summary = rep.get("summary")
    if isinstance(summary, dict):
        dup = [("exact duplicate groups", "exact_groups"), ("extra exact copies", "exact_extra_copies"),
               ("near-duplicate pairs", "near_pairs"), ("across splits (leaks)", "leaks"),
               ("same image, different labels", "label_conflicts"), ("images to leave out", "to_drop")]
        out += "<h3>Duplicates</h3>" + _kv([(label, _plain(summary[k])) for label, k in dup if k in summary])
        how = rep.get("duplicates") or {}
        if how.get("exact_by"):
            out += _note(f"Exact: same {how['exact_by']}; near: {how.get('near_by', 'not searched')}.")
    findings = [f for f in rep.get("findings") or [] if isinstance(f, dict)]
    if findings:
        items = "".join(f'<li><span class="lvl {_esc(f.get("level", ""))}">{_esc(f.get("level", ""))}</span> '
                        f'<b>{_esc(f.get("kind", ""))}</b>: <span class="msg">{_esc(f.get("message", ""))}</span></li>'
                        for f in findings[:30])
        out += f'<h3>Findings: {len(findings):,}</h3><ul class="findings">{items}</ul>'
        if len(findings) > 30:
            out += _note(f"... and {len(findings) - 30:,} more in data_report.json")
    elif rep:
        out += _note("No findings: no duplicates, leaks, label conflicts or unreadable files.")
    return out + _figures(run, "samples.png")


def _config(run: _Run) -> str:
    cfg = run.config
    if cfg is None:
        text = run._text("config.yaml")
        return f"<pre>{_esc(text)}</pre>" if text else ""
    if not isinstance(cfg, dict):
        return f"<pre>{_esc(cfg)}</pre>"
    top = [(k, v) for k, v in cfg.items() if not isinstance(v, dict)]
    groups = ([("run", dict(top))] if top else []) + [(k, v) for k, v in cfg.items() if isinstance(v, dict)]
    cards = []
    for name, values in groups:
        rows = "".join(f'<tr><th scope="row">{_esc(k)}</th><td>{_esc(_yaml_value(v))}</td></tr>'
                       for k, v in _flat(values))
        cards.append(f'<div class="cfg"><h3>{_esc(name)}</h3><table class="kv"><tbody>{rows}</tbody></table></div>')
    where = Path(str(cfg.get("project", "."))) / run.dir.name / "config.yaml"
    return (_note(f"Every setting as resolved for this run (config.yaml); repeat it with cnnfit train config={where}.")
            + f'<div class="cfgs">{"".join(cards)}</div>')


def _flat(d: dict, prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out += _flat(v, f"{prefix}{k}.")
        else:
            out.append((f"{prefix}{k}", v))
    return out


def _yaml_value(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v)


def _environment(run: _Run) -> str:
    m = run.metrics
    env = m.get("environment")
    if not isinstance(env, dict) or not env:
        return _note("Not recorded: this run's metrics.json has no environment (written by an older cnnfit).")
    rows = [(k, m.num("environment", k) if _is_number(v) and v is not None else _esc(v if v is not None else "none"))
            for k, v in env.items()]
    return _kv(rows)


def _timing(run: _Run) -> str:
    m = run.metrics
    rows = [(label, m.num("timings", key)) for label, key in (("setup (data, model)", "setup_seconds"),
                                                               ("training", "train_seconds"),
                                                               ("evaluation", "eval_seconds"))]
    timings = m.get("timings")
    if isinstance(timings, dict):
        known = {"setup_seconds", "train_seconds", "eval_seconds"}
        rows += [(_name(k), m.num("timings", k)) for k, v in timings.items() if k not in known and _is_number(v)]
        if isinstance(timings.get("cache_hit"), bool):
            rows.append(("data cache", "hit: decoded images reused" if timings["cache_hit"] else "miss: decoded now"))
        rows += [(_name(k), _esc(v)) for k, v in timings.items() if isinstance(v, str)]
    seconds = [_float(r["seconds"]) for r in run.history or [] if "seconds" in r]
    seconds = [s for s in seconds if math.isfinite(s)]
    if seconds:
        rows.append(("seconds per epoch (history.csv)", f"{sum(seconds) / len(seconds):,.1f} mean, "
                     f"{min(seconds):,.1f} to {max(seconds):,.1f} over {len(seconds)} epochs"))
    if not [v for _, v in rows if v]:
        return ""
    return _kv(rows) + _note("In seconds, wall clock.")


def _more_plots(run: _Run) -> str:
    return _figures(run, *sorted(n for n in run.plots if n not in _CAPTIONS))


_RENDER: dict[str, Callable[[_Run], str]] = {
    "summary": _summary, "metrics": _metrics, "curves": _curves, "per-class": _per_class, "confusion": _confusion,
    "roc": _roc, "calibration": _calibration, "errors": _errors, "data": _data, "config": _config,
    "environment": _environment, "timing": _timing, "more-plots": _more_plots}
# sections that do not apply to a task, whatever files exist
_SKIP = {"multilabel": {"confusion", "calibration"}, "regress": {"per-class", "confusion", "roc", "calibration"}}


_CSS = """
:root{--fg:#1b1f24;--muted:#57606a;--line:#d0d7de;--soft:#eaeef2;--bg:#f6f8fa;--accent:#0550ae;color-scheme:light}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%;text-size-adjust:100%}
body{margin:0;background:var(--bg);color:var(--fg);font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,
"Helvetica Neue",Arial,sans-serif;overflow-wrap:break-word}
.wrap{max-width:1100px;margin:0 auto;padding:0 16px}
header{background:#fff;border-bottom:1px solid var(--line)}
header .wrap{padding-top:18px;padding-bottom:12px}
h1{font-size:1.5rem;margin:0;line-height:1.25}
h1 code{font-size:inherit}
header p{margin:4px 0 0;color:var(--muted)}
nav{position:sticky;top:0;z-index:2;background:#fff;border-bottom:1px solid var(--line);
box-shadow:0 1px 3px rgba(0,0,0,.04)}
nav .wrap{display:flex;gap:2px 4px;overflow-x:auto;white-space:nowrap;padding-top:6px;padding-bottom:6px}
nav a{color:var(--accent);text-decoration:none;font-size:14px;padding:3px 8px;border-radius:6px}
nav a:hover,nav a:focus{background:var(--soft);text-decoration:underline}
main{padding:4px 0 24px}
section{background:#fff;border:1px solid var(--line);border-radius:8px;padding:16px 20px;margin:16px 0;
scroll-margin-top:52px;min-width:0}
h2{font-size:1.25rem;margin:0 0 12px;line-height:1.3}
h3{font-size:1rem;margin:20px 0 8px}
code{font:13px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.tiles{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,150px),1fr));gap:10px;margin:0 0 14px;
align-items:start}
.tile{border:1px solid var(--line);border-radius:6px;padding:8px 12px;background:#fff;min-width:0}
.tile .k{font-size:13px;color:var(--muted)}
.tile .v{font-size:1.3rem;font-weight:600;font-variant-numeric:tabular-nums;overflow-wrap:anywhere}
.tile .t{font-size:12px;color:var(--muted)}
/* a shadow at each edge of a wide table that has more to scroll to */
.scroll{overflow-x:auto;max-width:100%;margin:0 0 12px;
background:linear-gradient(to right,#fff 30%,rgba(255,255,255,0)) left/32px 100% no-repeat local,
linear-gradient(to left,#fff 30%,rgba(255,255,255,0)) right/32px 100% no-repeat local,
radial-gradient(farthest-side at 0 50%,rgba(0,0,0,.18),transparent) left/10px 100% no-repeat scroll,
radial-gradient(farthest-side at 100% 50%,rgba(0,0,0,.18),transparent) right/10px 100% no-repeat scroll}
table{border-collapse:collapse;font-size:14px}
th,td{padding:4px 10px;border-bottom:1px solid var(--soft);text-align:left;vertical-align:top}
thead th{border-bottom:2px solid var(--line);font-weight:600;white-space:nowrap}
th[scope=row]{font-weight:500;color:var(--muted);white-space:nowrap}
.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.num{font-variant-numeric:tabular-nums}
.kv td{overflow-wrap:anywhere}
table.perclass td:first-child,table.perclass th:first-child{position:sticky;left:0;background:#fff;z-index:1}
.bar{display:inline-block;min-width:4em;padding:0 3px;text-align:right;
background:linear-gradient(90deg,#c8e1ff calc(var(--v)*100%),transparent 0)}
table.cm td.n{padding:2px 6px}
.path,.msg{overflow-wrap:anywhere}
ul.findings{padding-left:0;list-style:none;margin:0 0 12px}
ul.findings li{padding:4px 0;border-bottom:1px solid var(--soft)}
.lvl{display:inline-block;padding:0 6px;border-radius:10px;font-size:12px;font-weight:600}
.lvl.error{background:#ffebe9;color:#82071e}.lvl.warning{background:#fff8c5;color:#633c01}
.lvl.info{background:#ddf4ff;color:#0a3069}
.figs{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,440px),1fr));gap:16px;margin:8px 0 12px}
figure{margin:0;min-width:0}
figure.wide img{max-width:100%}
figure.wide{grid-column:1/-1}
figure img{display:block;max-width:min(100%,820px);height:auto;border:1px solid var(--soft);border-radius:4px;
background:#fff}
figcaption{font-size:13px;color:var(--muted);margin-top:6px}
details{margin:8px 0}
summary{cursor:pointer;color:var(--accent)}
.note{color:var(--muted);font-size:14px;margin:6px 0 10px}
.problem{background:#ffebe9;color:#82071e;border-radius:6px;padding:6px 10px}
.cfgs{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,320px),1fr));gap:12px;align-items:start}
.cfg{border:1px solid var(--soft);border-radius:6px;padding:4px 8px 8px;min-width:0}
.cfg h3{margin:4px 0}
.cfg table{width:100%;table-layout:fixed}
.cfg th{width:50%;overflow-wrap:anywhere;white-space:normal}
.cfg td{overflow-wrap:anywhere}
pre{overflow-x:auto;background:var(--bg);padding:12px;border-radius:6px;font-size:13px}
footer{color:var(--muted);font-size:13px;padding-bottom:24px}
@media (max-width:600px){.wrap{padding:0 10px}section{padding:12px;margin:10px 0}h1{font-size:1.25rem}
.tile .v{font-size:1.15rem}table{font-size:13px}th,td{padding:4px 6px}}
@media print{nav{position:static}section{break-inside:avoid-page}}
"""


def render_report(run_dir: str | Path) -> str:
    """The report of a run directory as one HTML string (write_report writes it)."""
    run = _Run(Path(run_dir))
    sections = []
    for sid, title in _SECTIONS:
        if sid in _SKIP.get(run.task, set()):
            continue
        try:
            body = _RENDER[sid](run)
        except Exception as e:  # a file in a shape this code does not know: say so, keep the rest of the report
            body = f'<p class="problem">This section could not be drawn: {_esc(type(e).__name__)}: {_esc(e)}</p>'
        if body:
            sections.append((sid, "Per label" if sid == "per-class" and run.task == "multilabel" else title, body))
    nav = "".join(f'<a href="#{sid}">{_esc(title)}</a>' for sid, title, _ in sections)
    main = "".join(f'<section id="{sid}"><h2>{_esc(title)}</h2>{body}</section>' for sid, title, body in sections)
    name = run.dir.resolve().name
    what = [run.task, _dig(run.config, "data", "source") or run.metrics.get("dataset"),
            run.metrics.get("model") or _dig(run.config, "model", "name")]
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_esc(name)} · cnnfit report</title><style>{_CSS}</style></head><body>"
            f'<header><div class="wrap"><h1>cnnfit run <code>{_esc(name)}</code></h1>'
            f"<p>{_esc(' · '.join(str(w) for w in what if w))}</p></div></header>"
            f'<nav aria-label="Sections"><div class="wrap">{nav}</div></nav>'
            f'<main class="wrap">{main}</main>'
            f'<footer class="wrap">Written by cnnfit from the files in {_esc(name)}/; numbers in the metrics come '
            f"from metrics.json.</footer></body></html>\n")


def write_report(run_dir: str | Path, *, out: Path | None = None) -> Path:
    """Write run_dir/report.html (or `out`) from the files in the run directory, atomically; returns its path."""
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / "report.html"
    return write_atomic(out, render_report(run_dir))


__all__ = ["format_metric", "lookup_metric", "metric_path", "metric_span", "render_report", "write_report"]
