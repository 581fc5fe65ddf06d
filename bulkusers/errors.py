"""The few exceptions that end a whole run; a failed row is an outcome, never an exception.

BulkUsersError
├── UsageError            exit 2: nothing was sent
│   ├── ChangesFileError  the changes file is unreadable or structurally invalid
│   ├── ResultsFileError  the results file cannot be written (or does not fit --resume)
│   └── LookupError_      the Domain API could not tell where the account lives
└── RunStopped            exit 3: the run ended early; --resume finishes it
    ├── AuthRefused       the credentials were refused (401 after one renewal)
    ├── Interrupted       SIGINT / SIGTERM
    ├── OutageTooLong     the API stayed down longer than --max-outage
    └── JournalFailed     the results file stopped accepting writes mid-run
"""

from __future__ import annotations


class BulkUsersError(Exception):
    """Base of every error that ends a bulkusers command."""

    exit_code = 1


class UsageError(BulkUsersError):
    """Bad usage, options or input: the run never started, nothing was sent."""

    exit_code = 2


class ChangesFileError(UsageError):
    """The changes file cannot be used at all (unreadable, bad header, unknown column)."""

    def __init__(self, message: str, *, path: str, column: str | None = None) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.column = column


class ResultsFileError(UsageError):
    """The results file cannot be written, or does not belong to this changes file."""


class LookupError_(UsageError):
    """The Domain API could not resolve a service host for the account."""


class RunStopped(BulkUsersError):
    """The run ended early; settled rows are in the results file, the rest are `skipped`."""

    exit_code = 3


class AuthRefused(RunStopped):
    """The server refused the credentials even after a renewal."""


class Interrupted(RunStopped):
    """The user asked the run to stop (SIGINT / SIGTERM)."""


class OutageTooLong(RunStopped):
    """The API kept failing for longer than --max-outage."""


class JournalFailed(RunStopped):
    """Writing the results file failed mid-run (disk full, file gone)."""
