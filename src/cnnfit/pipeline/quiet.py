"""Runs inside other runs (a cv's folds, a search's trials) log warnings only: their caller speaks for them."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

INNER = ("cnnfit.pipeline", "cnnfit.engine", "cnnfit.data", "cnnfit.models", "cnnfit.eval", "cnnfit.report")


@contextlib.contextmanager
def quiet(names: tuple[str, ...] = INNER) -> Iterator[None]:
    """The `names` loggers at WARNING or above while the block runs, their levels restored after."""
    saved = {lg: lg.level for lg in map(logging.getLogger, names)}
    for lg in saved:
        lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for lg, level in saved.items():
            lg.setLevel(level)


__all__ = ["INNER", "quiet"]
