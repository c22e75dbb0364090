"""``sensor-auditd import``: export files into the store, so the audit, the report and the
history see them like readings that came over MQTT.

A thin adapter: ``exports.read_export`` parses (pure), the store commits one file per
transaction. Rows that could not be read and reference values with a QC flag go to the
quarantine with the file, the line and the reason, as a bad MQTT message does; a file whose
content was imported before is recognised by its hash and stores nothing twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from auditd.adapters.sources.export_mappings import ExportMapping, SensorUnit
from auditd.adapters.sources.exports import Export, read_export
from auditd.adapters.store import Store
from auditd.adapters.store.readings import ImportRecord
from auditd.errors import ExportError
from auditd.model import ID_PATTERN, Rejection

QUARANTINE_TOPIC = "import/{device}"
"""The quarantine's ``topic`` of an imported row: imports have no MQTT topic."""


@dataclass(frozen=True, slots=True)
class ImportOutcome:
    record: ImportRecord
    already: bool
    """True when the same content had been imported before (nothing was written)."""
    export: Export

    def to_json(self) -> dict[str, object]:
        return {
            "file": self.record.path, "device": self.record.device, "site": self.record.site,
            "mapping": self.record.mapping, "serial": self.export.serial,
            "zone": self.export.zone, "rows": self.export.rows,
            "readings": {s: int(c.ts.size) for s, c in self.export.channels.items()},
            "readings_stored": self.record.readings, "quarantined": self.export.rejected(),
            "ignored_columns": list(self.export.ignored_columns),
            "already_imported": self.already,
        }


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def rejections_of(export: Export, received_at: float) -> list[Rejection]:
    """The export's problem rows as quarantine rows: file and line in the detail, the row's
    text as the payload, so nothing read is lost."""
    topic = QUARANTINE_TOPIC.format(device=export.device)
    return [Rejection(topic=topic, reason=p.reason,
                      detail=f"{export.path}:{p.line}: {p.detail}",
                      payload=p.text.encode("utf-8"), received_at=received_at,
                      device=export.device, sensor=p.sensor)
            for p in export.problems]


def import_file(
    store: Store,
    path: Path,
    device: str,
    site: str,
    now: float,
    *,
    mappings: Sequence[ExportMapping] = (),
    sensor_units: Mapping[str, SensorUnit] | None = None,
) -> ImportOutcome:
    """Read one export and commit it (one transaction), unless its content is in already.
    ``mappings`` (``--mapping``) are tried before the shipped ones."""
    if not ID_PATTERN.fullmatch(site):
        raise ExportError(str(path), "--site", f"{site!r} is not a valid site name")
    export = read_export(path, device, preferred=mappings, sensor_units=sensor_units)
    record = ImportRecord(sha256=file_sha256(path), path=str(path), site=site, device=device,
                          mapping=export.mapping, imported_at=now)
    series = [(c.sensor, c.unit, c.ts, c.values) for c in export.channels.values()]
    earlier = store.readings.write_import(record, series, rejections_of(export, now))
    if earlier is not None:
        return ImportOutcome(earlier, True, export)
    stored = store.readings.imports()
    mine = next((r for r in stored if r.sha256 == record.sha256), record)
    return ImportOutcome(mine, False, export)
