"""The running daemon's state as another process can read it: ``sensor-auditd status``.

The store says what happened; it cannot say what is happening when it is the thing that
is stuck (a full disk, a lock held elsewhere). So the daemon also keeps a small JSON file
beside the database (``audit.db.daemon``): its health and why, the broker's state, the
writer's, and the bounds in force, rewritten in place every second.

The file is written with ``pwrite`` over blocks allocated when it was created, never
grown or renamed, so that it can still be updated on a volume with no byte left (on the
usual file systems; one that copies on write may refuse, and then the file just ages:
``status`` says how old it is).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from auditd import logs

log = logs.get("auditd.runstate")

SIZE = 4096
"""Bytes of the file: one block, allocated at creation and overwritten in place."""

STALE_AFTER_S = 30.0
"""A state older than this is not the state of a running daemon (killed, or hung)."""


@dataclass(frozen=True, slots=True)
class RunState:
    """What the daemon knows of itself now. Times are Unix seconds."""

    pid: int = 0
    started_at: float = 0.0
    updated_at: float = 0.0
    stopped: bool = False
    healthy: bool = True
    problems: tuple[str, ...] = ()
    """Why it is not healthy, one line each (a stalled writer, a loop that stopped)."""
    broker: str = "connecting"
    """``connected``, ``subscribing``, ``connecting`` or ``unreachable``."""
    broker_error: str = ""
    broker_down_since: float | None = None
    writer_holding: int = 0
    """Messages the writer holds uncommitted."""
    writer_stalled_s: float = 0.0
    writer_error: str = ""
    last_commit_at: float | None = None
    next_audit_at: float | None = None
    """When the scheduler runs the next audit (``[audit] first_run_delay`` after start,
    then every ``interval``)."""
    audit_interval_s: float | None = None
    bounds: dict[str, int] = field(default_factory=dict)
    """Each bounded resource's use and limit: ``devices``/``max_devices``, ``streams``,
    ``quarantine_rows``, ``quarantine_bytes``, ``wal_bytes``/``wal_limit``,
    ``free_bytes``."""

    def running(self, now: float) -> bool:
        """Not stopped, and updated within ``STALE_AFTER_S`` (a SIGKILLed or hung daemon
        leaves its last state behind)."""
        return not self.stopped and self.pid > 0 and self.age(now) <= STALE_AFTER_S

    def age(self, now: float) -> float:
        return max(0.0, now - self.updated_at)

    def to_bytes(self) -> bytes:
        data = asdict(self)
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=True).encode()
        if len(text) > SIZE - 1:  # problems are the only unbounded part
            data["problems"] = [p[:200] for p in self.problems[:3]]
            text = json.dumps(data, separators=(",", ":"), ensure_ascii=True).encode()[
                : SIZE - 1]
        return text.ljust(SIZE - 1) + b"\n"


def state_path(store: Path) -> Path:
    """The state file of the daemon whose database is ``store``."""
    return store.with_name(store.name + ".daemon")


def read_state(store: Path) -> RunState | None:
    """The last state written beside ``store``, or None (never written, unreadable)."""
    try:
        raw = state_path(store).read_bytes()
    except OSError:
        return None
    try:
        data = json.loads(raw.decode("ascii").strip() or "null")
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    known = {f.name for f in fields(RunState)}
    values: dict[str, Any] = {k: v for k, v in data.items() if k in known}
    if isinstance(values.get("problems"), list):
        values["problems"] = tuple(str(p) for p in values["problems"])
    try:
        return RunState(**values)
    except TypeError:
        return None


class RunStateFile:
    """The daemon's side: created once (allocated), then overwritten in place."""

    def __init__(self, store: Path) -> None:
        self.path = state_path(store)
        self._fd: int | None = None
        self._failing = False
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            log.warning("runstate_unavailable", path=str(self.path), error=str(exc))
            return
        try:
            if os.fstat(fd).st_size < SIZE:
                os.pwrite(fd, b" " * (SIZE - 1) + b"\n", 0)  # allocate the block now
                os.fsync(fd)
        except OSError as exc:
            log.warning("runstate_unavailable", path=str(self.path), error=str(exc))
            os.close(fd)
            return
        self._fd = fd

    def write(self, state: RunState) -> bool:
        """Overwrite the file with ``state``; False (logged once) when it cannot."""
        if self._fd is None:
            return False
        try:
            os.pwrite(self._fd, state.to_bytes(), 0)
        except OSError as exc:
            if not self._failing:
                log.warning("runstate_write_failed", path=str(self.path), error=str(exc))
            self._failing = True
            return False
        self._failing = False
        return True

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
