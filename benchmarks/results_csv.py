"""Result tables that grow one row at a time, so a long benchmark can be filled over several sittings."""

from __future__ import annotations

import csv
from pathlib import Path


def read_rows(out: Path) -> list[dict[str, str]]:
    if not out.exists():
        return []
    with out.open() as f:
        return list(csv.DictReader(f))


def append_row(out: Path, fields: list[str], row: dict) -> None:
    """Append `row`; a file written before a column was added is rewritten with it, old rows left blank there."""
    rows = read_rows(out)
    if rows and list(rows[0]) != fields:
        with out.open("w", newline="") as f:
            w = csv.DictWriter(f, fields, restval="")
            w.writeheader()
            w.writerows(rows)
    new = not out.exists()
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a", newline="") as f:
        w = csv.DictWriter(f, fields, restval="")
        if new:
            w.writeheader()
        w.writerow(row)
