"""The report's sections on what the run was trained on and how: data, config, environment, timing and the
plots no other section shows. Each is a function of the run returning its section's inner HTML, '' when it has
nothing to show."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

from cnnfit.report.html import data_table, esc, kv_table, note
from cnnfit.report.numbers import is_number, metric_label, plain_text, to_float
from cnnfit.report.run_scores import EXPLAIN_CAPTIONS
from cnnfit.report.runfiles import PLOT_CAPTIONS, RunFiles, figures


def _data(run: RunFiles) -> str:
    rep, split = run.data_report if isinstance(run.data_report, dict) else {}, run.split or {}
    if not (rep or run.split or run.skipped_txt is not None):
        return figures(run, "samples.png")
    counts = rep.get("counts") or {}
    per_split = counts.get("per_split") or {k: len(v) for k, v in split.items() if isinstance(v, list)}
    # kv_table leaves out the rows whose value is ''
    facts = [("images", plain_text(rep["images"]) if "images" in rep else ""),
             ("decoded shape", esc(" x ".join(map(str, rep["shape"]))) if isinstance(rep.get("shape"), list) else ""),
             ("split", esc(how) if (how := rep.get("split") or split.get("how")) else ""),
             ("images per split", " / ".join(f"{esc(k)} {plain_text(v)}" for k, v in per_split.items()))]
    imb = rep.get("imbalance")
    if isinstance(imb, dict) and imb.get("ratio") is not None:
        facts.append(("imbalance", f"{esc(imb['ratio'])}x, largest '{esc(imb.get('largest'))}' / smallest "
                      f"'{esc(imb.get('smallest'))}' ({esc(imb.get('split'))})"))
    files = rep.get("files")
    if isinstance(files, dict) and isinstance(files.get("width"), dict):
        w, h = files["width"], files["height"]
        w_min, w_max, h_min, h_max = (plain_text(d.get(k)) for d in (w, h) for k in ("min", "max"))
        facts.append(("file sizes (px)", f"{w_min}-{w_max} x {h_min}-{h_max}, median {plain_text(w.get('median'))} x "
                      f"{plain_text(h.get('median'))}"))
    if isinstance(files, dict) and isinstance(files.get("modes"), dict):
        facts.append(("colour modes", ", ".join(f"{esc(k)} {plain_text(v)}" for k, v in files["modes"].items())))
    return (kv_table(facts) + _data_counts(counts) + _skipped(rep, run) + _data_checks(rep)
            + figures(run, "samples.png"))


def _data_counts(counts: dict) -> str:
    """Images per class (or label) and split, and a regression target's range per split."""
    out = ""
    key = next((k for k in ("per_class", "per_label") if isinstance(counts.get(k), dict)), None)
    if key:
        per = counts[key]
        cols = list(dict.fromkeys(c for v in per.values() if isinstance(v, dict) for c in v))
        rows = [[esc(name)] + [plain_text(v.get(c, "")) for c in cols]
                for name, v in per.items() if isinstance(v, dict)]
        out += (f"<h3>Images per {'class' if key == 'per_class' else 'label'} and split</h3>"
                + data_table([key.removeprefix("per_")] + [esc(c) for c in cols], rows, set(range(1, len(cols) + 1))))
    target = counts.get("target")
    if isinstance(target, dict):
        rows = [[esc(s)] + [plain_text((v or {}).get(k, "")) for k in ("min", "max", "mean", "std")]
                for s, v in {"all": target, **(target.get("per_split") or {})}.items()]
        out += (f"<h3>Target '{esc(target.get('name', ''))}'</h3>"
                + data_table(["split", "min", "max", "mean", "std"], rows, {1, 2, 3, 4}))
    return out


def _skipped(rep: dict, run: RunFiles) -> str:
    """The files that were not decoded, from data_report.json, else skipped.txt: the first ten."""
    skipped = [(s.get("file", ""), s.get("reason", "")) for s in rep.get("skipped") or [] if isinstance(s, dict)]
    if not skipped and run.skipped_txt:
        skipped = [tuple((line.split("\t", 1) + [""])[:2]) for line in run.skipped_txt.splitlines() if line.strip()]
    out = f"<h3>Skipped files: {len(skipped):,}</h3>"
    if not skipped:
        return out + note("Every file decoded." if rep or run.skipped_txt is not None else "Not recorded.")
    out += data_table(["file", "reason"], [[f'<span class="path">{esc(f)}</span>', esc(w)] for f, w in skipped[:10]])
    if len(skipped) > 10:
        out += note(f"... and {len(skipped) - 10:,} more (skipped.txt, data_report.json)")
    return out


def _data_checks(rep: dict) -> str:
    """What the data checks found: duplicate counts and the findings, the first thirty."""
    out = ""
    summary = rep.get("summary")
    if isinstance(summary, dict):
        dup = [("exact duplicate groups", "exact_groups"), ("extra exact copies", "exact_extra_copies"),
               ("near-duplicate pairs", "near_pairs"), ("across splits (leaks)", "leaks"),
               ("same image, different labels", "label_conflicts"), ("images to leave out", "to_drop")]
        out += "<h3>Duplicates</h3>" + kv_table([(label, plain_text(summary[k])) for label, k in dup if k in summary])
        how = rep.get("duplicates") or {}
        if how.get("exact_by"):
            out += note(f"Exact: same {how['exact_by']}; near: {how.get('near_by', 'not searched')}.")
    findings = [f for f in rep.get("findings") or [] if isinstance(f, dict)]
    if findings:
        items = "".join(f'<li><span class="lvl {esc(f.get("level", ""))}">{esc(f.get("level", ""))}</span> '
                        f'<b>{esc(f.get("kind", ""))}</b>: <span class="msg">{esc(f.get("message", ""))}</span></li>'
                        for f in findings[:30])
        out += f'<h3>Findings: {len(findings):,}</h3><ul class="findings">{items}</ul>'
        if len(findings) > 30:
            out += note(f"... and {len(findings) - 30:,} more in data_report.json")
    elif rep:
        out += note("No findings: no duplicates, leaks, label conflicts or unreadable files.")
    return out


def _config(run: RunFiles) -> str:
    cfg = run.config
    if cfg is None:
        return f"<pre>{esc(text)}</pre>" if (text := run.text("config.yaml")) else ""
    if not isinstance(cfg, dict):
        return f"<pre>{esc(cfg)}</pre>"
    top = [(k, v) for k, v in cfg.items() if not isinstance(v, dict)]
    groups = ([("run", dict(top))] if top else []) + [(k, v) for k, v in cfg.items() if isinstance(v, dict)]
    cards = []
    for name, values in groups:
        rows = "".join(f'<tr><th scope="row">{esc(k)}</th><td>{esc(_yaml_value(v))}</td></tr>'
                       for k, v in _flat(values))
        cards.append(f'<div class="cfg"><h3>{esc(name)}</h3><table class="kv"><tbody>{rows}</tbody></table></div>')
    where = Path(str(cfg.get("project", "."))) / run.dir.name / "config.yaml"
    return (note(f"Every setting as resolved for this run (config.yaml); repeat it with cnnfit train config={where}.")
            + f'<div class="cfgs">{"".join(cards)}</div>')


def _flat(d: dict, prefix: str = "") -> list[tuple[str, Any]]:
    """Dotted keys and values; unlike config.flatten, an empty mapping stays as a row, so every key is shown."""
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out += _flat(v, f"{prefix}{k}.")
        else:
            out.append((f"{prefix}{k}", v))
    return out


def _yaml_value(v: Any) -> str:
    return json.dumps(v) if v is None or isinstance(v, (bool, list, dict)) else str(v)  # null, true, [1, 2]


def _environment(run: RunFiles) -> str:
    m = run.metrics
    env = m.get("environment")
    if not isinstance(env, dict) or not env:
        return note("Not recorded: this run's metrics.json has no environment (written by an older cnnfit).")
    return kv_table([(k, m.num("environment", k) if is_number(v) and v is not None else esc("none" if v is None else v))
                     for k, v in env.items()])


def _timing(run: RunFiles) -> str:
    m = run.metrics
    known = {"setup_seconds": "setup (data, model)", "train_seconds": "training", "eval_seconds": "evaluation"}
    rows = [(label, m.num("timings", key)) for key, label in known.items()]
    timings = m.get("timings")
    if isinstance(timings, dict):
        rows += [(metric_label(k), m.num("timings", k)) for k, v in timings.items() if k not in known and is_number(v)]
        if isinstance(timings.get("cache_hit"), bool):
            rows.append(("data cache", "hit: decoded images reused" if timings["cache_hit"] else "miss: decoded now"))
        rows += [(metric_label(k), esc(v)) for k, v in timings.items() if isinstance(v, str)]
    seconds = [to_float(r["seconds"]) for r in run.history or [] if "seconds" in r]
    seconds = [s for s in seconds if math.isfinite(s)]
    if seconds:
        rows.append(("seconds per epoch (history.csv)", f"{sum(seconds) / len(seconds):,.1f} mean, "
                     f"{min(seconds):,.1f} to {max(seconds):,.1f} over {len(seconds)} epochs"))
    return kv_table(rows) + note("In seconds, wall clock.") if any(v for _, v in rows) else ""


RENDERERS: dict[str, Callable[[RunFiles], str]] = {
    "data": _data, "config": _config, "environment": _environment, "timing": _timing,
    "more-plots": lambda run: figures(run, *sorted(n for n in run.plots
                                                   if n not in PLOT_CAPTIONS and n not in EXPLAIN_CAPTIONS))}

__all__ = ["RENDERERS"]
