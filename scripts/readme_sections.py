"""README.md's generated sections, written from what they describe so they cannot drift: the commands and their keys
(cnnfit.cli.COMMANDS and the recipes folder) and the package layout (LAYOUT below, the layers of pyproject.toml's
import-linter contract, each package's modules as the tree has them).

    python scripts/readme_sections.py           # rewrite the sections between <!-- generated: NAME --> and <!-- end -->
    python scripts/readme_sections.py --check   # exit 1 when README.md is out of date (tests/test_cli.py checks it)
"""

from __future__ import annotations

import re
import sys
import textwrap
import tomllib
from pathlib import Path

import cnnfit
from cnnfit.cli import COMMANDS, key_rows
from cnnfit.config import recipes

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "cnnfit"

# What each top-level module and package of src/cnnfit is for; the layers decide the order. A package's modules are
# listed from the tree. `layout_drift()` names any entry missing here or gone from the tree.
LAYOUT = {
    "__init__.py": "the Python API: " + ", ".join(cnnfit.__all__),
    "__main__.py": "`python -m cnnfit`, as torchrun starts it",
    "recipes/": "shipped settings, `recipe=NAME`: " + ", ".join(recipes()),
    "cli.py": "the command line: one typed table of commands and keys (parsing, --help, these README sections); "
              "the only printing",
    "tune/": "the Optuna search: the space, the study and its workers, the best config's refit, the results",
    "serve/": "the web API (FastAPI), micro-batching, the upload page",
    "pipeline/": "a run from settings to scores, top to bottom (train, lr_find, inspect), and what reads a finished "
                 "run (evaluate, predict)",
    "report/": "every HTML page (run report, compare, tuning report) and their building blocks",
    "export.py": "ONNX, TorchScript and safetensors, parity-checked against torch",
    "predictor.py": "one inference path from a run directory or a .onnx: uint8 pixels in, probabilities out",
    "quantize.py": "int8 ONNX: onnxruntime's static (calibrated) or dynamic quantization and its parity figures",
    "eval/": "numbers and pictures: metrics, calibration, test-time augmentation, plots",
    "engine/": "the training loop (fit, infer) and its state, optimizers and schedules, losses, checkpoints, "
               "callbacks (one per file)",
    "models/": "the registry and one file per family; custom models (a layers YAML, pkg.mod:Class); weights "
               "(init=, from_checkpoint: the one rebuild path); summary (params, FLOPs)",
    "data/": "every source read into one uint8 ImageSet, decoded once and cached; the split; batched augmentation on "
             "the device; the loader; inspection and duplicates",
    "distributed.py": "torchrun: the process group, the collectives the loop needs, devices=N",
    "config.py": "the run config: frozen pydantic models, loaded from defaults < recipe < file < command line",
    "device.py": "device choice, seeding, the precision and memory-layout defaults measured per device",
    "files.py": "write_atomic, new_run_dir, free names: every file write goes through it",
    "errors.py": "CnnfitError and suggest (\"did you mean\")",
}
OUTSIDE = {  # beside src/
    "tests/": "mirrors src/cnnfit; fast by default, `slow` and `gpu` markers opt in",
    "benchmarks/": "scripts that print figures against baselines run side by side",
    "scripts/": "report_screenshots.py (report.html at phone and desktop widths, for docs/), readme_sections.py "
                "(these README sections)",
}


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def commands() -> str:
    lines = ["| command | what it does |", "|---|---|"]
    lines += [f"| `{_cell(f'cnnfit {name} {c.usage}')}` | {_cell(c.summary)} |" for name, c in COMMANDS.items()]
    config = [f"`{name}`" for name, c in COMMANDS.items() if c.options is None]
    lines += ["", f"Recipes (`recipe=NAME`, the YAML files in `src/cnnfit/recipes/`): "
              f"{', '.join(f'`{r}`' for r in recipes())}.", "",
              f"{', '.join(config[:-1])} and {config[-1]} take the run config's keys (`cnnfit train --help` lists "
              "every one with its default); the other commands take these:", "",
              "| command | key | default | meaning |", "|---|---|---|---|"]
    for name, c in COMMANDS.items():
        for i, (key, default, meaning) in enumerate(key_rows(c.options) if c.options else []):
            lines.append(f"| {'`' + name + '`' if i == 0 else ''} | `{key}` | {_cell(default)} | {_cell(meaning)} |")
    return "\n".join(lines)


def keys() -> str:
    """Every run-config key with its default and meaning, the auto rules' text included, as `--help` shows it."""
    from cnnfit.pipeline.resolve import help_text

    lines = ["<details><summary>every run-config key (what <code>cnnfit train --help</code> prints)</summary>", "",
             "| key | default | meaning |", "|---|---|---|"]
    lines += [f"| `{_cell(k)}` | {_cell(d)} | {_cell(m)} |" for k, d, m in help_text()]
    return "\n".join(lines + ["", "</details>"])


def _layers() -> list[list[str]]:
    """LAYOUT's entries in the order of the import-linter layers; those outside every layer come first."""
    contract = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]
    layers = [[m.strip().removeprefix("cnnfit.") for m in layer.split("|")] for layer in contract["layers"]]
    of = {e: next((i for i, layer in enumerate(layers) if e.rstrip("/").removesuffix(".py") in layer), -1)
          for e in LAYOUT}
    return [[e for e in LAYOUT if of[e] == i] for i in range(-1, len(layers))]


def _modules(entry: str) -> str:
    """A package's modules and sub-packages as the tree has them, e.g. "callbacks/ checkpoint loop"."""
    if not entry.endswith("/") or not (SRC / entry / "__init__.py").exists():
        return ""
    return " ".join(sorted(p.name + "/" if p.is_dir() else p.stem for p in (SRC / entry).iterdir()
                           if p.name not in ("__init__.py", "__pycache__") and (p.suffix == ".py" or p.is_dir())))


def layout() -> str:
    lines = [f"{'src/cnnfit/':<23}top to bottom, one layer per paragraph: a module imports only from those below"]
    for layer in _layers():
        for entry in layer:
            lines += textwrap.wrap(LAYOUT[entry], 118, initial_indent=f"  {entry:<21}", subsequent_indent=" " * 23)
            lines += textwrap.wrap(_modules(entry), 118, initial_indent=" " * 23 + "modules: ",
                                   subsequent_indent=" " * 32)
        lines.append("")
    for entry, text in OUTSIDE.items():
        lines += textwrap.wrap(text, 118, initial_indent=f"{entry:<23}", subsequent_indent=" " * 23)
    return "```\n" + "\n".join(lines) + "\n```"


def layout_drift() -> list[str]:
    """Top-level entries of src/cnnfit that LAYOUT lacks, and LAYOUT's entries the tree lacks."""
    tree = {p.name + "/" if p.is_dir() else p.name for p in SRC.iterdir()
            if p.name != "__pycache__" and (p.suffix == ".py" or p.is_dir())}
    return ([f"src/cnnfit/{e} has no line in LAYOUT (scripts/readme_sections.py)" for e in sorted(tree - set(LAYOUT))]
            + [f"LAYOUT names src/cnnfit/{e}, which does not exist" for e in sorted(set(LAYOUT) - tree)])


SECTIONS = {"commands": commands, "keys": keys, "layout": layout}


def update(text: str) -> str:
    """README text with every generated section written afresh."""
    for name, make in SECTIONS.items():
        pattern = re.compile(rf"(<!-- generated: {name} [^>]*-->\n)(?:.*?\n)??(<!-- end -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"README.md has no '<!-- generated: {name} ... -->' ... '<!-- end -->' section")
        text = pattern.sub(lambda m: m.group(1) + make() + "\n" + m.group(2), text)
    return text


def main(argv: list[str]) -> int:
    readme = ROOT / "README.md"
    text = readme.read_text()
    fresh = update(text)
    if "--check" in argv:
        if fresh != text:
            print("README.md is out of date: run python scripts/readme_sections.py", file=sys.stderr)
        return int(fresh != text)
    readme.write_text(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
