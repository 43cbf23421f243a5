"""label_review.html: the images whose labels look wrong (data.label_issues), each with a keep / relabel / drop
choice, and an Export button that writes, in the browser, the dataset's manifest with the choices applied.

One self-contained file: thumbnails as PNG data URIs, inline CSS and one inline script, allowed by its hash in a
Content-Security-Policy that forbids everything else (no network, no other script). File names and labels reach
the page escaped in HTML, and the script reads them from a <script type="application/json"> element and writes
them with textContent, so no user string is ever parsed as markup. Nothing on disk is moved or deleted: the
export is a CSV the user downloads and trains on (`data=reviewed_manifest.csv`).

Array datasets (digits, .npz) have no paths to write in a manifest, so there the export is the choices alone:
`label_choices.csv`, one row per flagged image: index,file,given,choice,label.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cnnfit.data.manifest import manifest_header
from cnnfit.errors import CnnfitError
from cnnfit.files import write_atomic
from cnnfit.report.html import esc, note, page, png_uri

THUMB = 128  # px: the longer side of a thumbnail; 8 px digits are blown up 16x, photos shrunk to it
MAX_SHOWN = 1000  # flagged images on the page, largest score first: ~5 kB each, so the page stays under ~10 MB
MANIFEST_NAME, CHOICES_NAME = "reviewed_manifest.csv", "label_choices.csv"

_CSS = """
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,230px),1fr));gap:12px}
.card{border:1px solid var(--line);border-radius:6px;padding:8px;min-width:0;background:#fff}
.card img{display:block;margin:0 auto 6px;image-rendering:pixelated;max-width:100%;height:auto}
.card .path{font-size:12px;color:var(--muted)}
.card fieldset{border:0;padding:0;margin:6px 0 0}
.card label{display:block;font-size:14px}
.card select{max-width:100%}
.card[data-choice=drop]{background:#ffebe9}.card[data-choice=relabel]{background:#fff8c5}
button{font:inherit;padding:6px 14px;border-radius:6px;border:1px solid var(--accent);background:var(--accent);
color:#fff;cursor:pointer}
button:disabled{opacity:.5;cursor:default}
"""

# reads the JSON, wires the choices, and builds the CSV on Export; user strings only ever go through textContent
_SCRIPT = """
(() => {
  const data = JSON.parse(document.getElementById("review-data").textContent);
  const cards = [...document.querySelectorAll(".card")];
  const choice = card => {
    const kind = card.querySelector("input[type=radio]:checked").value;
    return {kind, label: kind === "relabel" ? card.querySelector("select").value : data.issues[card.dataset.i].given};
  };
  const tally = () => {
    const n = {keep: 0, relabel: 0, drop: 0};
    cards.forEach(card => { const c = choice(card); card.dataset.choice = c.kind; n[c.kind] += 1; });
    document.getElementById("tally").textContent =
      `${n.keep} kept, ${n.relabel} relabelled, ${n.drop} dropped of ${cards.length} shown`;
  };
  cards.forEach(card => {
    card.querySelector("select").addEventListener("change", () => {
      card.querySelector("input[value=relabel]").checked = true; tally(); });
    card.querySelectorAll("input[type=radio]").forEach(r => r.addEventListener("change", tally));
  });
  const cell = v => /[",\\r\\n]/.test(String(v)) ? `"${String(v).replace(/"/g, '""')}"` : String(v);
  const line = cells => cells.map(cell).join(",") + "\\r\\n";
  const build = () => {
    if (data.mode === "choices") {
      return [line(["index", "file", "given", "choice", "label"])].concat(cards.map(card => {
        const it = data.issues[card.dataset.i], c = choice(card);
        return line([it.index, it.file, it.given, c.kind, c.label]); }));
    }
    const rows = data.rows.map(r => r.slice());
    const dropped = new Set();
    cards.forEach(card => {
      const it = data.issues[card.dataset.i], c = choice(card);
      if (c.kind === "drop") dropped.add(it.row); else if (c.kind === "relabel") rows[it.row][1] = c.label;
    });
    const split = rows.some(r => r[2] !== "");  // a manifest gives a split for every row or for none
    const head = split ? data.header : data.header.slice(0, 2);
    return [line(head)].concat(rows.filter((r, i) => !dropped.has(i)).map(r => line(split ? r : r.slice(0, 2))));
  };
  document.getElementById("export").addEventListener("click", () => {
    const url = URL.createObjectURL(new Blob(build(), {type: "text/csv"}));
    const a = document.createElement("a");
    a.href = url; a.download = data.name; document.body.appendChild(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  });
  tally();
})();
"""


def _thumb(image: np.ndarray) -> tuple[str, int, int]:
    """(C, H, W) uint8 -> a PNG data URI of it, whole pixels blown up when small, shrunk to THUMB px when large."""
    from PIL import Image

    image = np.asarray(image, dtype=np.uint8)
    c, h, w = image.shape
    pixels = image[0] if c in (1, 2) else image[:3].transpose(1, 2, 0)  # (H, W) or (H, W, 3); an alpha is left out
    scale = max(1, THUMB // max(h, w))
    pil = Image.fromarray(pixels.repeat(scale, axis=0).repeat(scale, axis=1))  # nearest: each pixel a sharp block
    pil.thumbnail((THUMB, THUMB))
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return png_uri(buf.getvalue()), pil.width, pil.height


def _radio(i: int, value: str, on: str = "") -> str:
    text = "relabel to" if value == "relabel" else value
    return f'<label><input type="radio" name="c{i}" value="{value}"{on}> {text}</label>'


def _card(i: int, issue: dict, image: np.ndarray, classes: list[str]) -> str:
    uri, w, h = _thumb(image)
    name = issue["file"] or f"image {issue['index']}"
    options = "".join(f'<option{" selected" if c == issue["suggested"] else ""}>{esc(c)}</option>' for c in classes)
    return (f'<div class="card" data-i="{i}" data-kind="{esc(issue["kind"])}" data-choice="keep"><img src="{uri}" '
            f'width="{w}" height="{h}" alt="{esc(name)}, labelled {esc(issue["given"])}">'
            f'<div><b>#{issue["rank"]}</b> given <b>{esc(issue["given"])}</b>, looks like '
            f'<b>{esc(issue["suggested"])}</b></div>'
            f'<div class="num">score {issue["score"]:.3f}</div><div class="path">{esc(name)}</div>'
            f'<fieldset><legend class="note">What to do</legend>{_radio(i, "keep", " checked")}'
            f'{_radio(i, "relabel")}<select aria-label="new label of {esc(name)}">{options}</select>'
            f'{_radio(i, "drop")}</fieldset></div>')


def _rows_of(issues: list[dict], manifest_rows: Sequence[tuple[str, str, str]] | None) -> list[int] | None:
    """Each issue's row in `manifest_rows`, matched by path; None for an array dataset (no paths to match)."""
    if not manifest_rows or not all(i["file"] for i in issues):
        return None
    at = {str(p): r for r, (p, _, _) in enumerate(manifest_rows)}
    missing = [i["file"] for i in issues if i["file"] not in at]
    if missing:
        raise CnnfitError(f"'{missing[0]}' is flagged but not among the {len(manifest_rows)} manifest rows "
                          f"({len(missing)} such); pass the rows of the dataset the cross-validation ran on")
    return [at[i["file"]] for i in issues]


def _absolute(file: str) -> str:
    """A file on disk as an absolute path, so the exported manifest reads from wherever it is saved; a zip member
    (archive.zip:member) or anything else not on disk as it is."""
    return str(Path(file).absolute()) if Path(file).is_file() else file


def _json(value: object) -> str:
    """JSON that cannot end its <script> element nor open a comment: <, > and & as \\u escapes."""
    text = json.dumps(value, ensure_ascii=False)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def render_label_review(issues: list[dict], images: Sequence[np.ndarray] | np.ndarray, *, classes: list[str],
                        manifest_rows: Sequence[tuple[str, str, str]] | None) -> str:
    """The review page as one HTML string; see write_label_review."""
    if len(images) != len(issues):
        raise CnnfitError(f"{len(images)} images for {len(issues)} flagged labels; pass the image of each issue")
    # the likely wrong first, then the doubts between overlapping classes; each part largest score first
    order = sorted(range(len(issues)), key=lambda j: (issues[j]["kind"] != "wrong", -issues[j]["score"]))[:MAX_SHOWN]
    shown = [issues[j] for j in order]
    rows_at = _rows_of(shown, manifest_rows)
    mode = "choices" if rows_at is None else "manifest"
    rows = [] if mode == "choices" else [[_absolute(str(p)), str(label), str(split or "")]
                                         for p, label, split in manifest_rows]
    data = {"mode": mode, "name": CHOICES_NAME if mode == "choices" else MANIFEST_NAME,
            "header": manifest_header("classify"), "rows": rows,
            "issues": [{"index": it["index"], "file": it["file"], "given": it["given"],
                        "row": rows_at[k] if rows_at else -1} for k, it in enumerate(shown)]}
    wrong = sum(i["kind"] == "wrong" for i in issues)
    more = f" The {len(issues) - len(shown)} further flagged images with the lowest scores are not shown." \
        if len(issues) > len(shown) else ""
    body = note(f"{wrong} image{'' if wrong == 1 else 's'} whose given label the out-of-fold model doubts, most likely "
                "wrong first (score = 1 - probability of the given label). Choose keep, relabel or drop for each, "
                "then export."
                + more) + '<p id="tally" class="note" aria-live="polite"></p>'
    for kind in ("wrong", "overlap"):
        cards = "".join(_card(k, issues[j], images[j], classes) for k, j in enumerate(order)
                        if issues[j]["kind"] == kind)
        if kind == "overlap" and cards:
            pairs = sorted({" / ".join(sorted((i["given"], i["suggested"]))) for i in shown if i["kind"] == kind})
            body += (f"<h3>Between classes that overlap ({len(issues) - wrong})</h3>" + note(
                f"The model confuses {', '.join(pairs)} far more often than any other pair of classes, so a doubt "
                "there is more often a hard image than a wrong label. Check these by eye; a drop here also removes "
                "hard examples the model needs."))
        body += f'<div class="cards">{cards}</div>' if cards else ""
    if mode == "manifest":
        export = note(f"Export downloads {MANIFEST_NAME}: every image of the dataset "
                      f"({len(manifest_rows)} rows), relabelled images with their new label and dropped ones left "
                      "out. Its paths are absolute: train with data=reviewed_manifest.csv data.allow_outside=true. "
                      "Nothing on disk is moved or deleted.")
    else:
        export = note(f"This dataset has no image files, so a manifest cannot name its images. Export downloads "
                      f"{CHOICES_NAME} instead: one row per image shown (index,file,given,choice,label). Nothing on "
                      "disk is changed.")
    export += '<p><button type="button" id="export">Export</button></p>'
    footer = (f'Written by cnnfit from out-of-fold probabilities; issues found by cleanlab.'
              f'<script type="application/json" id="review-data">{_json(data)}</script><script>{_SCRIPT}</script>')
    html = page("label review · cnnfit", "cnnfit label review", f"{len(issues)} labels to check",
                [("flagged", "Flagged images", body), ("export", "Export", export)], footer, css=_CSS)
    sha = base64.b64encode(hashlib.sha256(_SCRIPT.encode("utf-8")).digest()).decode("ascii")
    csp = (f'<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; '
           f'style-src \'unsafe-inline\'; script-src \'sha256-{sha}\'">')  # only this script runs; nothing loads
    return html.replace('<meta charset="utf-8">', '<meta charset="utf-8">' + csp, 1)


def write_label_review(issues: list[dict], images: Sequence[np.ndarray] | np.ndarray, path: str | Path, *,
                       classes: list[str] | None = None,
                       manifest_rows: Sequence[tuple[str, str, str]] | None) -> Path:
    """Write label_review.html (`path` is the file or a folder for it) atomically; returns its path.

    `issues` as data.label_issues.find_label_issues returns them; `images` the (C, H, W) uint8 image of each
    issue, in the same order (`ds.images[[i["index"] for i in issues]]`); `classes` the choices a relabel offers
    (default: every class named in the issues); `manifest_rows` (path, label, split) for every train/val/test
    image of the dataset ('' for no split), the rows the export writes, or None for an array dataset."""
    path = Path(path)
    if path.is_dir() or not path.suffix:
        path = path / "label_review.html"
    if classes is None:
        classes = sorted({i["given"] for i in issues} | {i["suggested"] for i in issues})
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, render_label_review(issues, images, classes=classes, manifest_rows=manifest_rows))


__all__ = ["CHOICES_NAME", "MANIFEST_NAME", "MAX_SHOWN", "render_label_review", "write_label_review"]
