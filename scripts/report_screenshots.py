"""Full-page screenshots of a run's report.html at phone and desktop widths, for the docs.

    python scripts/report_screenshots.py                          # trains a short digits run first
    python scripts/report_screenshots.py --run runs/fmnist --out docs

Writes OUT/report-phone.png (390 px wide) and OUT/report-desktop.png (1440 px wide). Needs Playwright
(pip install playwright) and a Chromium: --chromium PATH, else `chromium` on PATH, else Playwright's own.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

# width, height of the first screen, device scale: an iPhone 12-15 and a common laptop
VIEWPORTS = {"phone": (390, 844, 2), "desktop": (1440, 900, 1)}


def train_digits(project: Path) -> Path:
    import cnnfit

    return cnnfit.train(data="digits", epochs=3, batch=64, project=str(project), name="digits").dir


def _shrink(path: Path) -> None:
    """A 128-colour palette: a page of flat colours and plots loses nothing visible, and the file is ~3x smaller,
    which matters for images kept in the repository."""
    from PIL import Image

    with Image.open(path) as im:
        small = im.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    small.save(path, optimize=True)


def screenshots(report: Path, out: Path, chromium: str | None = None) -> list[Path]:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    written = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            for name, (width, height, scale) in VIEWPORTS.items():
                page = browser.new_page(viewport={"width": width, "height": height}, device_scale_factor=scale)
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                page.goto(report.resolve().as_uri(), wait_until="load")
                overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
                # one screen as tall as the page: Chromium paints images out of view blank in a full-page shot
                full = page.evaluate("document.documentElement.scrollHeight")
                page.set_viewport_size({"width": width, "height": full})
                page.wait_for_timeout(300)
                path = out / f"report-{name}.png"
                page.screenshot(path=str(path), full_page=True)
                _shrink(path)
                written.append(path)
                print(f"{path} ({width} px wide)" + (f"; page wider than the screen by {overflow} px" if overflow > 1
                                                      else "") + (f"; errors: {errors}" if errors else ""))
                page.close()
        finally:
            browser.close()
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, help="a finished run directory (default: train a short digits run)")
    ap.add_argument("--out", type=Path, default=Path("docs"), help="folder for the PNGs (default: docs)")
    ap.add_argument("--chromium", help="the Chromium to drive (default: chromium on PATH, else Playwright's)")
    args = ap.parse_args(argv)
    from cnnfit.report import write_report

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.run if args.run is not None else train_digits(Path(tmp))
        if not run_dir.is_dir():
            ap.error(f"--run {run_dir}: no such run directory; pass a folder written by cnnfit train")
        report = write_report(run_dir)
        print(f"report: {report}")
        screenshots(report, args.out, args.chromium or shutil.which("chromium"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
