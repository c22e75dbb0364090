"""THE registry of rejection reasons: why a message, a reading or a line was quarantined.

Every place that refuses something names its reason with a constant from here, and every
place that explains reasons to a person reads this registry: the table of
``docs/operations.md`` (a test compares it with :func:`markdown_table`), ``sensor-auditd
quarantine`` and the rejection log lines. A reason's ``code`` is the quarantine's
``reason`` column, the key of the replay summary's ``readings_rejected`` and the label of
``sensor_auditd_rejected_total``: part of the interface, so never rename one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

GATE: Final = "gate"
"""Refused by the validation of the message itself (``auditd.domain.validate``)."""
ADMISSION: Final = "admission"
"""Refused by what the gateway already holds: its device and stream caps (``app.ingest``)."""
STORE: Final = "store"
"""Refused while committing (``adapters.store``, ``app.ingest``'s isolation)."""
COMMANDS: Final = "commands"
"""The command topic (``app.commands``), only with ``[topics] commands`` on."""
REPLAY: Final = "replay"
"""A recording's line (``sensor-auditd replay``)."""
IMPORT: Final = "import"
"""An instrument or agency export's row (``sensor-auditd import``)."""
RETIRED: Final = "retired"
"""No longer given, kept for the quarantine rows of stores written before."""


@dataclass(frozen=True, slots=True)
class RejectionReason:
    """One reason: what it means, where it is decided and what bounds it."""

    code: str
    stage: str
    """Where it is decided: ``gate``, ``admission``, ``store``, ``commands``, ``replay``,
    ``import``, or ``retired`` (several stages may share a reason: a timestamp an export
    cannot parse is ``ts_invalid`` as a message's is)."""
    meaning: str
    limit: str = ""
    """The limit in force and the configuration key that changes it, when there is one."""


_ALL: list[RejectionReason] = []


def _reason(code: str, stage: str, meaning: str, limit: str = "") -> str:
    _ALL.append(RejectionReason(code, stage, meaning, limit))
    return code


TOPIC_INVALID: Final = _reason(
    "topic_invalid", GATE,
    "The topic is not `{prefix}/{site}/{device}/{telemetry|meta|event}` with ids matching "
    "`[A-Za-z0-9][A-Za-z0-9_.-]{0,63}` (wildcards, `..`, empty levels, non-ASCII...).",
    "`[topics] prefix` (default `fleet`)")
PAYLOAD_TOO_LARGE: Final = _reason(
    "payload_too_large", GATE,
    "More bytes than the limit (refused before parsing), or a telemetry array of more than "
    "1000 messages.",
    "`[ingest] max_payload_bytes` (default 65536)")
JSON_INVALID: Final = _reason(
    "json_invalid", GATE,
    "The payload is not UTF-8 text holding one JSON value (a byte-order mark, invalid UTF-8 "
    "such as an encoded surrogate).")
TEXT_INVALID: Final = _reason(
    "text_invalid", GATE,
    "A string of the payload, an object key included, holds a lone surrogate (`\"\\ud800\"`) "
    "or a NUL (`\"\\u0000\"`): valid JSON, but not text that a store, a log or a topic can "
    "carry.")
SCHEMA_INVALID: Final = _reason(
    "schema_invalid", GATE,
    "Valid JSON of the wrong shape: not an object, `readings` missing or not an object, "
    "`seq` not a signed 64-bit integer, a meta or event nested more than 32 levels deep.")
TS_INVALID: Final = _reason(
    "ts_invalid", GATE,
    "`ts` missing, or neither RFC 3339 with an offset nor finite Unix epoch seconds (a time "
    "without an offset would be guessed in some time zone). Also an export row whose time "
    "cannot be read.")
TS_FUTURE: Final = _reason(
    "ts_future", GATE,
    "`ts` later than reception by more than the limit: the device's clock is wrong, and the "
    "value would land where no audit window looks.",
    "`[ingest] max_future_skew_s` (default 300 s)")
TS_TOO_OLD: Final = _reason(
    "ts_too_old", GATE,
    "`ts` earlier than reception by more than the limit: a clock reset to the epoch, or "
    "milliseconds read as seconds. Absurdly old on purpose: a device flushing a long "
    "outage's buffer is legitimate.",
    "`[ingest] max_age` (default \"3650d\", ten years)")
UNKNOWN_DEVICE_MODEL: Final = _reason(
    "unknown_device_model", GATE,
    "Telemetry from a device with no known profile, so no reading can be checked: no meta "
    "with a known `model` yet, or a model without a profile file. Also a meta or event of "
    "a device the gateway holds nothing of yet that no profile covers (no `[models]` glob, "
    "no reference entry, an announced model without a profile): only a device the catalog "
    "knows takes a place under `[ingest] max_devices`.",
    "a profile in `profiles_dir`, or a `[models]` glob in the daemon config")
SENSOR_UNKNOWN: Final = _reason(
    "sensor_unknown", GATE,
    "One reading names a sensor the device's profile does not have.",
    "the profile's `[sensors.*]` tables")
UNIT_INVALID: Final = _reason(
    "unit_invalid", GATE,
    "One reading's `unit` is missing, not a string, or not a unit pint can parse; the "
    "detail names the closest units pint knows (did you mean 'degC'?).",
    "`[units] aliases` in the daemon config: the site's own spellings "
    "(`\"deg C\" = \"degC\"`)")
UNIT_INCOMPATIBLE: Final = _reason(
    "unit_incompatible", GATE,
    "One reading's unit parses but measures another dimension than the sensor's "
    "`quantity` (or converts non-linearly, like dBm).")
VALUE_INVALID: Final = _reason(
    "value_invalid", GATE,
    "One reading's value is not a finite number or null (a string, a boolean, NaN, an "
    "infinity, a missing `value`); in a meta or event, a NaN or infinity anywhere. Also an "
    "export cell that is not a number.")
OUT_OF_RANGE: Final = _reason(
    "out_of_range", RETIRED,
    "No longer given: a well-formed reading outside the sensor's plausible range is kept, "
    "flagged and counted (`readings_out_of_range`), as evidence (a gas cell's zero below "
    "0 ppb is its offset); stores written before hold such rows, which the audit still "
    "counts per window (cause `out_of_range`).",
    "the profile's `sensors.*.range`")
EVENT_TYPE_INVALID: Final = _reason(
    "event_type_invalid", GATE,
    "An event's `type` is missing or not one of CONTRACT.md's event types.")
DEVICE_LIMIT: Final = _reason(
    "device_limit", ADMISSION,
    "A message from a device the gateway holds nothing of yet, while it holds the limit "
    "of devices: a flood of invented ids cannot grow memory and store without bound. "
    "Known devices are unaffected; a device's place comes back once retention removed its "
    "readings and it has said nothing for `[store] retention_days`.",
    "`[ingest] max_devices` (default 5000)")
STREAM_LIMIT: Final = _reason(
    "stream_limit", ADMISSION,
    "A reading that would start a new (site, device, sensor) stream beyond the limit, or "
    "a stream of its device in one more site than the per-device limit (one id sent under "
    "invented site names cannot take every place). Known streams are unaffected.",
    "`[ingest] max_streams` (default 50000), `[ingest] max_sites_per_device` (default 8)")
DUPLICATE_CONFLICT: Final = _reason(
    "duplicate_conflict", STORE,
    "A reading for a (device, sensor, timestamp) stored already with another value: the "
    "stored value is kept and the detail names both. (An identical reading, a broker's "
    "redelivery, is no rejection: it is counted as a duplicate.)")
STORE_REJECTED: Final = _reason(
    "store_rejected", STORE,
    "A message that passed the gate but that the store could not take for a reason of the "
    "message's own (not a full disk or a lock): isolated from its batch, kept with the "
    "error, acknowledged, so that it cannot hold back the others.")
COMMAND_INVALID: Final = _reason(
    "command_invalid", COMMANDS,
    "A malformed `ack` or `silence` on the command topic (docs/alerts.md).",
    "`[topics] commands` (off by default)")
RECORDING_INVALID: Final = _reason(
    "recording_invalid", REPLAY,
    "A line of a recording that is not a recorded message (its line number in the "
    "detail): not UTF-8 JSON, nested deeper than the parser recurses, a `received_at` "
    "outside 1970..9999 or more than 366 days after the recording's clock (whose audits "
    "it would otherwise run one by one). `replay` counts it and goes on.")
ROW_INVALID: Final = _reason(
    "row_invalid", IMPORT,
    "An export row with another number of cells than its header (file and line in the "
    "detail, the row's text as the payload).")
REFERENCE_QC_FLAGGED: Final = _reason(
    "reference_qc_flagged", IMPORT,
    "An agency export's value whose QC code is not one the mapping calls valid: kept out "
    "of the comparison and counted.",
    "the mapping's `long.qc_valid`")

REGISTRY: Final[Mapping[str, RejectionReason]] = MappingProxyType(
    {r.code: r for r in _ALL})
"""Every reason by its code, in the order of the message's path."""

GATE_REASONS: Final = tuple(r.code for r in _ALL if r.stage == GATE)
"""The reasons ``validate_message`` gives."""

INGEST_REASONS: Final = tuple(r.code for r in _ALL if r.stage in (GATE, ADMISSION, STORE))
"""Every reason of live ingest, e.g. to report zero counts for the ones that did not occur."""


def markdown_table() -> str:
    """The table ``docs/operations.md`` shows (a test keeps the page equal to it)."""
    lines = ["| reason | where | what it means | limit, and the key that changes it |",
             "|---|---|---|---|"]
    for r in _ALL:
        cells = (f"`{r.code}`", r.stage, r.meaning, r.limit or "-")
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)
