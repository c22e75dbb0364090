"""Errors a caller can act on: one hierarchy, one base, an exit status on each class.

Each carries the context needed to fix the problem; the CLI turns every one of them into
one line on stderr and its class's exit status, never a traceback::

    AuditdError                  1  base of every error sensor-auditd raises on purpose
    ├── UsageError               2  the command line cannot be acted on
    │   └── InputError           2  a file named on the command line is unusable: file, key
    │       ├── RecordingError   2  a replay file or historian CSV
    │       └── ExportError      2  an instrument or agency export (``auditd.adapters.sources``)
    ├── ConfigError              2  configuration, profile, reference or mapping: file, key
    ├── UnitError                2  a unit string pint cannot parse, or of the wrong dimension
    ├── DatabaseError            2  the fleet's PostgreSQL cannot be used as given: host/port
    │   └── SchemaError          2  its schema is newer than this sensor-auditd knows
    └── IOFailure                1  the outside world failed: retry, or fix the machine
        ├── StoreError           1  the store refused a write or a read (transient or not)
        └── SinkError            1  a ticket sink refused or failed a delivery

Exit status 2 means "change what you typed or wrote" (CONTRACT.md: bad usage or
configuration); 1 means anything else.
"""

from __future__ import annotations


class AuditdError(Exception):
    """Base of every error sensor-auditd raises on purpose."""

    exit_status = 1


class UsageError(AuditdError):
    """The command line cannot be acted on: options that exclude each other, an unknown
    alert, a time in the past. ``option`` names what to change."""

    exit_status = 2

    def __init__(self, problem: str, option: str = "") -> None:
        self.option = option
        self.problem = problem
        super().__init__(f"{option}: {problem}" if option else problem)


class InputError(UsageError):
    """A data file named on the command line cannot be used: names the file, where in it
    (``key``: a column, an option, a key; may be empty) and the problem."""

    def __init__(self, file: str, key: str, problem: str) -> None:
        self.file = file
        self.key = key
        super().__init__(problem, ": ".join(part for part in (file, key) if part))


class RecordingError(InputError):
    """A replay file (or a historian's CSV) cannot be read at all: missing, unreadable, no
    header. Bad lines are not errors: they are quarantined."""

    def __init__(self, file: str, problem: str, key: str = "") -> None:
        super().__init__(file, key, problem)


class ExportError(InputError):
    """An instrument or agency export that cannot be imported as a whole: names the file,
    the column (or key) and the problem. Bad rows are not errors: they are quarantined."""


class ConfigError(AuditdError):
    """A configuration, profile, reference or mapping file is unusable: names file, key and
    problem."""

    exit_status = 2

    def __init__(self, file: str, key: str, problem: str) -> None:
        self.file = file
        self.key = key
        self.problem = problem
        where = f"{file}: {key}" if key else file
        super().__init__(f"{where}: {problem}")


class UnitError(AuditdError):
    """A unit string pint cannot parse, or one of the wrong dimension. Callers at the edges
    turn it into a ConfigError (a profile), a rejection (a message) or an ExportError."""

    exit_status = 2

    def __init__(self, unit: str, problem: str) -> None:
        self.unit = unit
        self.problem = problem
        super().__init__(f"unit {unit!r}: {problem}")


class DatabaseError(AuditdError):
    """The fleet's PostgreSQL cannot be used as the DSN says (unreachable, refused,
    authentication failed): names host and port, never the password."""

    exit_status = 2

    def __init__(self, where: str, problem: str) -> None:
        self.where = where
        self.problem = problem
        super().__init__(f"PostgreSQL at {where}: {problem}")


class SchemaError(DatabaseError):
    """The database was migrated by a newer sensor-auditd: this one would misread it."""


class IOFailure(AuditdError):
    """The outside world failed us (a disk, a database lock, a receiver): nothing the user
    typed is wrong."""


class StoreError(IOFailure):
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


class SinkError(IOFailure):
    """A ticket delivery failed; ``permanent`` when repeating the same request cannot help
    (a 4xx answer): the dispatcher dead-letters it at once instead of backing off."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent
