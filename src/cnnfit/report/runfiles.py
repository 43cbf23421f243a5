"""A run directory as the pages read it (the run report, compare and the tune report), and the run's plots as
figures. Each file is read once; a missing one reads as None, and one that exists but cannot be read does
too, with the reason kept in `unreadable`, so one bad file costs one section, not the page."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import yaml
from PIL import Image

from cnnfit.config import flatten, get_dotted
from cnnfit.report.html import figure, grid, png_uri
from cnnfit.report.numbers import Metrics, to_float

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


class RunFiles:
    """The files of one run directory, each parsed; config.yaml also as dotted keys, history.csv also as numbers."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        self.unreadable: dict[str, str] = {}  # file (relative to dir) -> why it could not be read; atop the report
        metrics = self._parse("metrics.json", json.loads)
        if metrics is not None and not isinstance(metrics, dict):
            self.unreadable["metrics.json"] = f"a JSON {type(metrics).__name__}, not an object"
        self.metrics = Metrics(metrics if isinstance(metrics, dict) else {})
        self.config = self._parse("config.yaml", yaml.safe_load)
        self.flat_config = flatten(self.config) if isinstance(self.config, dict) else {}
        self.data_report = self._parse("data_report.json", json.loads)
        self.split = self._parse("split.json", json.loads)
        self.history: list[dict[str, str]] | None = self._parse("history.csv", _rows)
        self.history_values = [{k: to_float(v) for k, v in row.items()} for row in self.history or []]
        self.predictions: list[dict[str, str]] | None = self._parse("predictions.csv", _rows)
        self.skipped_txt = self.text("skipped.txt")
        self.plots = self._plots()

    def _plots(self) -> dict[str, tuple[str, int, int]]:
        """name -> (data URI, width, height) of every PNG that opens as one; plots/ first, then the run root."""
        found: dict[str, tuple[str, int, int]] = {}
        folder = self.dir / "plots"
        # runs from before plots/ keep curves.png, confusion.png and samples.png in the run directory itself
        candidates = sorted(folder.glob("*.png")) + [self.dir / n for n in PLOT_CAPTIONS]
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
                self.unreadable[str(path.relative_to(self.dir))] = str(e)
                continue
            found[path.name] = (png_uri(data), width, height)
        return found

    @property
    def task(self) -> str:
        """classify, multilabel or regress: from metrics.json, else config.yaml, else data_report.json."""
        return (self.metrics.get("task") or get_dotted(self.config, "data.task") or
                (self.data_report or {}).get("task") or "classify")

    def text(self, name: str) -> str | None:
        """The file as text; None when it is missing or unreadable (said in `unreadable`)."""
        path = self.dir / name
        if not path.is_file():
            return None
        try:
            return path.read_text(errors="replace")
        except OSError as e:
            self.unreadable[name] = str(e)
            return None

    def _parse(self, name: str, parse: Any) -> Any:
        text = self.text(name)
        try:
            return None if text is None else parse(text)
        except (ValueError, yaml.YAMLError, csv.Error) as e:
            self.unreadable[name] = str(e).splitlines()[0] if isinstance(e, yaml.YAMLError) else str(e)
            return None


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def figures(run: RunFiles, *names: str) -> str:
    """The named plots the run has, captioned, in a grid; '' when it has none of them."""
    return grid("figs", [_figure(n, *run.plots[n]) for n in names if n in run.plots])


def _figure(name: str, uri: str, width: int, height: int) -> str:
    title, how = PLOT_CAPTIONS.get(name, (name.removesuffix(".png").replace("_", " "),
                                          "A further plot the run wrote; its title and axes say what it shows."))
    # curves, bar charts, image grids: a row of their own
    return figure(uri, width, height, title, how, wide=width >= 1.6 * height)


__all__ = ["PLOT_CAPTIONS", "RunFiles", "figures"]
