"""A gateway's SQLite store (what ``run`` and ``replay --store`` write) read as the upstream
records its gateway publishes, for ``fleet import``.

Read-only (the file is opened ``mode=ro``; a running daemon's store can be read beside it)
and through the same parser as the live messages (``auditd.fleet.upstream.parse``), with
the topic the gateway would have published each record on: a finding imported and the same
finding received live are one value, one row. Only columns every schema version since the
first has are read (``findings.json``, ``meta_versions``, ``streams``; ``tickets`` where
the store has it, from version 2), so a store of an older sensor-auditd imports as it is,
without being migrated.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from auditd.errors import InputError
from auditd.fleet.records import Inventory, Origin, Rejected, Upstream
from auditd.fleet.upstream import parse, parse_finding
from auditd.model import ID_PATTERN
from auditd.topics import TopicsConfig

_TOPICS = TopicsConfig()


@dataclass(frozen=True, slots=True)
class GatewayFile:
    """One store to import and the gateway name its records are filed under."""

    gateway: str
    path: Path

    @classmethod
    def from_argument(cls, text: str) -> GatewayFile:
        """``NAME=PATH`` names the gateway; a bare path is named by its stem (``gw-north``
        for ``gw-north.db``). The name must be the one the gateway publishes under, so
        that its live messages and its import meet in the same rows."""
        name, sep, path = text.partition("=")
        source = cls(name, Path(path)) if sep else cls(Path(text).stem, Path(text))
        if not ID_PATTERN.fullmatch(source.gateway):
            raise InputError(text, "", f"gateway name {source.gateway!r} is not a valid id "
                             "(name it: NAME=PATH)")
        return source


def read_gateway_store(source: GatewayFile) -> Iterator[Upstream]:
    """Every finding, device version (with its current causes and when it was last
    heard of) and ticket request in the store, as upstream records."""
    conn = _open(source.path)
    try:
        _check(conn, source.path)
        yield from _findings(conn, source.gateway)
        yield from _inventory(conn, source.gateway)
        if _has_table(conn, "tickets"):
            yield from _tickets(conn, source.gateway)
    except sqlite3.Error as exc:
        raise InputError(str(source.path), "", f"cannot read it as a gateway store: {exc}"
                         ) from None
    finally:
        conn.close()


def _open(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise InputError(str(path), "", "no such file")
    try:
        return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise InputError(str(path), "", f"cannot open it: {exc}") from None


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                        (name,)).fetchone() is not None


def _check(conn: sqlite3.Connection, path: Path) -> None:
    try:
        missing = [t for t in ("findings", "meta_versions", "streams")
                   if not _has_table(conn, t)]
    except sqlite3.DatabaseError as exc:
        raise InputError(str(path), "", f"not an SQLite store: {exc}") from None
    if missing:
        raise InputError(str(path), "", f"not a sensor-auditd store (no {', '.join(missing)} "
                         "table)")


def _findings(conn: sqlite3.Connection, gateway: str) -> Iterator[Upstream]:
    rows = conn.execute("SELECT site, device, sensor, created_at, json FROM findings "
                        "ORDER BY id")
    origins: dict[str, Origin] = {}
    for site, device, sensor, created_at, text in rows:
        origin = origins.get(site) or origins.setdefault(site, Origin(site, gateway))
        yield parse_finding(origin, device, sensor or "-", text.encode(), created_at)


def _inventory(conn: sqlite3.Connection, gateway: str) -> Iterator[Upstream]:
    """Each meta version, as of when the gateway first saw it; the latest one of each
    device also carries its current causes and when its last reading was taken."""
    last_seen = dict(conn.execute(
        "SELECT device, max(last_ts_ms) / 1000.0 FROM streams GROUP BY device").fetchall())
    causes = _current_causes(conn)
    rows = conn.execute("SELECT site, device, first_seen, data, id FROM meta_versions "
                        "ORDER BY device, id").fetchall()
    for i, (site, device, first_seen, data, _) in enumerate(rows):
        payload: dict[str, Any] = json.loads(data)
        payload["ts"] = first_seen
        latest = i + 1 == len(rows) or rows[i + 1][1] != device
        topic = f"{_TOPICS.prefix}/{site}/audit/{gateway}/device/{device}"
        record = parse(topic, json.dumps(payload).encode(), first_seen)
        if latest and isinstance(record, Inventory):
            record = replace(record, last_seen=last_seen.get(device),
                             causes=tuple(causes.get(device, ())))
        if record is not None:
            yield record


def _current_causes(conn: sqlite3.Connection) -> dict[str, list[str]]:
    """Per device, the first cause of each of its latest failing findings."""
    out: dict[str, list[str]] = {}
    rows = conn.execute(
        "SELECT f.device, f.json FROM findings_latest l JOIN findings f ON f.id = l.finding_id "
        "WHERE f.status = 'fail' ORDER BY f.device, f.sensor")
    for device, text in rows:
        causes = json.loads(text).get("causes") or []
        if causes and isinstance(causes[0], dict):
            cause = str(causes[0].get("cause"))
            if cause not in out.setdefault(device, []):
                out[device].append(cause)
    return out


def _tickets(conn: sqlite3.Connection, gateway: str) -> Iterator[Upstream]:
    for created_at, text in conn.execute("SELECT created_at, payload FROM tickets ORDER BY id"):
        try:
            site = str(json.loads(text).get("site") or "")
        except (ValueError, AttributeError):
            site = ""
        if not ID_PATTERN.fullmatch(site):
            yield Rejected(f"{_TOPICS.prefix}/?/audit/{gateway}/ticket", "bad_ticket",
                           "a stored ticket request names no site", text.encode(), created_at)
            continue
        record = parse(_TOPICS.ticket(site, gateway), text.encode(), created_at)
        if record is not None:
            yield record
