"""User-facing errors: each carries a one-line message and the exit code the CLI uses."""

from __future__ import annotations

EXIT_OK = 0
EXIT_NO_ANSWER = 1
EXIT_BAD_INPUT = 2
EXIT_CANCELLED = 130


class TTSError(Exception):
    """An error a user can act on; the front ends print `str(err)` on one line, no traceback."""

    exit_code = EXIT_BAD_INPUT
    # the cause lies outside the problem (a server down or overloaded): a resumed
    # evaluation runs the problem again instead of keeping its failed row
    transient = False

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class ModelError(TTSError):
    """A model is missing, unreadable, not GGUF, or failed to load."""


class ChecksumError(ModelError):
    """A downloaded file does not match the catalog's size or sha256."""


class FetchError(ModelError):
    """A model could not be downloaded from any of its sources."""


class InputError(TTSError):
    """Bad user input: empty problem, impossible N/M/budget, unknown strategy."""


class ContextOverflowError(InputError):
    """The prompt does not fit in the model's context window."""


class CancelledError(TTSError):
    exit_code = EXIT_CANCELLED
