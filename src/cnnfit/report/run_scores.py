"""The report's sections on how well the model scores: summary, metrics, training curves, per class, confusion,
ROC and PR, calibration, unknown answers, errors, explanations and nearest training images. Each is a function of
the run returning its section's inner HTML, '' when it has nothing to show."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Callable

from cnnfit.config import get_dotted
from cnnfit.eval.explain import UNLOCALISED
from cnnfit.report.html import data_table, esc, figure, grid, kv_table, note, tile
from cnnfit.report.numbers import Metrics, is_number, metric_label, plain_text, to_float
from cnnfit.report.runfiles import RunFiles, figures


def _summary(run: RunFiles) -> str:
    m, cfg = run.metrics, run.config or {}
    source = m.get("dataset") or get_dotted(cfg, "data.source")
    images = (run.data_report or {}).get("images")
    data = esc(source) if source else ""
    if images is not None:
        data += f" ({plain_text(images)} images)" if data else f"{plain_text(images)} images"
    model = m.get("model") or get_dotted(cfg, "model.name")
    model_html = (esc(model) if model else "") + (f" · {m.num('params')} parameters" if m.has("params") else "")
    monitor = get_dotted(cfg, "train.monitor")
    best = m.num("val", monitor) if isinstance(monitor, str) else ""
    headline = {"classify": ("test accuracy", ("accuracy",)), "multilabel": ("test micro F1", ("micro", "f1")),
                "regress": ("test R²", ("r2",))}.get(run.task, ("", ()))
    total = len(run.history) if run.history else get_dotted(cfg, "train.epochs")  # epochs run, else planned
    of_total = f" of {plain_text(total)}" if total is not None else ""
    epochs = m.num("best_epoch") + of_total if m.has("best_epoch") else ""
    stop_text = esc(stop) if (stop := m.get("stop")) else ("ran every epoch" if m.has("stop") else "")
    device = m.get("environment", "device") or get_dotted(cfg, "train.device")
    gpu = m.get("environment", "gpu")
    ci = _interval(m, ("accuracy",)) if run.task == "classify" else ""
    tiles = [tile(headline[0], m.num(*headline[1]) + ci) if headline[1] else "",
             tile(f"best {metric_label(monitor)}" if best else "", best, "the monitored score"),
             tile("best epoch", epochs),
             tile("train time (s)", m.num("timings", "train_seconds"),
                  f"since the resume at step {resumed}" if (resumed := m.get("timings", "resumed_at_step")) else ""),
             tile("test images", m.num("num_images"))]
    rows = [("run", f"<code>{esc(run.dir.name)}</code>"), ("task", esc(run.task)), ("data", data),
            ("model", model_html), ("stopped", stop_text),
            ("device", esc(device) + (f" ({esc(gpu)})" if gpu else "") if device else ""),
            ("report written", esc(datetime.now().astimezone().isoformat(timespec="seconds")))]
    problems = "".join(f'<p class="problem">Could not read {esc(name)}: {esc(why)}</p>'
                       for name, why in run.unreadable.items())
    if not m.data:
        problems += note("No metrics.json: the run did not finish evaluating; the sections below show what it wrote.")
    return problems + grid("tiles", tiles) + kv_table(rows)


def _numbers_of(m: Metrics, key: str | tuple[str, str], label: str) -> list[str]:
    """Tiles for metrics[key] (or metrics[k0][k1]): one for a number, with its bootstrap interval where
    metrics.json has one, and one per numeric entry for a dict (top_k, roc_auc, ...)."""
    keys = (key,) if isinstance(key, str) else key
    value = m.get(*keys)
    if is_number(value) and m.has(*keys):
        return [tile(label, m.num(*keys) + _interval(m, keys))]
    if isinstance(value, dict):
        return [tile(f"{label} {sub}" if key != "top_k" else f"top-{sub} accuracy", m.num(key, sub))
                for sub, v in value.items() if is_number(v)]
    return []


def _interval(m: Metrics, keys: tuple) -> str:
    """'CI lo–hi' under a headline number, from metrics.json's "intervals"; '' where it has none."""
    name = _INTERVALS.get(keys)
    if name is None or not (m.has("intervals", name, 0) and m.has("intervals", name, 1)):
        return ""
    return f'<div class="t">CI {m.num("intervals", name, 0)}–{m.num("intervals", name, 1)}</div>'


# metrics.json path of a score -> its name under "intervals" (evaluate's bootstrap over the test images)
_INTERVALS = {("accuracy",): "accuracy", ("balanced_accuracy",): "balanced_accuracy", ("macro", "f1"): "macro_f1"}
_HEADLINES: dict[str, list[tuple[str | tuple[str, str], str]]] = {
    "classify": [("accuracy", "accuracy"), ("balanced_accuracy", "balanced accuracy"), (("macro", "f1"), "macro F1"),
                 ("top_k", "top-k"), ("log_loss", "log loss"), ("loss", "loss"), ("ece", "ECE"),
                 ("roc_auc", "ROC AUC"), ("pr_auc", "PR AUC"), ("num_images", "test images")],
    "multilabel": [("subset_accuracy", "subset accuracy"), ("hamming_loss", "Hamming loss"),
                   ("macro_roc_auc", "macro ROC AUC"), ("log_loss", "log loss"), ("loss", "loss"),
                   ("num_images", "test images")],
    "regress": [("mae", "MAE"), ("rmse", "RMSE"), ("r2", "R²"), ("max_error", "max error"),
                ("num_images", "test images")],
}
_AVERAGES = ("micro", "macro", "weighted", "samples")
_SHOWN = {"task", "split", "per_class", "per_label", "confusion_matrix", "confusion_normalized", "classes", "labels",
          "calibration", "tta", "best_epoch", "val", "timings", "stop", "environment", "dataset", "model", "params",
          "thresholds", "thresholds_from", "repeats", "intervals", "reject", *_AVERAGES,
          *(k for v in _HEADLINES.values() for k, _ in v if isinstance(k, str))}


def _metrics(run: RunFiles) -> str:
    m = run.metrics
    if not m.data:
        return ""
    tiles = [t for key, label in _HEADLINES.get(run.task, []) for t in _numbers_of(m, key, label)]
    out = grid("tiles", tiles) + figures(run, "regression.png")
    notes = [f"{what}{m.get(key)}" for key, what in (("split", "split: "), ("dataset", "scored on another dataset: "),
                                                     ("tta", "test-time augmentation: "),
                                                     ("thresholds_from", "label thresholds from ")) if m.get(key)]
    out += note("; ".join(notes)) if notes else ""
    if isinstance(m.get("intervals"), dict):  # its numbers as spans, so note(), which escapes, cannot write it
        out += (f'<p class="note">CI: confidence interval at level {m.num("intervals", "level")}, the percentile '
                f'bootstrap over {m.num("intervals", "resamples")} resamples of the test images (seed '
                f'{m.num("intervals", "seed")}): the range a score would take on another test set of this size.</p>')
    averages = [a for a in _AVERAGES if isinstance(m.get(a), dict)]
    if averages:
        cols = list(dict.fromkeys(k for a in averages for k, v in m.get(a).items() if is_number(v)))
        rows = [[esc(a)] + [m.num(a, c) if m.has(a, c) else "" for c in cols] for a in averages]
        out += "<h3>Averages</h3>" + data_table(["average"] + [esc(metric_label(c)) for c in cols], rows,
                                                set(range(1, len(cols) + 1)))
        out += note("micro: over every decision pooled; macro: the plain mean over classes; weighted: the mean "
                    "weighted by each class's test images" + ("; samples: the mean over images"
                                                                if "samples" in averages else "") + ".")
    out += _calibration_table(m)
    val = m.get("val")
    if isinstance(val, dict):
        rows = [(metric_label(k), m.num("val", k)) for k, v in val.items() if is_number(v) and v == v]  # v == v: no NaN
        scored = [v for k, v in val.items() if k.startswith("val_") and isinstance(v, float)]
        unscored = bool(scored) and all(math.isnan(v) for v in scored)  # merge_val: val was trained on
        out += "<h3>Validation at the best epoch</h3>" + (note(
            "val not scored: its images were trained on (data.merge_val); the test split is the held-out measure.")
            if unscored else "") + kv_table(rows)
    other = [(k, v) for k, v in m.data.items() if k not in _SHOWN]
    rows = [(metric_label(k), m.num(k)) for k, v in other if is_number(v)]
    rows += [(f"{metric_label(k)} {sub}", m.num(k, sub)) for k, v in other if isinstance(v, dict)
             for sub, x in v.items() if is_number(x)]
    if rows:
        out += "<h3>Other figures</h3>" + kv_table(rows)
    return out


def _calibration_table(m: Metrics) -> str:
    cal = m.get("calibration")
    if not isinstance(cal, dict):
        return ""
    rows = [[esc(label), m.num("calibration", f"{key}_before"), m.num("calibration", f"{key}_after")]
            for key, label in (("ece", "ECE"), ("log_loss", "log loss"))
            if f"{key}_before" in cal or f"{key}_after" in cal]
    head = f"<h3>Calibration (temperature {m.num('calibration', 'temperature')}"
    head += f", fitted on {esc(cal['fitted_on'])})</h3>" if cal.get("fitted_on") else ")</h3>"
    return head + data_table(["", "before", "after"], rows, {1, 2})


def _curves(run: RunFiles) -> str:
    out = figures(run, "curves.png", "lr.png")
    if run.history:
        cols = [c for c in run.history[0] if any(r.get(c, "") != "nan" for r in run.history)]  # unscored val: out
        rows = [[plain_text(r.get(c, "")) for c in cols] for r in run.history]
        out += (f"<details{'' if out else ' open'}><summary>Per epoch, from history.csv ({len(rows)} epochs)</summary>"
                + data_table([esc(metric_label(c)) for c in cols], rows, set(range(len(cols)))) + "</details>")
    return out


_PER_CLASS_COLS = ("precision", "recall", "f1", "support", "roc_auc", "pr_auc", "threshold")


def _per_class(run: RunFiles) -> str:
    m = run.metrics
    key = "per_label" if isinstance(m.get("per_label"), dict) else "per_class"
    per = m.get(key)
    out = ""
    if isinstance(per, dict) and per:
        found = {k for v in per.values() if isinstance(v, dict) for k, x in v.items() if is_number(x)}
        cols = [c for c in _PER_CLASS_COLS if c in found] + sorted(found - set(_PER_CLASS_COLS))

        def cell(name: str, c: str) -> str:
            text, x = m.num(key, name, c), m.get(key, name, c)
            if c == "f1" and isinstance(x, (int, float)) and text:  # a bar behind the number, length = F1
                return f'<span class="bar" style="--v:{max(0.0, min(1.0, float(x))):.3f}">{text}</span>'
            return text
        rows = [[esc(name)] + [cell(name, c) for c in cols] for name in per]
        what = "label" if key == "per_label" else "class"
        out += data_table([what] + [esc(metric_label(c)) for c in cols], rows, set(range(1, len(cols) + 1)),
                          "perclass")
        out += note(f"One row per {what}, on the test split; support is the number of test images "
                    f"{'carrying the label' if what == 'label' else 'of the class'}.")
    return out + figures(run, "per_class_f1.png")


def _confusion(run: RunFiles) -> str:
    m = run.metrics
    out = figures(run, "confusion.png", "confusion_normalized.png")
    cm, classes = m.get("confusion_matrix"), m.get("classes")
    if isinstance(cm, list) and cm and isinstance(classes, list) and len(classes) == len(cm) <= 20:
        head = ["true \\ predicted"] + [esc(c) for c in classes]
        rows = [[f"<b>{esc(classes[i])}</b>"] + [m.num("confusion_matrix", i, j) for j in range(len(row))]
                for i, row in enumerate(cm) if isinstance(row, list)]
        out += (f"<details{'' if out else ' open'}><summary>The counts as a table (rows: true class)</summary>"
                + data_table(head, rows, set(range(1, len(classes) + 1)), "cm") + "</details>")
    return out


def _roc(run: RunFiles) -> str:
    if not ({"roc.png", "pr.png"} & set(run.plots)):
        return ""
    tiles = _numbers_of(run.metrics, "roc_auc", "ROC AUC") + _numbers_of(run.metrics, "pr_auc", "PR AUC")
    return grid("tiles", tiles) + figures(run, "roc.png", "pr.png")


def _calibration(run: RunFiles) -> str:
    m = run.metrics
    cal = m.get("calibration")
    if "reliability.png" not in run.plots and not isinstance(cal, dict):
        return ""
    out = grid("tiles", [tile("ECE", m.num("ece"), "expected calibration error, test split"),
                         tile("temperature", m.num("calibration", "temperature"), "logits divided by it")])
    if not isinstance(cal, dict):
        out += note("No temperature was fitted (eval.calibrate=false): probabilities are the model's own.")
    return out + figures(run, "reliability.png") + _calibration_table(m)


def _errors(run: RunFiles) -> str:
    out = figures(run, "wrong.png")
    rows = run.predictions or []
    if run.task == "classify" and rows and {"true", "pred", "confidence"} <= set(rows[0]):
        wrong = sorted((r for r in rows if r["true"] != r["pred"]), key=lambda r: -to_float(r["confidence"]))
        out += note(f"{len(wrong):,} of {len(rows):,} test images are wrong (predictions.csv)"
                    + ("; the most confident of them:" if wrong else "."))
        out += _prediction_table(wrong[:12], ["true", "pred", "confidence"], ["true", "predicted", "confidence"])
    elif run.task == "regress" and rows and "error" in rows[0]:
        worst = sorted(rows, key=lambda r: -abs(to_float(r["error"])))[:12]
        out += note("The test images with the largest errors (predictions.csv):")
        out += _prediction_table(worst, ["true", "pred", "error"], ["true", "predicted", "error"])
    return out


def _prediction_table(rows: list[dict[str, str]], keys: list[str], head: list[str]) -> str:
    """Rows of predictions.csv: the image's index in the dataset, its file when it has one, then `keys`."""
    with_files = any(r.get("file") for r in rows)
    table = [[esc(r.get("index", ""))] + ([f'<span class="path">{esc(r.get("file", ""))}</span>'] if with_files
                                           else []) + [plain_text(r.get(k, "")) for k in keys] for r in rows]
    first = 2 if with_files else 1
    return data_table(["index"] + ["file"] * with_files + head, table, {0} | set(range(first, first + len(keys))))


# the scores evaluate fits an "unknown" threshold on (eval.reject.SCORES), as the page names them
_REJECT_SCORES = {"maxprob": "top probability (maxprob)", "energy": "energy (logsumexp of the logits)"}
_REJECT_COLUMNS = ("threshold", "val_precision", "val_coverage", "test_precision", "test_coverage")


def _unknown(run: RunFiles) -> str:
    """metrics.json's "reject": each score's threshold, what it gives on val and test, and the same in words."""
    m = run.metrics
    reject = m.get("reject")
    kinds = [k for k, v in reject.items() if isinstance(v, dict)] if isinstance(reject, dict) else []
    if not kinds:
        return ""
    used = reject.get("score")
    rows = [[esc(_REJECT_SCORES.get(k, k)) + (" <b>used by predict</b>" if k == used else "")]
            + [m.num("reject", k, c) for c in _REJECT_COLUMNS] for k in kinds]
    words = "".join(f"<li>{esc(_REJECT_SCORES.get(k, k))}: {esc(_in_words(reject[k]))}</li>" for k in kinds)
    target = m.num("reject", "precision_target") or "the target"
    val_images = next((f" ({m.num('reject', k, 'val_images')} images)" for k in kinds
                       if m.has("reject", k, "val_images")), "")
    return (f"<ul>{words}</ul>" + data_table(["score", "threshold", "val precision", "val coverage", "test precision",
                                             "test coverage"], rows, set(range(1, 6)))
            + f'<p class="note">With <code>reject=true</code>, predict and serve answer "unknown" for an image whose '
              f"score is under the threshold. Each threshold is the lowest that keeps precision (the accuracy of the "
              f"answers given) at or above {target} on the validation split{val_images}; "
              "coverage is the share of images answered. maxprob is the calibrated top class probability; energy "
              "keeps the logits' scale, which softmax drops, and often tells images of no known class apart better. "
              "Test figures show how the val-fitted threshold holds up on unseen images.</p>")


def _in_words(r: dict) -> str:
    """'answering 87% of test images at 99.2% precision; the rest "unknown"', or why nothing is answered."""
    cover, precision = r.get("test_coverage"), r.get("test_precision")
    if r.get("threshold") == math.inf:
        return 'no threshold reaches the target precision on val: every image is "unknown"'
    if not is_number(cover) or cover is None:
        return "not scored on the test split"
    if not cover or precision is None:
        return 'answering no test image: every one is "unknown"'
    return f'answering {cover:.0%} of test images at {precision:.1%} precision; the rest "unknown"'


# title and how-to-read caption of the figures pipeline.explain_plots draws; "More plots" leaves them out
EXPLAIN_CAPTIONS = {
    "explain_wrong.png": ("Where the model looked: its most confident mistakes", "Each pair: a test image it got "
                          "wrong, then its Grad-CAM heatmap for the class the model named (red: the regions that "
                          "raised that class's score). Red on the object points to look-alike classes or a wrong "
                          "label; red on the background or an edge, to a shortcut the model learned."),
    "explain_right.png": ("Where the model looked: right answers", "A seeded sample of right answers spread over the "
                          "classes, each with its Grad-CAM heatmap for the class named: for a model that learned the "
                          "objects, red lies on the object."),
    "neighbours.png": ("Nearest training images of the mistakes", "Each row: a wrong test image, then the training "
                       "images most similar to it by embedding (the features the classifier reads), with their "
                       "labels and cosine similarity. Red neighbours, of the class the model named, say the mistake "
                       "comes from similar training images of that class (look-alikes or wrong labels); green ones, "
                       "of the true class, that it saw such images and still failed."),
}


def _explained(run: RunFiles, *names: str) -> str:
    return grid("figs", [figure(*run.plots[n], *EXPLAIN_CAPTIONS[n], wide=True) for n in names if n in run.plots])


def _explain(run: RunFiles) -> str:
    out = _explained(run, "explain_wrong.png", "explain_right.png")
    model = run.metrics.get("model")
    if out and model in UNLOCALISED:  # measured: on a set decided by a 4 px marker, 0.11 of fastnet's peaks on it
        out = (f'<p class="problem">{esc(model)} pools globally over feature maps that each cover the whole image, so '
               "its heatmaps do not show where it looked: read them as noise, not as a place. A model with "
               "average pooling, such as simplecnn or resnet18, localises.</p>") + out
    return out


RENDERERS: dict[str, Callable[[RunFiles], str]] = {
    "summary": _summary, "metrics": _metrics, "curves": _curves, "per-class": _per_class, "confusion": _confusion,
    "roc": _roc, "calibration": _calibration, "unknown": _unknown, "errors": _errors, "explain": _explain,
    "neighbours": lambda run: _explained(run, "neighbours.png")}

__all__ = ["EXPLAIN_CAPTIONS", "RENDERERS"]
