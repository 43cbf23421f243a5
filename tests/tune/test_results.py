"""The files a search leaves behind, from hand-made Optuna studies (no training): trials.csv, a best.yaml that
trains, plots that open, a self-contained tune_report.html and tune.json."""

from __future__ import annotations

import csv
import json
import math
from html.parser import HTMLParser
from pathlib import Path

import optuna
import pytest
from PIL import Image

from cnnfit.config import load_config
from cnnfit.errors import CnnfitError
from cnnfit.eval.plots import pyplot
from cnnfit.report import format_metric
from cnnfit.tune.results import apply_params, write_results

optuna.logging.set_verbosity(optuna.logging.WARNING)
PLOTS = ("history.png", "importances.png", "parallel.png", "intermediate.png")


def make_study(tmp_path: Path, outcomes: list[str]) -> optuna.Study:
    """One trial per outcome: a float is a completed val_acc, 'pruned' stops after 2 epochs, 'fail' raises."""
    study = optuna.create_study(direction="maximize", study_name="digits-search")
    for i, outcome in enumerate(outcomes):
        trial = study.ask()
        trial.suggest_float("optim.lr", 1e-4, 1e-1, log=True)
        trial.suggest_categorical("model.name", ["simplecnn", "lenet5"])
        run_dir = tmp_path / "runs" / f"trial{i}"
        run_dir.mkdir(parents=True)
        (run_dir / "report.html").write_text("<html></html>")
        final = outcome if isinstance(outcome, float) else 0.3 + 0.01 * i
        epochs = 3 if isinstance(outcome, float) else 2
        for epoch in range(1, epochs + 1):
            trial.report(final * epoch / epochs, step=epoch)
        stop = "pruned by the median pruner at epoch 2" if outcome == "pruned" else None
        for key, value in {"run_dir": str(run_dir), "best_epoch": epochs, "epochs_run": epochs, "stop": stop,
                           "seconds": 12.5 + i, "worker": f"host:{1000 + i}"}.items():
            trial.set_user_attr(key, value)
        if outcome == "pruned":
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        elif outcome == "fail":
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, outcome)
    return study


class Links(HTMLParser):
    def __init__(self, text: str):
        super().__init__()
        self.urls: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.urls += [v for k, v in attrs if k in ("src", "href") and v is not None]


@pytest.fixture
def base():
    return load_config(["data=digits", "epochs=3"])


@pytest.mark.filterwarnings("error::optuna.exceptions.ExperimentalWarning")
def test_every_file_from_a_mixed_study(tmp_path, base, caplog):
    caplog.set_level("INFO", logger="cnnfit")
    study = make_study(tmp_path, [0.81, "pruned", 0.93, "fail", 0.88, "pruned"])
    tune_dir = tmp_path / "tune"
    style = dict(pyplot().rcParams)
    summary = write_results(study, tune_dir, base_config=base, monitor="val_acc")
    assert dict(pyplot().rcParams) == style  # optuna's ggplot style stays inside the tune plots
    best = study.best_trial
    assert best.number == 2

    with open(tune_dir / "trials.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["number"]) for r in rows] == [t.number for t in study.trials]
    assert [r["state"] for r in rows] == [t.state.name for t in study.trials]
    for row, trial in zip(rows, study.trials):
        assert (float(row["value"]) if row["value"] else None) == trial.value
        assert float(row["optim.lr"]) == trial.params["optim.lr"]
        assert row["worker"] == trial.user_attrs["worker"]
    assert rows[1]["stop"] == "pruned by the median pruner at epoch 2" and rows[3]["value"] == ""

    cfg = load_config([f"config={tune_dir / 'best.yaml'}"])
    assert cfg.optim.lr == best.params["optim.lr"] and cfg.model.name == best.params["model.name"]
    assert cfg.train.epochs == 3 and cfg.data.source == "digits"
    head = (tune_dir / "best.yaml").read_text().splitlines()[0]
    assert head.startswith("# ") and "trial 2" in head

    for name in PLOTS:
        with Image.open(tune_dir / "plots" / name) as im:
            assert im.format == "PNG" and im.size[0] > 400

    page = (tune_dir / "tune_report.html").read_text()
    for url in Links(page).urls:
        assert url.startswith(("data:", "#")) or ("://" not in url and not url.startswith("/")), url
    assert "../runs/trial2/report.html" in page  # the best run's report, by a relative address
    assert format_metric(best.value) in page
    for trial in study.trials:
        assert f"<td class=\"n\">{trial.number}</td>" in page
    assert 'class="complete best"' in page and 'class="pruned"' in page

    saved = json.loads((tune_dir / "tune.json").read_text())
    assert saved == summary
    assert saved["counts"] == {"COMPLETE": 3, "PRUNED": 2, "FAIL": 1, "RUNNING": 0, "WAITING": 0}
    assert saved["best"] == {"number": 2, "value": 0.93, "params": best.params}
    assert saved["direction"] == "maximize" and saved["monitor"] == "val_acc" and saved["refit"] is None
    # one log line per file: csv, yaml, 4 plots, html, json
    assert len([r for r in caplog.records if r.name.startswith("cnnfit")]) == 8


def test_refit_is_shown_and_linked(tmp_path, base):
    study = make_study(tmp_path, [0.7, 0.9])
    refit_dir = tmp_path / "runs" / "refit"
    refit_dir.mkdir(parents=True)
    (refit_dir / "report.html").write_text("<html></html>")
    refit = {"run_dir": str(refit_dir), "test_accuracy": 0.9123, "val_metric": 0.95, "epochs": 3}
    summary = write_results(study, tmp_path / "tune", base_config=base, monitor="val_acc", refit=refit)
    page = (tmp_path / "tune" / "tune_report.html").read_text()
    assert summary["refit"] == refit
    assert 'href="../runs/refit/report.html"' in page and "0.9123" in page and "test_accuracy" in page


@pytest.mark.parametrize("outcomes", [[], ["pruned", "fail"]], ids=["empty", "none-completed"])
def test_no_completed_trial(tmp_path, base, outcomes):
    study = make_study(tmp_path, outcomes)
    tune_dir = tmp_path / "tune"
    summary = write_results(study, tune_dir, base_config=base, monitor="val_acc")
    assert not (tune_dir / "best.yaml").exists()
    assert summary["best"] is None and any("no best.yaml" in n for n in summary["notes"])
    assert not (tune_dir / "plots" / "history.png").exists()
    assert (tune_dir / "plots" / "intermediate.png").exists() == bool(outcomes)
    page = (tune_dir / "tune_report.html").read_text()
    assert "no trial completed" in page
    with open(tune_dir / "trials.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == len(outcomes)


def test_importances_need_variance(tmp_path, base):
    study = optuna.create_study(direction="minimize")
    for value in (0.5, 0.4):
        trial = study.ask()
        trial.suggest_categorical("model.name", ["lenet5"])
        study.tell(trial, value)
    summary = write_results(study, tmp_path, base_config=base, monitor="val_loss")
    assert not (tmp_path / "plots" / "importances.png").exists()
    assert any(n.startswith("no importances.png") for n in summary["notes"])
    assert summary["best"]["value"] == 0.4 and load_config([f"config={tmp_path / 'best.yaml'}"]).model.name == "lenet5"


def test_apply_params_names_the_bad_value(base):
    cfg = apply_params(base, {"optim.lr": 0.01, "aug.shift": 0.1})
    assert cfg.optim.lr == 0.01 and cfg.aug.shift == 0.1 and cfg.train.epochs == 3
    with pytest.raises(CnnfitError, match="optim.lr"):
        apply_params(base, {"optim.lr": -1.0})
    assert math.isclose(apply_params(base, {"lr": 0.2}).optim.lr, 0.2)  # short keys as well
