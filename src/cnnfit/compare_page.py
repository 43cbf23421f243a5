"""compare.html: the runs' test metrics with the best of each column in bold, their config differences, the
curves and where each run lives, on one self-contained page (inline CSS, the PNG as a data URI, no scripts and
nothing fetched), so it can be mailed or archived as a single file."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING

from cnnfit.eval.html import esc, note

if TYPE_CHECKING:
    from cnnfit.compare import _Cells, _Heads, _Run

_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1b1b1b;background:#fff;
  margin:0 auto;max-width:1500px;padding:12px 16px 40px}
h1{font-size:1.35rem;margin:.4em 0}
h2{font-size:1.1rem;margin:1.6em 0 .5em}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch;border:1px solid #ddd;border-radius:6px}
table{border-collapse:collapse;min-width:100%;font-variant-numeric:tabular-nums}
th,td{padding:6px 9px;white-space:nowrap;border-bottom:1px solid #eee;text-align:right}
th{background:#f5f5f7;font-weight:600}
th:first-child,td:first-child{text-align:left;position:sticky;left:0;background:#fff}
th:first-child{background:#f5f5f7}
td.text,th.text{text-align:left}
td.unfinished{color:#a15c00}
strong{color:#0b6b2b}
img{display:block;width:100%;height:auto;border:1px solid #ddd;border-radius:6px}
li code{word-break:break-all}
p.note{color:#666;font-size:.9rem}
"""


def compare_page(runs: list[_Run], heads: _Heads, cells: _Cells, diffs: dict[str, list[str]], png: bytes) -> str:
    """The whole page from the metrics table's cells, each differing key's values as config.yaml writes them
    (one per run) and compare.png's bytes."""
    def row(tag: str, items: list[tuple[str, str]]) -> str:
        """A table row from (HTML, CSS class) pairs; the HTML is escaped already."""
        return "<tr>" + "".join(f'<{tag} class="{c}">{t}</{tag}>' if c else f"<{tag}>{t}</{tag}>"
                                for t, c in items) + "</tr>"

    def table(head: str, body: list[str]) -> str:
        rows = "\n".join(body)
        return f'<div class="scroll"><table>\n<thead>{head}</thead>\n<tbody>\n{rows}\n</tbody></table></div>'

    metrics = table(row("th", [(esc(h), "text" if i < 4 else "") for i, (_, h) in enumerate(heads)]), [
        row("td", [(f"<strong>{esc(t)}</strong>" if best else esc(t),
                    "unfinished" if t == "unfinished" else "text" if i < 4 else "") for i, (t, best) in enumerate(c)])
        for c in cells])
    if diffs:
        diff_html = table(row("th", [("key", "text")] + [(esc(r.label), "text") for r in runs]), [
            row("td", [(esc(k), "text")] + [(esc(v), "text") for v in values]) for k, values in diffs.items()])
    else:
        diff_html = note("none: every key but name and project is equal")
    names = ", ".join(r.label for r in runs)
    paths = "".join(f"<li><strong>{esc(r.label)}</strong>: <code>{esc(r.path)}</code>"
                    f"{' (unfinished)' if r.metrics is None else ''}</li>" for r in runs)
    image = base64.b64encode(png).decode("ascii")
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>cnnfit compare: {esc(names)}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>cnnfit compare: {len(runs)} runs</h1>
<h2>Test metrics</h2>
{metrics}
<p class="note">Bold: the best value of each column. Unfinished runs have no test metrics; their best epoch and
validation score come from history.csv.</p>
<h2>Config differences</h2>
{diff_html}
<h2>Curves</h2>
<img src="data:image/png;base64,{image}" alt="loss and validation score per epoch of each run">
<h2>Runs</h2>
<ol>{paths}</ol>
</body>
</html>
"""


__all__ = ["compare_page"]
