"""report.html: one self-contained file per run, every number from metrics.json checked against the file, and a
page for any run directory, however little it holds."""

from __future__ import annotations

import base64
import io
import json
import math
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

import cnnfit
from cnnfit.report import format_metric, lookup_metric, metric_path, write_report

SECTION_ORDER = ["summary", "metrics", "curves", "per-class", "confusion", "roc", "calibration", "unknown", "errors",
                 "explain", "neighbours", "data", "config", "environment", "timing", "more-plots"]


class Page(HTMLParser):
    """What the tests check in a page: section ids, attribute URLs, images, data-metric spans, the title."""

    def __init__(self, text: str):
        super().__init__()
        self.ids: list[str] = []
        self.sections: list[str] = []
        self.urls: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.images: list[dict[str, str]] = []
        self.spans: list[tuple[str, str]] = []  # (data-metric, text)
        self.tags: set[str] = set()
        self.title = ""
        self._metric: str | None = None
        self._text: list[str] = []
        self._in_title = False
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "section":
            self.sections.append(a.get("id", ""))
        for key in ("src", "href", "srcset", "action", "poster", "data"):
            if key in a:
                self.urls.append((tag, key, a[key] or ""))
        if tag == "img":
            self.images.append(a)
        if tag == "title":
            self._in_title = True
        if tag == "span" and "data-metric" in a:
            assert self._metric is None, "a data-metric span inside another"
            self._metric, self._text = a["data-metric"], []

    def handle_endtag(self, tag):
        if tag == "title":
            self._in_title = False
        if tag == "span" and self._metric is not None:
            self.spans.append((self._metric, "".join(self._text)))
            self._metric = None

    def handle_data(self, data):
        if self._in_title:
            self.title += data
        if self._metric is not None:
            self._text.append(data)


def check_self_contained(page: Page, text: str) -> None:
    """Only data: URIs and #anchors to ids on the page; no script; every image a real PNG with alt text; every
    section drawn."""
    assert "<script" not in text.lower() and "could not be drawn" not in text
    for tag, attr, value in page.urls:
        if attr == "href":
            assert value.startswith("#") and value[1:] in page.ids, f"<{tag} {attr}={value[:60]!r}>"
        else:
            assert value.startswith("data:image/png;base64,"), f"<{tag} {attr}={value[:60]!r}>"
    assert "http:" not in text and "https:" not in text and "file:" not in text
    for img in page.images:
        assert img.get("alt"), "an image without alt text"
        data = base64.b64decode(img["src"].removeprefix("data:image/png;base64,"), validate=True)
        with Image.open(io.BytesIO(data)) as im:
            assert im.format == "PNG" and im.size[0] > 0
            assert (int(img["width"]), int(img["height"])) == im.size


def check_numbers(page: Page, metrics: dict) -> None:
    """Every data-metric span shows format_metric of the value its path names in metrics.json."""
    for path, text in page.spans:
        assert text == format_metric(lookup_metric(metrics, path), path), path


def check_section_order(page: Page) -> None:
    assert page.sections == [s for s in SECTION_ORDER if s in page.sections], page.sections


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    project = tmp_path_factory.mktemp("runs")
    run = cnnfit.train(data="digits", epochs=2, batch=64, project=str(project), name="r")
    return run.dir


@pytest.fixture(scope="module")
def digits_report(digits_run) -> tuple[Page, str, dict]:
    path = write_report(digits_run)
    assert path == digits_run / "report.html" and path.is_file()
    assert not [p for p in digits_run.iterdir() if p.name.endswith(".tmp")]  # written by rename, nothing left
    text = path.read_text(encoding="utf-8")
    return Page(text), text, json.loads((digits_run / "metrics.json").read_text())


def test_digits_report_is_self_contained(digits_run, digits_report):
    page, text, _ = digits_report
    check_self_contained(page, text)
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in text
    assert digits_run.name in page.title
    assert 'class="problem"' not in text  # every file the run wrote was read
    plots = {p.name for p in (digits_run / "plots").glob("*.png")} | {
        p.name for p in digits_run.glob("*.png")}
    assert len(page.images) >= len(plots) > 0  # each plot the run wrote is in the page


def test_digits_report_has_every_section_in_order(digits_run, digits_report):
    page, _, metrics = digits_report
    plots = {p.name for p in (digits_run / "plots").glob("*.png")}
    expected = {"summary", "metrics", "curves", "per-class", "confusion", "data", "config", "environment", "timing"}
    expected |= {"roc"} if {"roc.png", "pr.png"} & plots else set()
    expected |= {"calibration"} if "reliability.png" in plots or "calibration" in metrics else set()
    expected |= {"errors"} if "wrong.png" in plots or (digits_run / "predictions.csv").exists() else set()
    assert expected <= set(page.sections), expected - set(page.sections)
    check_section_order(page)
    nav = [v[1:] for tag, attr, v in page.urls if tag == "a"]
    assert nav[: len(page.sections)] == page.sections  # the table of contents lists each section, in order


def test_every_metric_number_matches_metrics_json(digits_report):
    page, _, metrics = digits_report
    check_numbers(page, metrics)
    paths = {p for p, _ in page.spans}
    assert metric_path(["accuracy"]) in paths and metric_path(["macro", "f1"]) in paths
    per_class = metrics["per_class"]
    assert len(page.spans) >= 5 * len(per_class) + 5
    for name, values in per_class.items():  # one table row per class, every figure of it
        for key, value in values.items():
            if isinstance(value, (int, float)) or value is None:
                assert metric_path(["per_class", name, key]) in paths
    assert {p.split(".")[1] for p in paths if p.startswith("per_class.")} == {metric_path([c]) for c in per_class}
    for key in ("balanced_accuracy", "log_loss", "ece"):  # headline numbers, as evaluate writes them
        if isinstance(metrics.get(key), float):
            assert metric_path([key]) in paths


def test_format_and_path_rules():
    assert metric_path(["per_class", "a.b c~d", "f1"]) == "per_class.a~1b c~0d.f1"
    assert lookup_metric({"per_class": {"a.b c~d": {"f1": 0.5}}}, "per_class.a~1b c~0d.f1") == 0.5
    assert lookup_metric({"confusion_matrix": [[1, 2], [3, 4]]}, "confusion_matrix.1.0") == 3
    assert format_metric(0.91567) == "0.9157" and format_metric(1.0) == "1.0000"
    assert format_metric(12345) == "12,345" and format_metric(None) == "n/a" and format_metric(True) == "yes"
    assert format_metric(1234.56, "timings.train_seconds") == "1,234.6"
    assert format_metric(1.5e-5) == "1.500e-05" and format_metric(2.5e6) == "2.500e+06"
    assert format_metric(math.nan) == "nan" and format_metric(-math.inf) == "-inf"


CONFIG = "name: {name}\nproject: runs\ndata:\n  source: ./tags.csv\n  task: {task}\nmodel:\n  name: simplecnn\n" \
         "train:\n  epochs: 3\n  monitor: {monitor}\n"
MULTILABEL = {
    "task": "multilabel", "split": "test", "num_images": 40, "subset_accuracy": 0.55, "hamming_loss": 0.125,
    "loss": 0.31, "macro_roc_auc": 0.81, "thresholds": [0.4, 0.5, 0.3], "labels": ["a.b c", "x~y", "<b>z</b>"],
    "per_label": {"a.b c": {"precision": 0.8, "recall": 0.7, "f1": 0.7467, "support": 12, "roc_auc": 0.9,
                            "threshold": 0.4},
                  "x~y": {"precision": 0.6, "recall": 0.5, "f1": 0.5454, "support": 1000, "roc_auc": None,
                          "threshold": 0.5},
                  "<b>z</b>": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0, "roc_auc": None,
                               "threshold": 0.3}},
    "micro": {"precision": 0.75, "recall": 0.7, "f1": 0.7241}, "macro": {"precision": 0.47, "recall": 0.4, "f1": 0.43},
    "weighted": {"precision": 0.7, "recall": 0.6, "f1": 0.64}, "samples": {"precision": 0.8, "recall": 0.75, "f1": 0.7},
    "thresholds_from": "val (30 images), best F1 per label", "best_epoch": 3,
    "val": {"epoch": 3, "val_loss": 0.3, "val_f1": 0.7}, "timings": {"setup_seconds": 1.25, "train_seconds": 3605.5},
    "stop": "no val_f1 improvement in 5 epochs",
}
REGRESS = {"task": "regress", "split": "test", "num_images": 50, "mae": 1.2345, "rmse": 2.5e-4, "r2": math.nan,
           "max_error": 1.5e6, "best_epoch": 1, "val": {"val_mae": 1.3, "val_r2": 0.2}, "stop": None}


@pytest.mark.parametrize("metrics,shown", [(MULTILABEL, ["subset_accuracy", "hamming_loss", "micro.f1", "samples.f1",
                                                          "macro_roc_auc", "per_label.a~1b c.f1",
                                                          "per_label.x~0y.roc_auc", "timings.train_seconds"]),
                                           (REGRESS, ["mae", "rmse", "r2", "max_error", "val.val_mae"])])
def test_multilabel_and_regress_runs_from_metrics_and_config_alone(tmp_path, metrics, shown):
    run = tmp_path / "run.1"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps(metrics))
    monitor = "val_f1" if metrics["task"] == "multilabel" else "val_mae"
    (run / "config.yaml").write_text(CONFIG.format(name="run.1", task=metrics["task"], monitor=monitor))
    text = write_report(run).read_text(encoding="utf-8")
    page = Page(text)
    check_self_contained(page, text)
    check_numbers(page, json.loads((run / "metrics.json").read_text()))
    check_section_order(page)
    assert {p for p, _ in page.spans} >= set(shown)
    assert {"summary", "metrics", "config", "environment"} <= set(page.sections)
    assert "confusion" not in page.sections and "calibration" not in page.sections
    assert "Not recorded" in text and not page.images
    assert "<b>z</b>" not in text  # names from files are escaped
    if metrics["task"] == "multilabel":
        assert "per-class" in page.sections
        assert {p.split(".")[1] for p, _ in page.spans if p.startswith("per_label.")} == {"a~1b c", "x~0y", "<b>z</b>"}


def test_missing_plots_give_no_broken_images(tmp_path, digits_run):
    run = tmp_path / "copy"
    shutil.copytree(digits_run, run, ignore=shutil.ignore_patterns("*.png", "plots", "report.html", "*.pt"))
    (run / "plots").mkdir()
    (run / "plots" / "roc.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")  # cut short: left out, and said so
    (run / "plots" / "extra.png").write_bytes((digits_run / "plots" / "curves.png").read_bytes() if (
        digits_run / "plots" / "curves.png").exists() else (digits_run / "curves.png").read_bytes())
    text = write_report(run).read_text(encoding="utf-8")
    page = Page(text)
    check_self_contained(page, text)
    check_numbers(page, json.loads((run / "metrics.json").read_text()))
    assert len(page.images) == 1 and page.sections[-1] == "more-plots"
    assert "roc" not in page.sections and "plots/roc.png" in text  # the unreadable PNG is named at the top
    shutil.rmtree(run / "plots")
    page = Page(write_report(run).read_text(encoding="utf-8"))
    assert not page.images and {"summary", "metrics", "per-class", "confusion", "data"} <= set(page.sections)


def test_empty_and_unreadable_run_directories(tmp_path):
    page = Page(write_report(tmp_path).read_text(encoding="utf-8"))
    assert page.sections == ["summary", "environment"] and not page.spans
    (tmp_path / "metrics.json").write_text("{not json")
    (tmp_path / "config.yaml").write_text("a: [unclosed")
    (tmp_path / "history.csv").write_text("epoch,seconds\n1,2.5\n")
    out = tmp_path / "elsewhere.html"
    text = write_report(tmp_path, out=out).read_text(encoding="utf-8")
    assert out.is_file() and "Could not read metrics.json" in text and "Could not read config.yaml" in text
    assert {"summary", "curves", "config", "timing"} <= set(Page(text).sections)


def test_calibration_params_and_odd_class_names(tmp_path, digits_run):
    run = tmp_path / "calibrated"
    shutil.copytree(digits_run, run, ignore=shutil.ignore_patterns("report.html", "*.pt"))
    metrics = json.loads((run / "metrics.json").read_text())
    odd = {"0": "a.b c", "1": "x~y", "2": "<i>two</i>"}
    metrics["per_class"] = {odd.get(k, k): v for k, v in metrics["per_class"].items()}
    metrics["classes"] = [odd.get(c, c) for c in metrics["classes"]]
    metrics |= {"params": 1234567, "calibration": {"temperature": 1.4321, "fitted_on": "val (269 images)",
                                                    "ece_before": 0.05, "ece_after": 0.0123,
                                                    "log_loss_before": 0.3, "log_loss_after": 0.25}}
    (run / "metrics.json").write_text(json.dumps(metrics))
    text = write_report(run).read_text(encoding="utf-8")
    page = Page(text)
    check_self_contained(page, text)
    check_numbers(page, metrics)
    paths = {p for p, _ in page.spans}
    assert {"calibration.temperature", "calibration.ece_after", "params", "per_class.a~1b c.f1",
            "per_class.x~0y.recall", "confusion_matrix.1.1"} <= paths
    assert "calibration" in page.sections and "1,234,567" in text and "<i>two</i>" not in text


def test_explanations_neighbours_and_unknown_answers_in_the_report(digits_run, digits_report):
    page, text, metrics = digits_report
    for name in ("explain_wrong.png", "explain_right.png", "neighbours.png"):  # drawn by evaluate, valid PNGs
        with Image.open(digits_run / "plots" / name) as im:
            assert im.format == "PNG" and min(im.size) > 100
            im.verify()
    assert {"unknown", "explain", "neighbours"} <= set(page.sections) and "more-plots" not in page.sections
    assert "Where the model looked: its most confident mistakes." in text and "Nearest training images of" in text
    paths = {p for p, _ in page.spans}  # check_numbers: each shows the value in metrics.json
    assert {f"reject.{kind}.{key}" for kind in ("maxprob", "energy") for key in
            ("threshold", "val_precision", "val_coverage", "test_precision", "test_coverage")} <= paths
    check_numbers(page, metrics)
    shown = metrics["reject"]["maxprob"]
    assert (f"answering {shown['test_coverage']:.0%} of test images at {shown['test_precision']:.1%} precision"
            in text)
    assert "does not show where it looked" not in text  # simplecnn localises


def test_runs_without_explanations_or_reject_and_unlocalised_models(tmp_path, digits_run):
    run = tmp_path / "older"
    shutil.copytree(digits_run, run, ignore=shutil.ignore_patterns("report.html", "*.pt", "explain_*.png",
                                                                   "neighbours.png"))
    metrics = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps({k: v for k, v in metrics.items() if k != "reject"}))
    text = write_report(run).read_text(encoding="utf-8")
    page = Page(text)  # a run from before explanations: the sections are left out, nothing is broken
    check_self_contained(page, text)
    assert not {"unknown", "explain", "neighbours"} & set(page.sections) and 'class="problem"' not in text
    shutil.copy(digits_run / "plots" / "explain_wrong.png", run / "plots")
    (run / "metrics.json").write_text(json.dumps({**metrics, "model": "fastnet", "reject": {
        "score": "maxprob", "maxprob": {"threshold": math.inf, "val_precision": None, "val_coverage": 0.0,
                                        "test_precision": None, "test_coverage": 0.0}}}))
    text = write_report(run).read_text(encoding="utf-8")
    page = Page(text)
    check_numbers(page, json.loads((run / "metrics.json").read_text()))
    assert {"unknown", "explain"} <= set(page.sections) and "neighbours" not in page.sections
    assert "its heatmaps do not show where it looked" in text  # fastnet is in eval.explain.UNLOCALISED
    assert "no threshold reaches the target precision on val" in text
