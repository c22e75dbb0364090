"""The one cause registry: what each cause is, what it explains away, what to do about it.

A finding's ``causes`` name entries of this table (CONTRACT.md's vocabulary for calibration
and data-quality findings, the anomalies of ``docs/metadata.md`` for metadata findings).
Everything that depends on what a cause *is* looks it up here: the diagnosis (which causes
a confident one explains away), the verdict (a cause that makes a finding critical
whatever its figures), the action sentence of a finding, the runbook steps of its ticket,
the alert grouping (a root cause whose finding stands for a group of devices), the report
(a cause a calibration fixes), the simulator (the causes it can inject). Adding a cause is
one entry here plus the detector that finds it.

Templates (``action``, ``member_action``, ``steps``) name their figures in braces; the
caller fills them (``core.actions`` from the case, ``domain.runbook`` from the finding).

Pure data: no numpy, nothing to compute, so that importing it costs nothing at start-up.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

from auditd.model import Severity

Kind = Literal["calibration", "data_quality", "metadata"]


@dataclass(frozen=True, slots=True)
class GroupRule:
    """How a root cause's finding names the alerts it explains (alert grouping)."""

    members_key: str = "members"
    """The ``context`` key that lists the member devices."""
    same_sensor: bool = True
    """Members are the same sensor as the root (both roots today are per sensor); False:
    any sensor of the member devices."""
    same_site: bool = True
    """Members are at the root's site (a reference serves one site); False: anywhere (a
    firmware cohort spans sites, and its root names the site most members are at)."""


@dataclass(frozen=True, slots=True)
class CauseSpec:
    name: str
    kind: Kind
    explanation: str
    """What it means, in a sentence (docs/causes.md says how it is recognised)."""
    steps: tuple[str, ...] = ()
    """The runbook's steps for the technician (``domain.runbook``); none: the generic
    "investigate" step."""
    action: str = ""
    """The finding's one-sentence action when this is its top cause."""
    member_action: str = ""
    """For a root cause: the sentence on the findings of the devices it stands for."""
    severity: Severity | None = None
    """The severity a finding naming this cause has whatever its figures; None: the
    distance beyond tolerance decides (calibration), or minor (metadata)."""
    explains_away: frozenset[str] = frozenset()
    """Causes of the same stream this one accounts for when it is confident: a stuck
    device has a gain of 0 and a huge bias, neither of which a recalibration would fix."""
    group: GroupRule | None = None
    """A root cause: its finding stands for its members' alerts."""
    recalibration_fixes: bool = False
    """A calibration of the device is the remedy (the report lists it as due)."""
    device_own: bool = False
    """Seen in the device's own readings whatever the reference does (a frozen value,
    impossible values, another unit): a reference's drift cannot account for it, so
    beside a reference fault it still comes first on the device's finding, with its own
    action and its own alert (``domain.audit_plan.blame_reference``)."""


_FIRMWARE_STEPS = (
    "Roll back firmware {firmware} on the affected devices to the last version that "
    "passed its audits.",
    "Report the regression against firmware {firmware} to the vendor, with this ticket's "
    "evidence.",
    "Hold further roll-outs of firmware {firmware} until a fix is released.",
)

TABLE: tuple[CauseSpec, ...] = (
    # ----------------------------------------------------------- one stream (core/diagnose)
    CauseSpec(
        "offset_drift", "calibration",
        "the device reads a constant amount off the reference",
        steps=(
            "On site, compare the {sensor} reading with {reference} to confirm the offset "
            "({bias}).",
            "Re-zero or recalibrate the {sensor} sensor against {reference} or a transfer "
            "standard, then record a `calibration` event for {device}.",
            "If the offset comes back within weeks, replace the {sensor} sensor element.",
        ),
        action="Re-zero or recalibrate the {sensor} sensor against a transfer standard: it "
               "reads {bias} off the reference.",
        recalibration_fixes=True),
    CauseSpec(
        "gain_drift", "calibration",
        "the device's error grows with the value: its span is off",
        steps=(
            "Run a two-point (span) calibration of the {sensor} sensor at the low and the high "
            "end of its range (its gain against the reference is {gain}).",
            "Check the sensing element for dirt, condensation or ageing; replace it if the "
            "span cannot be restored.",
        ),
        action="Run a two-point (span) calibration of the {sensor} sensor: its gain against "
               "the reference is {gain}.",
        recalibration_fixes=True),
    CauseSpec(
        "unit_mismatch", "calibration",
        "the readings are in another unit than the one declared",
        steps=(
            "Check the unit setting for {sensor} in the device's configuration and firmware"
            "{firmware_text}: the numbers it sends are not in {unit}.",
            "Correct the unit setting (or the unit the payload declares); do NOT recalibrate "
            "the sensor, it is not out of calibration.",
            "If a firmware update changed the unit, report it against that firmware version.",
        ),
        action="Check the unit the device's firmware or configuration sends for {sensor}: "
               "the readings are not in {unit}.",
        severity="critical",
        # in the wrong unit every figure is scaled: the scatter too
        explains_away=frozenset({"offset_drift", "gain_drift", "noise"}),
        # a factor of 1000 (or degF's 1.8 x + 32) shows against a reference a few units
        # off as plainly as against a sound one, and the fix is on the device
        device_own=True),
    CauseSpec(
        "stuck", "calibration",
        "the device stopped following what it measures: its value is frozen",
        steps=(
            "Inspect the {sensor} sensor on site: its value stopped following the reference.",
            "Power-cycle {device}; if the value stays frozen, replace the sensor.",
        ),
        action="Inspect the {sensor} sensor on site and power-cycle or replace it: it stopped "
               "following the reference.",
        severity="critical",
        explains_away=frozenset({"unit_mismatch", "time_lag", "offset_drift", "gain_drift",
                                 "noise"}),
        device_own=True),
    CauseSpec(
        "clipping", "calibration",
        "the device is pinned at the top or bottom of what it reports while the reference "
        "is inside the range: saturation, usually carried there by its offset or gain",
        steps=(
            "Compare the {sensor} reading with {reference} at the top (or bottom) of the "
            "range: the device saturates where the reference does not.",
            "Correct the offset or span that carries it to full scale (recalibrate), then "
            "check that the device's configured measuring range covers the site's values.",
            "If it still saturates inside its rated range, replace the sensor element.",
        ),
        action="Recalibrate the {sensor} sensor's offset and span and check its measuring "
               "range: it saturates at full scale while the reference is inside the range.",
        explains_away=frozenset({"stuck", "gain_drift", "noise"}),
        recalibration_fixes=True),
    CauseSpec(
        "noise", "calibration",
        "the readings scatter about the reference beyond what the model allows",
        steps=(
            "Check the {sensor} sensor's wiring and connectors, and its cable shielding.",
            "Check the mounting (radiation shield, vibration, airflow) and the stability of "
            "the power supply.",
            "Replace the sensor if the readings still scatter after these checks.",
        ),
        action="Check the {sensor} sensor's wiring, shielding, mounting and power supply: its "
               "readings scatter {scatter} around the reference."),
    CauseSpec(
        "dropout", "data_quality",
        "the device was silent (or sent nulls) where the reference had data",
        steps=(
            "Check {device}'s power supply or battery.",
            "Check its network link (signal strength, reachability of the gateway) and its "
            "logs for resets.",
        ),
        action="Check the device's power and network link: it delivered {sensor} data for "
               "only {coverage} of the window."),
    CauseSpec(
        "time_lag", "calibration",
        "the device's timestamps run ahead of or behind the reference's",
        steps=(
            "Fix {device}'s clock: check its NTP / time synchronisation (its timestamps are "
            "{lag} off the reference).",
            "Check for buffering that sends old readings late, or stamps them when sent "
            "instead of when measured.",
        ),
        action="Check the device's clock synchronisation (NTP) and its buffering: its "
               "timestamps run {lag} {late} the reference."),
    CauseSpec(
        "unexplained", "calibration",
        "deviation of unknown cause: out of tolerance in a way no detector recognises",
        steps=(
            "Review the {sensor} stream of {device} against {reference} by hand: it fails "
            "its tolerance ({evidence}) in a pattern the audit does not recognise.",
            "Check the sensor on site (mounting, contamination, wiring) and compare it with "
            "a transfer standard before recalibrating.",
        ),
        action="Review the {sensor} stream by hand against the reference: it is out of "
               "tolerance on {failed} without a recognised pattern."),
    CauseSpec(
        "out_of_range", "data_quality",
        "the device reports physically impossible values (quarantined at ingest)",
        steps=(
            "Check the {sensor} sensor and its unit setting: it reports physically impossible "
            "values.",
            "Replace the sensor if the impossible values persist.",
        ),
        action="Inspect the sensor and its wiring: it reports physically impossible values; "
               "replace it if they persist.",
        device_own=True),
    # ----------------------------------------------------------- the whole run (domain)
    CauseSpec(
        "reference_fault", "calibration",
        "the reference instrument drifted: the devices it serves agree with each other, "
        "not with it",
        steps=(
            "Inspect the reference instrument {reference} on site: the devices it serves "
            "agree with each other, not with it.",
            "Recalibrate {reference} (or send it for calibration and put a calibrated spare in "
            "its place); do not recalibrate the devices it serves.",
            "After the reference is back in tolerance, check that the next audit passes.",
        ),
        action="Inspect/recalibrate the reference, not the device: {reference} reads "
               "{deviation} {unit} off {deviating} of {devices} devices it serves; recalibrate "
               "it and re-audit.",
        member_action="Inspect/recalibrate the reference, not the device: {reference} has "
                      "drifted, not this device.",
        # what the reference's drift looks like from a device: the reference's, not its own
        explains_away=frozenset({"offset_drift", "gain_drift"}),
        group=GroupRule(same_sensor=True, same_site=True)),
    CauseSpec(
        "firmware_regression", "calibration",
        "devices running one firmware version fail together beyond chance, after updating",
        steps=_FIRMWARE_STEPS,
        action="Roll back {model} firmware {version} on the affected devices (or hold the "
               "rollout) and report the regression to the firmware team; recalibration will "
               "not fix it.",
        member_action="Firmware {version} regression: roll back or hold the update on this "
                      "device rather than recalibrating it.",
        group=GroupRule(same_sensor=True, same_site=False)),
    # ----------------------------------------------------------- metadata (domain/metadata)
    # Ranked most consequential first: a metadata finding lists its anomalies in this order.
    # Never rename one: they are keys in findings, tickets and silences.
    CauseSpec(
        "firmware_not_allowed", "metadata",
        "the device runs a firmware version its profile does not allow",
        steps=("Update or roll back {device}'s firmware{firmware_text} to a version its "
               "profile allows.",),
        action="Update or roll back the firmware to a version the profile allows "
               "(allowed_firmware), or extend the profile if the version is vetted.",
        severity="major"),
    CauseSpec(
        "firmware_downgrade", "metadata",
        "the firmware went back to an older version with no update event announcing it",
        steps=("Find out who downgraded {device}'s firmware{firmware_text} and why; restore "
               "the released version unless the downgrade was deliberate.",),
        action="Find out who or what rolled the firmware back; re-apply the release version "
               "unless the rollback was deliberate.",
        severity="major"),
    CauseSpec(
        "serial_changed", "metadata",
        "the serial number changed with no replacement event: a silent hardware swap",
        action="The hardware was swapped without a replacement event: confirm on site, "
               "record the replacement and recalibrate the new unit.",
        severity="major"),
    CauseSpec(
        "model_unknown", "metadata",
        "the device announces a model no profile describes",
        action="Add a device profile for this model (device_profiles/), or correct the model "
               "the device announces; until then none of its readings is audited.",
        severity="major"),
    CauseSpec(
        "device_silent", "metadata",
        "no reading for far longer than the device's reporting interval",
        action="Check power, network and the device's MQTT client: it has stopped reporting.",
        severity="major"),
    CauseSpec(
        "calibration_overdue", "metadata",
        "the device's (or the reference's) calibration is past its due date",
        steps=("Calibrate {device} (its calibration is overdue) and record a `calibration` "
               "event.",),
        action="Schedule a calibration; findings on this instrument lean on an expired "
               "certificate until then.",
        severity="minor"),
    CauseSpec(
        "sensor_not_in_profile", "metadata",
        "the device sends a sensor its profile lacks",
        action="Add the sensor to the model's profile or stop the device sending it; its "
               "readings are quarantined, not audited.",
        severity="minor"),
    CauseSpec(
        "installed_in_future", "metadata",
        "installed_at lies in the future",
        action="Correct installed_at in the device's metadata.",
        severity="minor"),
    CauseSpec(
        "installed_after_telemetry", "metadata",
        "installed_at is after the device's first reading",
        action="Correct installed_at, or check whether this id was reused by another unit "
               "before the installation.",
        severity="minor"),
    CauseSpec(
        "firmware_rare", "metadata",
        "almost no other device of the model runs this firmware",
        action="Check whether this firmware was installed on purpose; align it with the rest "
               "of the fleet.",
        severity="minor"),
    CauseSpec(
        "metadata_invalid", "metadata",
        "a metadata value cannot be read (a date, a version)",
        steps=("Correct {device}'s metadata (model, firmware, dates) at the device or in its "
               "provisioning.",),
        action="Fix the device's metadata payload (see the evidence for the key).",
        severity="minor"),
    CauseSpec(
        "cohort_outlier", "metadata",
        "the device differs from the other devices of its model and firmware",
        steps=("Compare {device} with the other devices of its model and firmware: check its "
               "configuration and installation for what differs.",),
        severity="minor"),
)

REGISTRY: Mapping[str, CauseSpec] = {entry.name: entry for entry in TABLE}

FALLBACK_STEP = "Investigate {device} {sensor}: {evidence}"
"""The runbook step of a cause with no steps of its own."""


def spec(name: str) -> CauseSpec | None:
    """The entry of ``name``; None for a name the registry does not know."""
    return REGISTRY.get(name)


def of_kind(*kinds: Kind) -> Iterator[CauseSpec]:
    """The entries of these kinds, in registry order."""
    return (c for c in TABLE if c.kind in kinds)


FINDING_CAUSES: tuple[str, ...] = tuple(c.name for c in of_kind("calibration", "data_quality"))
"""CONTRACT.md's cause vocabulary for calibration and data-quality findings."""

ANOMALIES: tuple[str, ...] = tuple(c.name for c in of_kind("metadata"))
"""Every metadata anomaly, most consequential first."""

EXPLAINS_AWAY: Mapping[str, frozenset[str]] = {
    c.name: c.explains_away for c in TABLE if c.explains_away}

ROOT_CAUSES: Mapping[str, GroupRule] = {c.name: c.group for c in TABLE if c.group is not None}
"""Causes whose finding stands for a group."""
