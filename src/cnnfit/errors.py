"""The one error type that reaches users: a message that names the fix, exit code 2."""


class CnnfitError(ValueError):
    """Bad input from the user; the CLI prints it on one line and exits with code 2."""
