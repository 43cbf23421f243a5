"""The one error type that reaches users: a message that names the fix, exit code 2."""


class CnnfitError(ValueError):
    """Bad input from the user; the CLI prints it on one line and exits with code 2."""


class TrainingStopped(CnnfitError):
    """A run that could not finish: a non-finite loss (exit 1) or a signal (exit 130); its last.pt is good."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code
