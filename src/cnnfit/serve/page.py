"""GET /: one self-contained upload page (no external resources): pick or drop an image, see its top-k classes
as bars, "unknown" above them when the server answers so, and with "explain" on, the Grad-CAM heatmap beside the
image. It talks to /health (does the server want a key? can it explain?) and /predict, and writes user data only
through textContent, alt and an img's src set to the server's data:image/png URI, so a file name can never become
markup."""

from __future__ import annotations

import base64
import hashlib

SCRIPT = """
const $ = id => document.getElementById(id);
const input = $("file"), drop = $("drop"), preview = $("preview"), bars = $("bars"), error = $("error"),
      heat = $("heat"), verdict = $("verdict"), note = $("note");
const PNG_URI = "data:image/png;base64,";
let objectUrl = null;

fetch("health").then(r => r.json()).then(h => {
  $("model").textContent = h.model || "(named to key holders)";  // a server with a key tells no one else
  $("keyrow").hidden = !h.auth;
  $("explain").checked = h.explain === true;  // on where the server says it can; a keyed server does not say
  $("explainrow").hidden = h.explain === false;  // an .onnx server cannot
}).catch(() => {});

function showError(text) { error.textContent = text; error.hidden = false; }

async function classify(file) {
  error.hidden = true; bars.replaceChildren(); $("status").textContent = "classifying " + file.name + "...";
  heat.hidden = true; heat.removeAttribute("src"); verdict.hidden = true; note.hidden = true;
  if (objectUrl) URL.revokeObjectURL(objectUrl);
  objectUrl = URL.createObjectURL(file); preview.src = objectUrl; preview.alt = file.name; preview.hidden = false;
  const body = new FormData(); body.append("files", file, file.name);
  const headers = $("key").value ? {"X-API-Key": $("key").value} : {};
  let res, data;
  try {
    const explain = $("explain").checked ? "&explain=true" : "";
    res = await fetch("predict?topk=" + document.body.dataset.topk + explain, {method: "POST", body, headers});
    data = await res.json();
  } catch (e) { $("status").textContent = ""; showError("no answer from the server: " + e.message); return; }
  $("status").textContent = "";
  if (!res.ok) { showError(res.status + ": " + (data.detail || res.statusText)); return; }
  const p = data.predictions[0], top = p.top;
  if (p.answer === "unknown") {
    verdict.textContent = "Unknown: the model is not sure enough to answer (top probability " +
      (100 * p.score).toFixed(1) + "%, under the server's threshold). Its best guesses:";
    verdict.hidden = false;
  }
  if (typeof p.heatmap === "string" && p.heatmap.startsWith(PNG_URI)) {  // only a PNG the server drew
    heat.src = p.heatmap; heat.alt = "heatmap: where the model looked in " + file.name + " for " + top[0].class;
    heat.hidden = false;
  }
  if (data.explain_note) { note.textContent = data.explain_note; note.hidden = false; }
  for (const t of top) {
    const pct = (100 * t.prob).toFixed(1) + "%";
    const row = document.createElement("li"), label = document.createElement("span"),
          track = document.createElement("span"), fill = document.createElement("span"),
          value = document.createElement("span");
    row.className = "bar"; label.className = "cls"; track.className = "track"; fill.className = "fill";
    value.className = "pct"; label.textContent = t.class; value.textContent = pct; fill.style.width = pct;
    track.append(fill); row.append(label, track, value); bars.append(row);
  }
  $("status").textContent = data.model + ", " + data.ms.toFixed(1) + " ms";
}

input.addEventListener("change", () => { if (input.files.length) classify(input.files[0]); });
for (const ev of ["dragenter", "dragover"])
  drop.addEventListener(ev, e => { e.preventDefault(); drop.classList.add("over"); });
for (const ev of ["dragleave", "drop"])
  drop.addEventListener(ev, e => { e.preventDefault(); drop.classList.remove("over"); });
drop.addEventListener("drop", e => { if (e.dataTransfer.files.length) classify(e.dataTransfer.files[0]); });
"""

STYLE = """
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2330;
       background: #f4f6f9; }
main { max-width: 40rem; margin: 0 auto; padding: 1rem; }
h1 { font-size: 1.35rem; margin: .5rem 0 0; }
.sub { color: #5b6475; margin: 0 0 1rem; font-size: .9rem; }
#drop { display: block; border: 2px dashed #9aa6bd; border-radius: 12px; padding: 1.5rem 1rem; text-align: center;
        background: #fff; cursor: pointer; }
#drop.over { border-color: #2f6fed; background: #eef3ff; }
#drop input { display: block; margin: .75rem auto 0; max-width: 100%; }
#keyrow, #explainrow { margin: .75rem 0 0; }
#keyrow input { width: 100%; padding: .4rem; font: inherit; }
.result { display: flex; flex-wrap: wrap; gap: 1rem; margin-top: 1rem; align-items: flex-start; }
#preview, #heat { width: 9rem; height: 9rem; object-fit: contain; image-rendering: pixelated; background: #fff;
           border: 1px solid #d5dbe5; border-radius: 8px; }
#bars { flex: 1 1 14rem; list-style: none; margin: 0; padding: 0; }
.bar { display: grid; grid-template-columns: minmax(3rem, 8rem) 1fr 3.6rem; gap: .5rem; align-items: center;
       margin: .3rem 0; }
.cls { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; font-weight: 600; }
.track { height: .9rem; background: #dde3ee; border-radius: 5px; overflow: hidden; }
.fill { display: block; height: 100%; background: #2f6fed; }
.bar:first-child .fill { background: #1b9e5a; }
.pct { text-align: right; font-variant-numeric: tabular-nums; }
#verdict { font-weight: 600; color: #8a4b00; background: #fff4e0; border-radius: 8px; padding: .5rem .8rem;
           margin: 1rem 0 0; }
#note { color: #5b6475; font-size: .85rem; }
#status { color: #5b6475; font-size: .9rem; min-height: 1.3em; }
#error { color: #b3261e; background: #fdecea; border-radius: 8px; padding: .6rem .8rem; overflow-wrap: anywhere; }
"""

PAGE = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>cnnfit: classify an image</title><link rel="icon" href="data:,">
<style>{STYLE}</style></head>
<body data-topk="__TOPK__"><main>
<h1>Classify an image</h1><p class="sub">model <span id="model">...</span></p>
<label id="drop">Drop an image here, or choose one
<input id="file" type="file" accept="image/*"></label>
<p id="keyrow" hidden><label>API key <input id="key" type="password" autocomplete="off"></label></p>
<p id="explainrow"><label><input id="explain" type="checkbox"> explain: show where the model looked</label></p>
<p id="error" role="alert" hidden></p>
<p id="verdict" role="status" hidden></p>
<div class="result"><img id="preview" hidden alt=""><img id="heat" hidden alt="">
<ol id="bars" aria-label="top classes"></ol></div>
<p id="note" hidden></p>
<p id="status" aria-live="polite"></p>
</main><script>{SCRIPT}</script></body></html>
"""

# the script is allowed by its hash, and nothing may load from elsewhere
_SCRIPT_HASH = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
CSP = (f"default-src 'none'; script-src 'sha256-{_SCRIPT_HASH}'; style-src 'unsafe-inline'; img-src blob: data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
