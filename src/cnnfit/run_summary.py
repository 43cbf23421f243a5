"""The table `cnnfit train` prints before training: one row per setting, its value and why it has it."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table


def per_class_text(counts: dict[str, list[int]], classes: list[str]) -> str:
    triples = list(zip(counts["train"], counts["val"], counts["test"]))
    if len(set(triples)) == 1:
        return "{}/{}/{} each".format(*triples[0])
    if len(classes) <= 6:
        return "; ".join(f"{c} {a}/{b}/{t}" for c, (a, b, t) in zip(classes, triples))
    train = counts["train"]
    return f"train {min(train)}..{max(train)} per class (largest/smallest {max(train) / max(min(train), 1):.1f})"


def print_summary(console: Console, rows: list[tuple[str, str, str]]) -> None:
    table = Table(title="cnnfit train", show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_column(style="dim")
    for key, value, why in rows:
        table.add_row(escape(key), escape(value), escape(why))
    console.print(table)


def loss_text(task: str, t: Any) -> str:
    name = t.loss if t.loss != "auto" else {"classify": "ce", "multilabel": "bce", "regress": "mse"}[task]
    extra = (f", label smoothing {t.label_smoothing:g}" if t.label_smoothing else "") + (
        f", gamma {t.focal_gamma:g}" if name == "focal" else "")
    return f"{name} ({task})" + extra


def finetune_text(frozen: list[str], ft: Any, epochs: int, backbone_lr_mult: float) -> str:
    parts = []
    if frozen:
        span = f"for {ft.freeze_epochs} of {epochs} epochs" if ft.freeze_epochs else "for the whole run"
        parts.append(f"frozen {', '.join(frozen) if len(frozen) <= 4 else f'{len(frozen)} stages'} {span}")
    parts.append(f"LR x{backbone_lr_mult:g} backbone, x{ft.head_lr_mult:g} head")
    return "; ".join(parts)


__all__ = ["finetune_text", "loss_text", "per_class_text", "print_summary"]
