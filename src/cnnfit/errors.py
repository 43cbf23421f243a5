"""The one error type that reaches users: a message that names the fix, exit code 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class CnnfitError(ValueError):
    """Bad input from the user; the CLI prints it on one line and exits with code 2."""


class TrainingStopped(CnnfitError):
    """A run that could not finish: a non-finite loss (exit 1) or a signal (exit 130); its last.pt is good."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def one_line(exc: BaseException, limit: int = 200) -> str:
    """A library's exception as a clause of a one-line message: whitespace folded, at most `limit` characters."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def suggest(name: str, choices: Iterable[str], template: str = "did you mean '{}'? ") -> str:
    """`template` filled with the closest of `choices` to a misspelt `name`, or "" when none is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return template.format(close[0]) if close else ""
