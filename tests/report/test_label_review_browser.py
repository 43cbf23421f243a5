"""label_review.html in headless Chromium: drop one flagged image, relabel another, Export, and train on the
downloaded manifest; and an array dataset's export of the choices alone. No console errors, CSP included. With
CNNFIT_SCREENSHOTS set, the page is saved to docs/label-review.png."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

import cnnfit
from cnnfit.data import load_imageset, resolve
from cnnfit.data.label_issues import find_label_issues
from cnnfit.report import write_label_review
from tests.conftest import make_folder

SCREENSHOT = Path(__file__).parents[2] / "docs" / "label-review.png"


def _open(browser, html: Path, errors: list[str]):
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning")
            else None)
    page.goto(html.resolve().as_uri(), wait_until="load")
    return page


def _export(page, target: Path) -> list[list[str]]:
    with page.expect_download() as info:
        page.click("#export")
    info.value.save_as(target)
    assert info.value.suggested_filename == target.name
    with open(target, newline="") as fh:
        return list(csv.reader(fh))


def test_review_export_trains(browser, tmp_path):
    folder = make_folder(tmp_path / "photos", per_class=8)
    ds, _ = load_imageset(resolve(str(folder)), size=32)
    truth = ds.labels.copy()
    noisy = truth.copy()
    flipped = [1, 9, 17]
    noisy[flipped] = (truth[flipped] + 1) % 3  # three wrong labels in the manifest
    probs = np.full((len(ds), 3), 0.05)
    probs[np.arange(len(ds)), truth] = 0.9  # a model that learnt the colours
    issues = find_label_issues(noisy, probs, classes=ds.classes, files=ds.files)
    assert {i["index"] for i in issues} == set(flipped)
    rows = [(f, ds.classes[y], "") for f, y in zip(ds.files, noisy)]
    html = write_label_review(issues, ds.images[[i["index"] for i in issues]], tmp_path / "label_review.html",
                              classes=ds.classes, manifest_rows=rows)

    errors: list[str] = []
    page = _open(browser, html, errors)
    cards = page.locator(".card")
    assert cards.count() == 3 and page.evaluate("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
    drop, relabel = issues[0], issues[1]
    cards.nth(0).locator("input[value=drop]").check()
    cards.nth(1).locator("select").select_option(relabel["suggested"])  # choosing a class ticks relabel
    assert cards.nth(1).locator("input[value=relabel]").is_checked()
    assert page.inner_text("#tally").startswith("1 kept, 1 relabelled, 1 dropped")
    if os.environ.get("CNNFIT_SCREENSHOTS"):
        page.screenshot(path=str(SCREENSHOT), full_page=True)

    got = _export(page, tmp_path / "reviewed_manifest.csv")  # outside photos/: train with allow_outside
    assert got[0] == ["path", "label"] and len(got) == 1 + len(ds) - 1
    labels = {Path(p): label for p, label in got[1:]}
    assert Path(drop["file"]) not in labels
    assert labels[Path(relabel["file"])] == relabel["suggested"] != relabel["given"]
    unchanged = {Path(f): label for f, label, _ in rows if f not in (drop["file"], relabel["file"])}
    assert {p: labels[p] for p in unchanged} == unchanged
    assert not errors, errors
    page.close()

    run = cnnfit.train(data=str(tmp_path / "reviewed_manifest.csv"), epochs=1, project=str(tmp_path / "runs"),
                       **{"eval.report": False, "data.allow_outside": True})
    assert (run.dir / "config.yaml").exists() and list(run.dir.glob("*.pt"))


def test_array_dataset_exports_choices(browser, tmp_path):
    rng = np.random.default_rng(0)
    issues = [{"index": i, "file": "", "given": "3", "suggested": "8", "score": 0.9 - i / 10, "kind": kind,
               "rank": r} for r, (i, kind) in enumerate([(4, "wrong"), (7, "overlap")], start=1)]
    images = rng.integers(0, 256, (2, 1, 8, 8), dtype=np.uint8)
    html = write_label_review(issues, images, tmp_path, classes=[str(k) for k in range(10)], manifest_rows=None)
    errors: list[str] = []
    page = _open(browser, html, errors)
    page.locator(".card").nth(1).locator("input[value=drop]").check()  # the card under "Between classes that overlap"
    assert page.inner_text("#tally").startswith("1 kept, 0 relabelled, 1 dropped")
    got = _export(page, tmp_path / "label_choices.csv")
    assert got == [["index", "file", "given", "choice", "label"], ["4", "", "3", "keep", "3"],
                   ["7", "", "3", "drop", "3"]]
    assert not errors, errors
    page.close()
