"""The upload page in a real browser (Chromium through Playwright) against a live server: choose a digits PNG,
see the preview and k bars with the right top class, and no console errors. With CNNFIT_SCREENSHOTS set, the
phone-width view is saved to docs/serve-page.png."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cnnfit.serve import create_app
from tests.serve.conftest import live_server, phone_page

SCREENSHOT = Path(__file__).parents[2] / "docs" / "serve-page.png"


@pytest.fixture(scope="module")
def server(predictor):
    """uvicorn in a background thread on a free loopback port; its base URL."""
    with live_server(create_app(predictor, topk=5)) as url:
        yield url


def test_upload_page_shows_the_top_classes(browser, server, digits_pngs, tmp_path):
    data, label = next((b, y) for b, y in digits_pngs if y == "3")
    image = tmp_path / "three.png"
    image.write_bytes(data)
    page, errors = phone_page(browser, server)
    page.set_input_files("#file", str(image))
    page.wait_for_selector("#bars .bar")
    assert page.locator("#bars .bar").count() == 5
    assert page.locator("#bars .bar .cls").first.inner_text() == label
    assert page.locator("#bars .bar .pct").first.inner_text().endswith("%")
    assert page.evaluate("document.getElementById('preview').naturalWidth") == 8
    assert page.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 1  # fits a phone
    if os.environ.get("CNNFIT_SCREENSHOTS"):
        page.screenshot(path=str(SCREENSHOT), full_page=True)

    bad = tmp_path / "notes.png"
    bad.write_bytes(b"<html>not an image</html>")
    page.set_input_files("#file", str(bad))
    page.wait_for_selector("#error:not([hidden])")
    assert "notes.png" in page.inner_text("#error") and page.locator("#bars .bar").count() == 0
    errors = [e for e in errors if "422" not in e]  # the browser logs the refused upload itself
    assert not errors, errors
    page.close()
