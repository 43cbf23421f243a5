"""The run directory as the report reads it, and the run's plots as figures: every reader returns None for a
missing or unreadable file and notes the unreadable ones, so one bad file costs one section, not the page."""

from __future__ import annotations

import base64
import csv
import io
import json
from pathlib import Path
from typing import Any

import yaml
from PIL import Image

from cnnfit.eval.html import figure, figure_grid
from cnnfit.eval.report_numbers import Metrics

# title and how-to-read caption of each plot that train and evaluate write; any other PNG in plots/ goes into
# "More plots"
PLOT_CAPTIONS = {
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


class Run:
    """The files of one run directory, each read once; `problems` lists those that exist but could not be read."""

    def __init__(self, run_dir: Path):
        self.dir = run_dir
        self.problems: list[str] = []  # files that exist but could not be read, said at the top of the page
        metrics = self._json("metrics.json")
        if metrics is not None and not isinstance(metrics, dict):
            self.problems.append(f"metrics.json: a JSON {type(metrics).__name__}, not an object")
        self.metrics = Metrics(metrics if isinstance(metrics, dict) else {})
        self.config = self._yaml("config.yaml")
        self.data_report = self._json("data_report.json")
        self.split = self._json("split.json")
        self.history = self._csv("history.csv")
        self.predictions = self._csv("predictions.csv")
        self.skipped_txt = self.text("skipped.txt")
        self.plots = self._plots()

    def text(self, name: str) -> str | None:
        """The file as text; None when it is missing or unreadable (said in `problems`)."""
        path = self.dir / name
        if not path.is_file():
            return None
        try:
            return path.read_text(errors="replace")
        except OSError as e:
            self.problems.append(f"{name}: {e}")
            return None

    def _json(self, name: str) -> Any:
        text = self.text(name)
        try:
            return None if text is None else json.loads(text)
        except ValueError as e:
            self.problems.append(f"{name}: {e}")
            return None

    def _yaml(self, name: str) -> Any:
        text = self.text(name)
        if text is None:
            return None
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as e:
            self.problems.append(f"{name}: {str(e).splitlines()[0]}")
            return None

    def _csv(self, name: str) -> list[dict[str, str]] | None:
        text = self.text(name)
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
        candidates = [folder / n for n in names] + [self.dir / n for n in PLOT_CAPTIONS]
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
        """classify, multilabel or regress: from metrics.json, else config.yaml, else data_report.json."""
        return (self.metrics.get("task") or dig(self.config, "data", "task") or
                (self.data_report or {}).get("task") or "classify")


def dig(d: Any, *keys: str) -> Any:
    """d[k0][k1]... through nested dicts; None where a level is missing or not a dict."""
    for k in keys:
        d = d.get(k) if isinstance(d, dict) else None
    return d


def figures(run: Run, *names: str) -> str:
    """The named plots the run has, captioned, in a grid; '' when it has none of them."""
    return figure_grid([_figure(run, n) for n in names])


def _figure(run: Run, name: str) -> str:
    if name not in run.plots:
        return ""
    uri, width, height = run.plots[name]
    title, how = PLOT_CAPTIONS.get(name, (name.removesuffix(".png").replace("_", " "),
                                          "A further plot the run wrote; its title and axes say what it shows."))
    # curves, bar charts, image grids: a row of their own
    return figure(uri, width, height, title, how, wide=width >= 1.6 * height)


__all__ = ["PLOT_CAPTIONS", "Run", "dig", "figures"]
