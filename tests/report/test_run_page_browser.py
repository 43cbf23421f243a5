"""report.html in a real browser (Chromium through Playwright) at phone and desktop widths: no errors, every
section shown, every image decoded, nothing wider than a phone's screen. With CNNFIT_SCREENSHOTS set, the
explanations section is saved to docs/report-explain.png."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import cnnfit
from cnnfit.report import write_report


VIEWPORTS = [(390, 844), (1440, 900)]  # a phone (iPhone 12-15) and a laptop
SCREENSHOT = Path(__file__).parents[2] / "docs" / "report-explain.png"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    project = tmp_path_factory.mktemp("runs")
    run = cnnfit.train(data="digits", epochs=2, batch=64, project=str(project), name="browser")
    return write_report(run.dir)


@pytest.mark.parametrize("width,height", VIEWPORTS)
def test_report_renders_cleanly(browser, report, width, height):
    page = browser.new_page(viewport={"width": width, "height": height})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning")
            else None)
    page.goto(report.resolve().as_uri(), wait_until="load")

    assert "browser" in page.title()
    ids = page.eval_on_selector_all("section", "s => s.map(e => e.id)")
    assert {"summary", "metrics", "curves", "per-class", "confusion", "data", "config", "environment",
            "timing"} <= set(ids)
    for sid in ids:
        section = page.locator(f"section#{sid}")
        section.scroll_into_view_if_needed()
        assert section.is_visible(), sid
        box = section.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= width + 1, f"section {sid} runs off the screen"
    broken = page.evaluate("[...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt)")
    assert page.evaluate("document.images.length") > 0 and not broken, broken
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1, f"the page is {overflow} px wider than a {width} px screen"
    page.click("nav a[href='#config']")  # the table of contents jumps to its section
    assert page.locator("section#config h2").is_visible()
    assert not errors, errors
    page.close()


def test_explanations_load_in_the_browser(browser, report):
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning")
            else None)
    page.goto(report.resolve().as_uri(), wait_until="load")
    sizes = {sid: page.eval_on_selector_all(f"section#{sid} img", "s => s.map(i => i.complete ? i.naturalWidth : 0)")
             for sid in ("explain", "neighbours")}
    assert len(sizes["explain"]) == 2 and len(sizes["neighbours"]) == 1, sizes
    assert all(w > 0 for ws in sizes.values() for w in ws), sizes
    assert "Unknown answers" in page.inner_text("section#unknown h2")
    assert page.locator("section#unknown table tbody tr").count() == 2  # maxprob and energy
    assert not errors, errors
    if os.environ.get("CNNFIT_SCREENSHOTS"):
        page.evaluate("window.scrollTo(0, 0)")  # document coordinates, with the sticky menu at the top, not over it
        box = page.locator("section#explain").bounding_box()
        page.screenshot(path=str(SCREENSHOT), full_page=True, clip=box)
    page.close()
