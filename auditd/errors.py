"""Errors a caller can act on.

Each carries the context needed to fix the problem; the CLI turns them into one line on
stderr and an exit status (2 for configuration and usage, 1 for the rest), never a
traceback.
"""

from __future__ import annotations


class AuditdError(Exception):
    """Base of every error sensor-auditd raises on purpose."""

    exit_status = 1


class ConfigError(AuditdError):
    """A configuration, profile or reference file is unusable: names file, key and problem."""

    exit_status = 2

    def __init__(self, file: str, key: str, problem: str) -> None:
        self.file = file
        self.key = key
        self.problem = problem
        where = f"{file}: {key}" if key else file
        super().__init__(f"{where}: {problem}")


class UnitError(AuditdError):
    """A unit string pint cannot parse, or one of the wrong dimension."""

    exit_status = 2

    def __init__(self, unit: str, problem: str) -> None:
        self.unit = unit
        self.problem = problem
        super().__init__(f"unit {unit!r}: {problem}")


class StoreError(AuditdError):
    """The store refused a write or a read, after rolling back.

    ``transient`` says whose fault it is (``auditd.retry``): True for the environment's
    (disk full, locked, an I/O error: retry the same write, acknowledge nothing), False for
    the data's (a value the store cannot take: isolate the message and quarantine it).
    ``code`` is SQLite's name for the error (``SQLITE_FULL``) when there is one.
    """

    def __init__(self, message: str, *, transient: bool = True,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.code = code


class RecordingError(AuditdError):
    """A replay file cannot be read at all (missing, unreadable); bad lines are quarantined."""

    exit_status = 2


class UsageError(AuditdError):
    """A command was given arguments it cannot act on (an unknown alert, a bad time)."""

    exit_status = 2
