"""`cnnfit inspect labels=...`: a cv run's out-of-fold probabilities searched for wrong labels, the review page and
the data report's section; a cv of other data is refused."""

import csv
import json
import shutil

from cnnfit.cli import main
from tests.conftest import make_folder


def test_inspect_labels_finds_images_filed_under_another_class(tmp_path):
    root = make_folder(tmp_path / "photos", per_class=20)
    moved = []
    for i in (1, 3):  # red photos filed as blue: the wrong label the search must find
        target = root / "blue" / f"red{i}.jpg"
        shutil.move(root / "red" / f"{i}.jpg", target)
        moved.append(str(target))
    assert main(["inspect", f"data={root}", "labels=true", "epochs=6", "imgsz=16", f"project={tmp_path / 'runs'}",
                 "model=simplecnn"]) == 0
    out = tmp_path / "runs" / "inspect"
    with open(out / "label_issues.csv") as f:
        flagged = {row["file"]: row for row in csv.DictReader(f)}
    assert set(moved) <= set(flagged) and all(flagged[m]["suggested"] == "red" for m in moved)
    report = json.loads((out / "data_report.json").read_text())["label_issues"]
    oof = (out / "cv" / "oof.csv").read_text().splitlines()
    assert report["flagged"] == len(flagged) and report["searched"] == len(oof) - 1  # every train+val image
    assert report["wrong"] + report["overlap"] == len(flagged) and report["overlapping_classes"] == []
    assert {flagged[m]["kind"] for m in moved} == {"wrong"}
    page = (out / "label_review.html").read_text()
    assert "red1.jpg" in page and "reviewed_manifest.csv" in page
    assert main(["inspect", "data=digits", f"labels={out / 'cv'}", f"project={tmp_path / 'runs'}"]) == 2
    assert main(["inspect", "data=digits", f"labels={tmp_path / 'nowhere'}", f"project={tmp_path / 'runs'}"]) == 2
