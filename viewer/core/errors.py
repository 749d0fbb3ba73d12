"""Errors a user sees. Messages name the file and the problem in plain words."""
from __future__ import annotations


class LightboxError(Exception):
    """Base for errors that carry a user-facing message."""


class LoadError(LightboxError):
    """A file or series could not be read; ``str()`` is the message to show."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class Cancelled(LightboxError):
    """The user pressed Cancel; work stopped cleanly with nothing half-done kept."""


def describe(exc: BaseException) -> str:
    """One line for an unexpected exception from a third-party reader."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = type(exc).__name__
    return f"{name}: {text}" if text else name
