"""`compare`: three real digits runs that differ only in lr, side by side, with paired tests on the test images they
share; bad input is refused by name."""

import csv
import json
import shutil

import pytest
from PIL import Image

import cnnfit
from cnnfit.errors import CnnfitError
from cnnfit.report import compare
from cnnfit.report.html import esc

LRS = (3e-4, 1e-3, 3e-3)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    project = tmp_path_factory.mktemp("runs")
    return [cnnfit.train(data="digits", model="simplecnn", epochs=2, batch=64, lr=lr, project=str(project),
                         name=f"lr{i}").dir for i, lr in enumerate(LRS)]


def test_compare_writes_table_differences_and_curves(runs, tmp_path, caplog):
    caplog.set_level("INFO", logger="cnnfit")
    out = compare(runs, out=tmp_path / "cmp")
    assert out == tmp_path / "cmp"
    with Image.open(out / "compare.png") as img:
        assert img.size[0] > 500

    page = (out / "compare.html").read_text()
    assert all(run.name in page for run in runs)
    differences = page.split("Config differences")[1].split("Curves")[0]
    assert "optim.lr" in differences and all(f">{lr:g}<" in differences for lr in LRS)
    assert "data:image/png;base64," in page and 'src="http' not in page and "<script" not in page
    assert '<meta name="viewport"' in page

    with open(out / "compare.csv") as f:
        rows = list(csv.DictReader(f))
    accuracies = [json.loads((run / "metrics.json").read_text())["accuracy"] for run in runs]
    assert [r["run"] for r in rows] == [run.name for run in runs]
    assert [float(r["accuracy"]) for r in rows] == accuracies
    assert f"<strong>{max(accuracies):.4f}</strong>" in page  # the best accuracy in bold

    summary = json.loads((out / "compare.json").read_text())
    assert summary["differences"]["optim.lr"] == {run.name: lr for run, lr in zip(runs, LRS)}
    assert "train.seed" not in summary["differences"] and "name" not in summary["differences"]
    text = caplog.text
    assert "optim.lr" in text and f"{max(accuracies):.4f}*" in text and str(out) in text


def test_default_folder_is_a_fresh_compare_beside_the_first_run(runs):
    first = compare(runs[:2])
    second = compare(runs[:2])
    assert (first.parent, first.name, second.name) == (runs[0].parent, "compare", "compare2")
    assert (second / "compare.html").is_file()


def test_bad_input_is_refused_by_name(runs, tmp_path):
    before = set(runs[0].parent.iterdir())
    with pytest.raises(CnnfitError, match="two or more run directories"):
        compare(runs[:1])
    plain = tmp_path / "holiday_photos"
    plain.mkdir()
    with pytest.raises(CnnfitError, match="holiday_photos.*not a run directory"):
        compare([runs[0], plain])
    with pytest.raises(CnnfitError, match="same run"):
        compare([runs[0], runs[0].parent / ".." / runs[0].parent.name / runs[0].name])
    assert set(runs[0].parent.iterdir()) == before  # refused input writes nothing


def test_unfinished_run_is_compared_with_its_history(runs, tmp_path):
    copy = shutil.copytree(runs[1], tmp_path / "elsewhere" / runs[0].name)  # same folder name as runs[0]
    (copy / "metrics.json").unlink()
    out = compare([runs[0], copy], out=tmp_path / "cmp")
    with open(out / "compare.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["status"] for r in rows] == ["finished", "unfinished"]
    assert rows[1]["accuracy"] == "" and float(rows[1]["val_acc"]) > 0.5 and rows[1]["best_epoch"] in ("1", "2")
    assert rows[0]["run"] != rows[1]["run"] and rows[1]["run"] == f"elsewhere/{runs[0].name}"
    assert "unfinished" in (out / "compare.html").read_text()


def test_cli_compare_writes_the_folder_and_refuses_one_run(runs, tmp_path, capsys):
    from cnnfit.cli import main

    out = tmp_path / "side_by_side"
    assert main(["compare", *map(str, runs), f"out={out}"]) == 0
    assert {"compare.html", "compare.png", "compare.csv", "compare.json"} <= {p.name for p in out.iterdir()}
    assert "config differences" in capsys.readouterr().out
    assert main(["compare", str(runs[0])]) == 2
    assert "two or more run directories" in capsys.readouterr().err


def test_runs_on_the_same_test_images_get_a_paired_verdict(runs, tmp_path, caplog):
    caplog.set_level("INFO", logger="cnnfit")
    out = compare(runs, out=tmp_path / "cmp")
    paired = json.loads((out / "compare.json").read_text())["paired"]
    accuracies = [json.loads((run / "metrics.json").read_text())["accuracy"] for run in runs]
    with open(runs[0] / "predictions.csv") as f:
        images = len(list(csv.DictReader(f)))
    page = (out / "compare.html").read_text()
    assert [(p["run"], p["against"]) for p in paired] == [(runs[1].name, runs[0].name), (runs[2].name, runs[0].name)]
    for p, accuracy in zip(paired, accuracies[1:]):
        assert p["difference"] == pytest.approx(accuracy - accuracies[0], abs=1e-12)  # image by image, B - A
        assert p["images"] == images and p["interval"][0] <= p["difference"] <= p["interval"][1]
        assert p["verdict"].startswith(f"{p['run']} is ") and f"than {runs[0].name} on the same {images:,} test" in \
            p["verdict"]
        assert p["verdict"].endswith("a real difference" if p["significant"] else "not a real difference")
        assert p["verdict"] in caplog.text and esc(p["verdict"]) in page.split("Paired tests")[1]


def test_runs_on_other_test_images_are_told_no_paired_test_is_possible(runs, tmp_path, caplog):
    caplog.set_level("INFO", logger="cnnfit")
    shifted = shutil.copytree(runs[1], tmp_path / "shifted")
    shorter = shutil.copytree(runs[2], tmp_path / "shorter")
    lines = (runs[1] / "predictions.csv").read_text().splitlines(keepends=True)
    (shifted / "predictions.csv").write_text("".join([lines[0], *lines[2:], lines[1]]))  # another order
    (shorter / "predictions.csv").write_text("".join(lines[:-5]))
    out = compare([runs[0], shifted, shorter], out=tmp_path / "cmp")
    paired = json.loads((out / "compare.json").read_text())["paired"]
    assert [p["verdict"].split(": ", 1) for p in paired] == [
        ["shifted against lr0", "a paired test is not possible: their test images differ (row 1 of predictions.csv: "
         f"image {lines[1].split(',')[0]} against image {lines[2].split(',')[0]}), so they were split or sampled "
         "differently"],
        ["shorter against lr0", f"a paired test is not possible: lr0 was scored on {len(lines) - 1:,} test images "
         f"and shorter on {len(lines) - 6:,} (another split or dataset)"]]
    assert "significant" not in paired[0] and all(p["verdict"] in caplog.text for p in paired)
    assert "a paired test is not possible" in (out / "compare.html").read_text()
