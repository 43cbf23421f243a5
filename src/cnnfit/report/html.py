"""The HTML building blocks and the stylesheet that the run report and the tuning report share: both pages are
one self-contained file, inline CSS and no JavaScript, so the pieces below only ever return strings."""

from __future__ import annotations

import base64
import html
import re
from typing import Any

# the whole stylesheet of a report page; a page that needs more appends its own rules after it
CSS = """
:root{--fg:#1b1f24;--muted:#57606a;--line:#d0d7de;--soft:#eaeef2;--bg:#f6f8fa;--accent:#0550ae;color-scheme:light}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%;text-size-adjust:100%}
body{margin:0;background:var(--bg);color:var(--fg);font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,
"Helvetica Neue",Arial,sans-serif;overflow-wrap:break-word}
.wrap{max-width:1100px;margin:0 auto;padding:0 16px}
header{background:#fff;border-bottom:1px solid var(--line)}
header .wrap{padding-top:18px;padding-bottom:12px}
h1{font-size:1.5rem;margin:0;line-height:1.25}
h1 code{font-size:inherit}
header p{margin:4px 0 0;color:var(--muted)}
nav{position:sticky;top:0;z-index:2;background:#fff;border-bottom:1px solid var(--line);
box-shadow:0 1px 3px rgba(0,0,0,.04)}
nav .wrap{display:flex;gap:2px 4px;overflow-x:auto;white-space:nowrap;padding-top:6px;padding-bottom:6px}
nav a{color:var(--accent);text-decoration:none;font-size:14px;padding:3px 8px;border-radius:6px}
nav a:hover,nav a:focus{background:var(--soft);text-decoration:underline}
main{padding:4px 0 24px}
section{background:#fff;border:1px solid var(--line);border-radius:8px;padding:16px 20px;margin:16px 0;
scroll-margin-top:52px;min-width:0}
h2{font-size:1.25rem;margin:0 0 12px;line-height:1.3}
h3{font-size:1rem;margin:20px 0 8px}
code{font:13px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.tiles{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,150px),1fr));gap:10px;margin:0 0 14px;
align-items:start}
.tile{border:1px solid var(--line);border-radius:6px;padding:8px 12px;background:#fff;min-width:0}
.tile .k{font-size:13px;color:var(--muted)}
.tile .v{font-size:1.3rem;font-weight:600;font-variant-numeric:tabular-nums;overflow-wrap:anywhere}
.tile .t{font-size:12px;color:var(--muted)}
/* a shadow at each edge of a wide table that has more to scroll to */
.scroll{overflow-x:auto;max-width:100%;margin:0 0 12px;
background:linear-gradient(to right,#fff 30%,rgba(255,255,255,0)) left/32px 100% no-repeat local,
linear-gradient(to left,#fff 30%,rgba(255,255,255,0)) right/32px 100% no-repeat local,
radial-gradient(farthest-side at 0 50%,rgba(0,0,0,.18),transparent) left/10px 100% no-repeat scroll,
radial-gradient(farthest-side at 100% 50%,rgba(0,0,0,.18),transparent) right/10px 100% no-repeat scroll}
table{border-collapse:collapse;font-size:14px}
th,td{padding:4px 10px;border-bottom:1px solid var(--soft);text-align:left;vertical-align:top}
thead th{border-bottom:2px solid var(--line);font-weight:600;white-space:nowrap}
th[scope=row]{font-weight:500;color:var(--muted);white-space:nowrap}
.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.num{font-variant-numeric:tabular-nums}
.kv td{overflow-wrap:anywhere}
table.perclass td:first-child,table.perclass th:first-child{position:sticky;left:0;background:#fff;z-index:1}
.bar{display:inline-block;min-width:4em;padding:0 3px;text-align:right;
background:linear-gradient(90deg,#c8e1ff calc(var(--v)*100%),transparent 0)}
table.cm td.n{padding:2px 6px}
.path,.msg{overflow-wrap:anywhere}
ul.findings{padding-left:0;list-style:none;margin:0 0 12px}
ul.findings li{padding:4px 0;border-bottom:1px solid var(--soft)}
.lvl{display:inline-block;padding:0 6px;border-radius:10px;font-size:12px;font-weight:600}
.lvl.error{background:#ffebe9;color:#82071e}.lvl.warning{background:#fff8c5;color:#633c01}
.lvl.info{background:#ddf4ff;color:#0a3069}
.figs{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,440px),1fr));gap:16px;margin:8px 0 12px}
figure{margin:0;min-width:0}
figure.wide img{max-width:100%}
figure.wide{grid-column:1/-1}
figure img{display:block;max-width:min(100%,820px);height:auto;border:1px solid var(--soft);border-radius:4px;
background:#fff}
figcaption{font-size:13px;color:var(--muted);margin-top:6px}
details{margin:8px 0}
summary{cursor:pointer;color:var(--accent)}
.note{color:var(--muted);font-size:14px;margin:6px 0 10px}
.problem{background:#ffebe9;color:#82071e;border-radius:6px;padding:6px 10px}
.cfgs{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,320px),1fr));gap:12px;align-items:start}
.cfg{border:1px solid var(--soft);border-radius:6px;padding:4px 8px 8px;min-width:0}
.cfg h3{margin:4px 0}
.cfg table{width:100%;table-layout:fixed}
.cfg th{width:50%;overflow-wrap:anywhere;white-space:normal}
.cfg td{overflow-wrap:anywhere}
pre{overflow-x:auto;background:var(--bg);padding:12px;border-radius:6px;font-size:13px}
footer{color:var(--muted);font-size:13px;padding-bottom:24px}
@media (max-width:600px){.wrap{padding:0 10px}section{padding:12px;margin:10px 0}h1{font-size:1.25rem}
.tile .v{font-size:1.15rem}table{font-size:13px}th,td{padding:4px 6px}}
@media print{nav{position:static}section{break-inside:avoid-page}}
"""


def page(title: str, heading: str, subtitle: str, sections: list[tuple[str, str, str]], footer: str,
         css: str = "") -> str:
    """A whole report page: `heading` (HTML) and `subtitle` at the top, a table of contents, one section per
    (id, title, body HTML), and `footer` (HTML) at the end; `css` is appended to the shared stylesheet."""
    nav = "".join(f'<a href="#{sid}">{esc(name)}</a>' for sid, name, _ in sections)
    main = "".join(f'<section id="{sid}"><h2>{esc(name)}</h2>{body}</section>' for sid, name, body in sections)
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}{css}</style></head><body>"
            f'<header><div class="wrap"><h1>{heading}</h1><p>{esc(subtitle)}</p></div></header>'
            f'<nav aria-label="Sections"><div class="wrap">{nav}</div></nav>'
            f'<main class="wrap">{main}</main><footer class="wrap">{footer}</footer></body></html>\n')


def png_uri(data: bytes) -> str:
    """PNG bytes as a data: URI, so a page embeds its images and stays one file."""
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def esc(text: Any) -> str:
    """`text` as HTML text or attribute value: &, <, >, " and ' escaped."""
    return html.escape(str(text), quote=True)


def duration(seconds: float | None) -> str:
    """Seconds as a person reads them: 42.0 s, 3 min 05 s, 2 h 10 min; '-' when unknown."""
    if seconds is None:
        return "-"
    minutes, s = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{seconds:.1f} s" if seconds < 60 else f"{minutes} min {s:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def note(text: str) -> str:
    """A muted paragraph that says how to read what is around it."""
    return f'<p class="note">{esc(text)}</p>'


def tile(label: str, value: str, note: str = "") -> str:
    """One headline number (`value` is HTML already) with its label and an optional small note; '' when there is
    no value, so callers can list every tile and let the absent ones drop out."""
    if not value:
        return ""
    small = f'<div class="t">{esc(note)}</div>' if note else ""
    return f'<div class="tile"><div class="k">{esc(label)}</div><div class="v">{value}</div>{small}</div>'


def grid(cls: str, items: list[str]) -> str:
    """The non-empty items (tiles: cls "tiles", figures: "figs") in a responsive grid; '' when none is left."""
    shown = [item for item in items if item]
    return f'<div class="{cls}">{"".join(shown)}</div>' if shown else ""


def data_table(head: list[str], rows: list[list[str]], numeric: set[int] | None = None, cls: str = "") -> str:
    """A table in a horizontally scrolling box; cells are HTML already, columns in `numeric` right-aligned."""
    if not rows:
        return ""
    align = lambda i: ' class="n"' if i in (numeric or ()) else ""  # noqa: E731
    th = "".join(f"<th{align(i)} scope=\"col\">{h}</th>" for i, h in enumerate(head))
    body = "".join("<tr>" + "".join(f"<td{align(i)}>{c}</td>" for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f'<div class="scroll"><table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table></div>'


def kv_table(rows: list[tuple[str, str]]) -> str:
    """Two-column label/value table; values are HTML already, rows whose value is empty are left out."""
    rows = [(k, v) for k, v in rows if v != ""]
    if not rows:
        return ""
    # numbers right-aligned where every value is one; beside text they read better on the left
    align = ' class="n"' if all(_is_number_cell(v) for _, v in rows) else ""
    body = "".join(f'<tr><th scope="row">{esc(k)}</th><td{align}>{v}</td></tr>' for k, v in rows)
    return f'<div class="scroll"><table class="kv"><tbody>{body}</tbody></table></div>'


_NUMBER = re.compile(r"-?[\d,]+(\.\d+)?(e[-+]\d+)?|n/a|nan|-?inf")


def _is_number_cell(cell: str) -> bool:
    """A cell that holds one number and nothing else."""
    return bool(cell.startswith('<span class="num"') and cell.count("<span") == 1 or _NUMBER.fullmatch(cell))


def figure(uri: str, width: int, height: int, title: str, how: str, *, wide: bool) -> str:
    """An embedded image (`uri` a data: URI) captioned with its title and how to read it, which is also its alt
    text; a wide one takes a grid row of its own."""
    cls = ' class="wide"' if wide else ""
    return (f'<figure{cls}><img src="{uri}" width="{width}" height="{height}" alt="{esc(title)}: {esc(how)}">'
            f'<figcaption><b>{esc(title)}.</b> {esc(how)}</figcaption></figure>')


__all__ = ["CSS", "data_table", "esc", "figure", "grid", "kv_table", "note", "page", "png_uri", "tile"]
