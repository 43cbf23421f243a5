"""label_review.html as a file: one card per flagged image, user strings escaped, the data as JSON that cannot
end its script element, one script allowed by hash, and the two export modes (manifest, choices)."""

from __future__ import annotations

import base64
import hashlib
import json
import re

import numpy as np
import pytest

from cnnfit.errors import CnnfitError
from cnnfit.report import label_review
from cnnfit.report.label_review import render_label_review, write_label_review

HOSTILE = '</script><img src=x onerror=alert(1)>'


def _issues(files):
    return [{"index": i, "file": f, "given": "cat", "suggested": HOSTILE, "score": 0.9 - i / 10, "kind": "wrong",
             "rank": i + 1} for i, f in enumerate(files)]


def _data(html):
    match = re.search(r'<script type="application/json" id="review-data">(.*?)</script>', html, re.S)
    return json.loads(match.group(1))


def test_page_escapes_user_strings_and_allows_one_script(tmp_path):
    files = [str(tmp_path / f"a{HOSTILE}.png"), str(tmp_path / "b,c.png")]
    images = np.zeros((2, 3, 8, 8), np.uint8)
    rows = [(f, "cat", "") for f in files] + [(str(tmp_path / "d.png"), HOSTILE, "")]
    out = write_label_review(_issues(files), images, tmp_path, classes=["cat", HOSTILE], manifest_rows=rows)
    html = out.read_text()
    assert out.name == "label_review.html" and html.count('class="card"') == 2
    assert "<img src=x" not in html and html.count("<script") == 2  # the JSON and the one script
    data = _data(html)
    assert data["mode"] == "manifest" and data["name"] == "reviewed_manifest.csv"
    assert [i["row"] for i in data["issues"]] == [0, 1] and data["rows"][2][1] == HOSTILE
    script = re.search(r"<script>(.*?)</script>", html, re.S).group(1)
    sha = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"script-src 'sha256-{sha}'" in html and "default-src 'none'" in html
    assert not re.search(r"(src|href)=\"(https?:|//)", html)  # nothing loads from outside the file
    uris = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(uris) == 2 and base64.b64decode(uris[0])[:8] == b"\x89PNG\r\n\x1a\n"


def test_array_dataset_exports_choices(tmp_path):
    html = render_label_review(_issues(["", ""]), np.zeros((2, 1, 8, 8), np.uint8), classes=["cat", "dog"],
                               manifest_rows=None)
    data = _data(html)
    assert data["mode"] == "choices" and data["name"] == "label_choices.csv" and data["rows"] == []
    assert "has no image files, so a manifest cannot name its images" in html
    assert 'width="128" height="128"' in html  # 8 px blown up 16x


def test_shows_the_largest_scores_first_and_caps_them(monkeypatch):
    monkeypatch.setattr(label_review, "MAX_SHOWN", 2)
    issues = _issues(["", "", ""])
    issues[2]["score"] = 0.99
    html = render_label_review(issues, np.zeros((3, 3, 40, 60), np.uint8), classes=["cat"], manifest_rows=None)
    assert [i["index"] for i in _data(html)["issues"]] == [2, 0]
    assert "The 1 further flagged images" in html


def test_overlap_doubts_come_after_the_wrong_labels_under_their_own_heading():
    issues = _issues(["", "", ""])
    issues[0].update(kind="overlap", given="shirt", suggested="T-shirt")  # the largest score, but only a doubt
    html = render_label_review(issues, np.zeros((3, 1, 8, 8), np.uint8), classes=["cat", "shirt", "T-shirt"],
                               manifest_rows=None)
    assert [i["index"] for i in _data(html)["issues"]] == [1, 2, 0]
    assert re.findall(r'data-kind="(\w+)"', html) == ["wrong", "wrong", "overlap"]
    assert "2 images whose given label" in html and "Between classes that overlap (1)" in html
    assert "The model confuses T-shirt / shirt far more often" in html
    assert "Between classes that overlap" not in render_label_review(
        _issues(["", ""]), np.zeros((2, 1, 8, 8), np.uint8), classes=["cat"], manifest_rows=None)


def test_mismatches_are_one_line_errors(tmp_path):
    with pytest.raises(CnnfitError, match="1 images for 2 flagged labels"):
        render_label_review(_issues(["a", "b"]), np.zeros((1, 3, 8, 8), np.uint8), classes=["cat"],
                            manifest_rows=None)
    with pytest.raises(CnnfitError, match="'b' is flagged but not among the 1 manifest rows"):
        render_label_review(_issues(["a", "b"]), np.zeros((2, 3, 8, 8), np.uint8), classes=["cat"],
                            manifest_rows=[("a", "cat", "")])
