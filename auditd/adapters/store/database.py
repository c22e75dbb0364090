"""The database underneath every repository: one writer, many readers, one transaction
at a time, a write-ahead log that fits its volume, and a schema that migrates forward.

Why it looks the way it does:

* **One writer, many readers.** SQLite allows one writer at a time. The daemon therefore
  holds exactly one writer connection, guarded by a lock, and gives every reading thread
  its own connection (``threading.local``). In WAL mode a reader sees the last committed
  state and never waits for the ingest writer, so an audit can run during ingest.
* **An acknowledged reading survives power loss.** ``synchronous=FULL`` by default: the
  MQTT layer acknowledges a message only after its batch committed, so the commit must be
  on disk by then. ``NORMAL`` is offered for replay and benchmarks.
* **A failed write leaves nothing behind.** Every write runs in one ``BEGIN IMMEDIATE``
  transaction (``write``); any SQLite error rolls it back and surfaces as
  :class:`~auditd.errors.StoreError`, so the caller can withhold the ack and retry the
  very same batch. A failure says whose it is: ``transient`` (``auditd.retry``) for the
  environment's (full, locked, I/O), not for the data's.
* **The store fits its volume.** The write-ahead log is bounded (``Bounds.wal_limit``,
  shrunk at start to a quarter of the free space): SQLite checkpoints at half of it, a
  ``TRUNCATE`` checkpoint follows when the file passes it anyway (a reader held the old
  pages) and after every ``SQLITE_FULL``, which is what frees a full volume.
* **SQL is never built from data.** Every value is a bound parameter. The only formatted
  SQL are pragmas whose values come from code (a whitelist or the migration number).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypedDict

import structlog

from auditd.adapters.store.schema import MIGRATIONS
from auditd.errors import StoreError
from auditd.retry import is_transient

log = structlog.get_logger("auditd.adapters.store")

SYNCHRONOUS_MODES: Final = ("off", "normal", "full", "extra")
"""Accepted values of ``synchronous``; anything else is a configuration mistake."""

BUSY_TIMEOUT_MS: Final = 5000
"""How long a connection waits for a lock held by another process (a CLI inspecting the
file) before SQLite reports ``database is locked``."""

MIN_WAL_LIMIT: Final = 512 * 1024
"""The smallest write-ahead log the store works with, however little space is free."""

CHECKPOINT_BUSY_MS: Final = 200
"""How long a ``TRUNCATE`` checkpoint waits for readers (an audit) before trying later: a
commit is never held up by more."""

WAL_CHECK_INTERVAL_S: Final = 1.0
"""How often, at most, a commit looks at the write-ahead log's size."""

_FULL: Final = 13
"""SQLite's primary result code SQLITE_FULL."""


def wal_pragmas(wal_limit: int, page_size: int = 4096) -> tuple[int, int]:
    """(``wal_autocheckpoint`` in pages, ``journal_size_limit`` in bytes) for a log limit.

    SQLite checkpoints once the log holds half the limit, so that one burst of commits
    between two checkpoints fits in the other half; after a checkpoint the file is cut back
    to the limit. Ingest rewrites the tail page of every stream it touches, so a longer log
    lets one checkpoint copy such a page once instead of many times: the limit trades
    throughput for room on the volume (bench/README.md has the figures).
    """
    return max(16, wal_limit // 2 // max(page_size, 512)), wal_limit


@dataclass(frozen=True, slots=True)
class Bounds:
    """What the store may take of its volume (``[store]`` in the daemon's configuration)."""

    wal_limit: int = 16 * 1024 * 1024
    """The write-ahead log: checkpointed at half, truncated when it passes all of it."""
    quarantine_max_rows: int = 50_000
    quarantine_max_bytes: int = 32 * 1024 * 1024
    """Every text of the quarantined rows and their indexes (topic, detail, payload,
    device, sensor, reason, group), plus ``QUARANTINE_ROW_BYTES`` each; beyond either cap
    the oldest rows are deleted (their counts stay in the per-reason totals)."""
    payload_cap: int = 4096
    """Bytes of the message payload kept with a rejection the store makes itself
    (``duplicate_conflict``)."""
    meta_versions_per_device: int = 100
    """Meta versions kept of one device; beyond it the history is thinned to the first,
    the latest and those where a tracked key changed (``devices.keep_bounded``)."""
    events_per_device: int = 1000
    """Events kept of one device; beyond it the oldest go, save the latest of each type
    and the latest calibration of each corrected sensor."""
    window_cache: int = 64 * 1024 * 1024
    """Memory the audit may keep of its streams' windows between audits (16 bytes a
    reading, ``windows.WindowCache``); 0 reads every window whole."""


@dataclass(frozen=True, slots=True)
class Space:
    """The store's footprint and its volume's free space, in bytes."""

    free: int
    needed: int
    """What the store needs free to make progress: a full write-ahead log, and as much
    again for the database to take its pages at a checkpoint."""
    wal_limit: int
    """The write-ahead log limit in force (the configured one, or less on a small volume)."""

    @property
    def low(self) -> bool:
        return self.free < self.needed


def _describe(exc: BaseException) -> str:
    name = getattr(exc, "sqlite_errorname", None)
    return f"{name}: {exc}" if name else f"{type(exc).__name__}: {exc}"


def _ensure_state_dir(directory: Path) -> None:
    """Create the state directory private to the daemon (0700) and check it is writable.

    SQLite needs to create ``-wal`` and ``-shm`` files next to the database, so a
    read-only directory would only fail later, mid-ingest, with a less helpful message.
    An existing directory keeps its mode: it may be managed by systemd's StateDirectory.
    """
    try:
        if not directory.exists():
            directory.mkdir(mode=0o700, parents=True)
            os.chmod(directory, 0o700)  # mkdir's mode is filtered through the umask
    except OSError as exc:
        raise StoreError(f"{directory}: cannot create the state directory: {exc}") from exc
    if not directory.is_dir():
        raise StoreError(f"{directory}: the state directory is not a directory")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise StoreError(f"{directory}: the state directory is not writable")


class Options(TypedDict, total=False):
    """How a store is opened (the keyword arguments of :class:`Database` and ``Store``)."""

    synchronous: str
    clock: Callable[[], float]
    read_only: bool
    bounds: Bounds | None


class Database:
    """The connections and transactions of one store file; the repositories share it.

    Thread-safe: writes are serialised on one connection, reads use one connection per
    thread. ``close`` closes them all.
    """

    def __init__(self, path: str | os.PathLike[str], *, synchronous: str = "full",
                 clock: Callable[[], float] = time.time, read_only: bool = False,
                 bounds: Bounds | None = None) -> None:
        """Open (creating and migrating as needed) the database at ``path``.

        ``read_only`` opens an existing file for looking only (``sensor-auditd status``):
        nothing is created or migrated, and every write fails with :class:`StoreError`.

        ``clock`` stamps findings and outbox rows when ``Findings.save`` is given no
        ``now``; a replay can pass its simulated clock so that a recording produces the
        same timestamps on every run.
        """
        mode = synchronous.lower()
        if mode not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {SYNCHRONOUS_MODES}, not {synchronous!r}")
        self._path = Path(path)
        self.synchronous = mode
        self.clock = clock
        self._lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = False
        self._read_only = read_only
        self.bounds = bounds or Bounds()
        self.directory_generation = 0
        """Moves on whenever retention forgets streams or devices, so that whoever keeps a
        directory of them (``auditd.app.ingest``) reads it again."""
        self.checkpoints = 0
        """``TRUNCATE`` checkpoints that emptied the write-ahead log (size or SQLITE_FULL)."""
        self._wal_checked_at = 0.0
        self._busy_logged_at = 0.0
        if read_only:
            if not self._path.is_file():
                raise StoreError(f"{self._path}: no database here")
            self.space = Space(0, 0, self.bounds.wal_limit)
        else:
            _ensure_state_dir(self._path.parent)
            self.space = self._measure_space()
        self._writer = self._open_writer()
        try:
            if read_only:
                self._check_version()
            else:
                self._migrate()
        except BaseException:
            self._writer.close()
            raise
        if self.space.low:
            log.warning("store.low_space", path=str(self._path), free_bytes=self.space.free,
                        needed_bytes=self.space.needed, wal_limit=self.space.wal_limit,
                        hint="free space on the volume or lower store.wal_limit")

    # ----------------------------------------------------------------- space

    def _measure_space(self) -> Space:
        """Free space now, and the write-ahead log limit that fits it: at most a quarter of
        the free space beside what the store already holds, so that a full log and the
        checkpoint that empties it both fit."""
        free = self.free_bytes()
        held = sum(f.stat().st_size for f in (self._path, Path(f"{self._path}-wal"))
                   if f.exists())
        configured = self.bounds.wal_limit
        limit = max(MIN_WAL_LIMIT, min(configured, (free + held) // 4))
        return Space(free=free, needed=2 * configured, wal_limit=limit)

    def free_bytes(self) -> int:
        """Bytes free for the store on its volume (what an unprivileged process may use)."""
        try:
            stat = os.statvfs(self._path.parent)
        except OSError:
            return shutil.disk_usage(self._path.parent).free
        return stat.f_bavail * stat.f_frsize

    def wal_bytes(self) -> int:
        try:
            return Path(f"{self._path}-wal").stat().st_size
        except OSError:
            return 0

    def _truncate_wal(self, why: str) -> bool:
        """Copy the write-ahead log into the database and truncate it to zero bytes, waiting
        at most ``CHECKPOINT_BUSY_MS`` for readers. Called with the writer lock held and no
        transaction open. True when the log was emptied."""
        conn = self._writer
        before = self.wal_bytes()
        try:
            conn.execute(f"PRAGMA busy_timeout = {CHECKPOINT_BUSY_MS:d}")
            busy, frames, done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error as exc:
            log.warning("store.checkpoint_failed", path=str(self._path), why=why,
                        error=_describe(exc), wal_bytes=before)
            return False
        finally:
            with suppress(sqlite3.Error):
                conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")
        emptied = not busy
        if emptied:
            self.checkpoints += 1
        now = time.monotonic()
        if emptied or now - self._busy_logged_at >= 60:  # a long audit: once a minute
            self._busy_logged_at = 0.0 if emptied else now
            log.info("store.checkpoint", path=str(self._path), why=why,
                     wal_bytes_before=before, wal_bytes=self.wal_bytes(), frames=frames,
                     checkpointed=done, emptied=emptied)
        return emptied

    def _after_commit(self) -> None:
        """At most once a second: a log past its limit (a long reader kept SQLite's own
        checkpoints from resetting it) is emptied now."""
        now = time.monotonic()
        if now - self._wal_checked_at < WAL_CHECK_INTERVAL_S:
            return
        self._wal_checked_at = now
        if self.wal_bytes() > self.space.wal_limit:
            self._truncate_wal("size")

    # ----------------------------------------------------------------- connections, transactions

    @property
    def path(self) -> Path:
        return self._path

    def close(self) -> None:
        """Close the writer and every reader connection. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            with suppress(sqlite3.Error):  # best effort: query planner statistics only
                self._writer.execute("PRAGMA optimize")
            self._writer.close()
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: the store issues BEGIN/COMMIT itself, so Python's sqlite3
        # never opens or commits a transaction behind its back.
        if self._read_only:
            return sqlite3.connect(
                f"{self._path.absolute().as_uri()}?mode=ro", uri=True,
                timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False,
                isolation_level=None)
        return sqlite3.connect(
            self._path,
            timeout=BUSY_TIMEOUT_MS / 1000,
            check_same_thread=False,
            isolation_level=None,
        )

    def _open_writer(self) -> sqlite3.Connection:
        try:
            conn = self._connect()
        except sqlite3.Error as exc:
            raise StoreError(f"{self._path}: cannot open the database: {_describe(exc)}") from exc
        if self._read_only:
            return conn
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")
            conn.execute("PRAGMA journal_mode = WAL").fetchone()
            # Whitelisted above; pragmas cannot take bound parameters.
            conn.execute(f"PRAGMA synchronous = {self.synchronous.upper()}")
            conn.execute("PRAGMA foreign_keys = ON")
            # Whole numbers computed here; pragmas cannot take bound parameters.
            pages, size_limit = wal_pragmas(
                self.space.wal_limit, int(conn.execute("PRAGMA page_size").fetchone()[0]))
            conn.execute(f"PRAGMA journal_size_limit = {size_limit:d}")
            conn.execute(f"PRAGMA wal_autocheckpoint = {pages:d}")
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(
                f"{self._path}: cannot open the database (is it an SQLite file?): "
                f"{_describe(exc)}"
            ) from exc
        return conn

    def _reader(self) -> sqlite3.Connection:
        """This thread's read connection, opened on first use.

        Readers are ``query_only`` so a bug in a read path can never write, and have
        ``check_same_thread=False`` only so that :meth:`close` may close them all.
        """
        if self._closed:
            raise StoreError(f"{self._path}: the store is closed")
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")
            conn.execute("PRAGMA query_only = ON")
            with self._readers_lock:
                self._readers.append(conn)
            self._local.conn = conn
        return conn

    @contextmanager
    def write(self, what: str) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction on the writer, all or nothing.

        IMMEDIATE takes the write lock up front, so a busy database fails at BEGIN
        (after busy_timeout) instead of half-way through a batch. Any exception rolls
        back; SQLite errors become :class:`StoreError` naming the operation and the file.
        """
        with self._lock:
            if self._closed:
                raise StoreError(f"{self._path}: {what}: the store is closed")
            conn = self._writer
            try:
                conn.execute("BEGIN IMMEDIATE")
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                self._rollback(conn)
                if isinstance(exc, sqlite3.Error):
                    code = getattr(exc, "sqlite_errorcode", None)
                    if code is not None and int(code) & 0xFF == _FULL:
                        # What frees a full volume: the log's pages into the database
                        # (mostly rewrites of pages it has) and the log cut to nothing.
                        self._truncate_wal("SQLITE_FULL")
                    raise StoreError(
                        f"{self._path}: {what} failed and was rolled back: {_describe(exc)}",
                        transient=is_transient(exc),
                        code=getattr(exc, "sqlite_errorname", None),
                    ) from exc
                raise
            self._after_commit()

    @contextmanager
    def read(self, what: str) -> Iterator[sqlite3.Connection]:
        """This thread's reader, with SQLite errors turned into :class:`StoreError`."""
        try:
            yield self._reader()
        except sqlite3.Error as exc:
            raise StoreError(f"{self._path}: {what} failed: {_describe(exc)}") from exc

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        # SQLite may already have rolled back by itself (e.g. after SQLITE_FULL); nothing
        # more can be done on this connection then.
        if conn.in_transaction:
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")

    @property
    def schema_version(self) -> int:
        with self.read("schema_version") as conn:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])

    def _check_version(self) -> None:
        """A read-only look needs the schema this code knows; it cannot migrate."""
        try:
            current = int(self._writer.execute("PRAGMA user_version").fetchone()[0])
        except sqlite3.Error as exc:
            raise StoreError(f"{self._path}: cannot read the schema version (is it an SQLite "
                             f"file?): {_describe(exc)}") from exc
        if current != len(MIGRATIONS):
            raise StoreError(f"{self._path}: schema version {current}, this sensor-auditd "
                             f"reads {len(MIGRATIONS)}; run the daemon of the same version")

    def _migrate(self) -> None:
        """Bring the file to :data:`SCHEMA_VERSION`, one transaction per migration.

        A crash between migrations leaves a consistent older version that the next start
        continues from. A file from a newer sensor-auditd is refused rather than damaged.
        """
        target = len(MIGRATIONS)
        try:
            current = int(self._writer.execute("PRAGMA user_version").fetchone()[0])
        except sqlite3.Error as exc:
            raise StoreError(
                f"{self._path}: cannot read the schema version (is it an SQLite file?): "
                f"{_describe(exc)}"
            ) from exc
        if current > target:
            raise StoreError(
                f"{self._path}: schema version {current} is newer than this sensor-auditd "
                f"supports ({target}); upgrade sensor-auditd"
            )
        for version in range(current + 1, target + 1):
            with self.write(f"migration to schema version {version}") as conn:
                MIGRATIONS[version - 1](conn)
                conn.execute(f"PRAGMA user_version = {version:d}")
            log.info("store.migrated", path=str(self._path), version=version)


    def purge_chunks(self, what: str, sql: str, older_than: float, chunk: int) -> int:
        if chunk < 1:
            raise ValueError("chunk must be at least 1")
        deleted = 0
        while True:
            with self.write(what) as conn:
                n = conn.execute(sql, (older_than, chunk)).rowcount
            deleted += n
            if n < chunk:
                return deleted
