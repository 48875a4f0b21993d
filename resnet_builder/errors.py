"""One error type for mistakes a user can make, so the CLI can exit cleanly.

Library code raises ``UserError`` (or ``ValueError`` for bad constructor
arguments, as Keras does); ``cli.py`` turns both into a one-line message with a
hint and a non-zero exit code instead of a traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix: bad input, missing file, wrong checkpoint.

    ``hint`` says what to do about it; ``exit_code`` follows click's habit
    (1 for a failed operation, 2 for a bad invocation or config).
    """

    def __init__(self, message: str, hint: str | None = None, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class ConfigError(UserError):
    """A config file or ``--set`` override that cannot be used (exit code 2)."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint, exit_code=2)


class ArgumentError(ValueError):
    """A bad argument to one of our model classes or functions (exit code 2 from the CLI).

    A ``ValueError``, as Keras raises for bad constructor arguments, so Python
    callers catch it as usual; its own type lets the CLI tell it apart from a
    ``ValueError`` that escaped from a bug.
    """
