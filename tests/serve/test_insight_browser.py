"""The upload page's explain and "unknown" views in a real browser (Chromium through Playwright) against a live
server with a reject rule: the explain box starts checked, a confident digit shows its Grad-CAM heatmap beside the
preview and no verdict, an unsure one says "Unknown" above its bars, and the console stays clean. With
CNNFIT_SCREENSHOTS set, the confident digit's phone-width view is saved to docs/serve-explain.png."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from cnnfit.pipeline.predict import reject_rule
from cnnfit.serve import create_app
from tests.serve.conftest import live_server, phone_page

SCREENSHOT = Path(__file__).parents[2] / "docs" / "serve-explain.png"


@pytest.fixture(scope="module")
def picks(predictor, digits_pngs) -> dict[str, bytes | float]:
    """The most confident "3" and the least confident test image, and a threshold between their top probabilities."""
    top = predictor.predict(np.stack([predictor.decode(b) for b, _ in digits_pngs])).max(1)  # (N,)
    sure = max((i for i, (_, y) in enumerate(digits_pngs) if y == "3"), key=lambda i: top[i])
    unsure = int(np.argmin(top))
    return {"sure": digits_pngs[sure][0], "unsure": digits_pngs[unsure][0],
            "threshold": float(top[unsure] + top[sure]) / 2}


@pytest.fixture(scope="module")
def server(predictor, picks):
    """uvicorn in a background thread on a free loopback port, answering "unknown" under picks' threshold."""
    rule = {**reject_rule(predictor, reject=True), "threshold": picks["threshold"]}
    with live_server(create_app(predictor, reject=rule)) as url:
        yield url


def test_explain_shows_the_heatmap_and_unknown_is_said_plainly(browser, server, picks, tmp_path):
    sure, unsure = tmp_path / "three.png", tmp_path / "smudge.png"
    sure.write_bytes(picks["sure"])
    unsure.write_bytes(picks["unsure"])
    page, errors = phone_page(browser, server, 760)
    page.wait_for_function("document.getElementById('explain').checked")  # the server said it can explain

    page.set_input_files("#file", str(sure))
    page.wait_for_selector("#heat:not([hidden])")
    page.wait_for_function("document.getElementById('heat').complete")
    assert page.evaluate("document.getElementById('heat').naturalWidth") == 128  # 8 px x 16
    assert "three.png" in page.get_attribute("#heat", "alt")
    assert page.locator("#bars .bar .cls").first.inner_text() == "3" and page.locator("#verdict").is_hidden()
    assert page.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 1  # fits a phone
    if os.environ.get("CNNFIT_SCREENSHOTS"):
        page.screenshot(path=str(SCREENSHOT), full_page=True)

    page.set_input_files("#file", str(unsure))
    page.wait_for_selector("#verdict:not([hidden])")
    assert page.inner_text("#verdict").startswith("Unknown") and page.locator("#bars .bar").count() == 5

    page.uncheck("#explain")
    page.set_input_files("#file", str(sure))
    page.wait_for_selector("#bars .bar")
    assert page.locator("#heat").is_hidden() and page.locator("#verdict").is_hidden()
    assert not errors, errors
    page.close()
