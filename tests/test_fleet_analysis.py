"""The fleet's pure analysis on hand-made and randomly drawn fleets: cohorts across sites
and their chance rate in large fleets, reference health, drift rates and intervals, the
due list."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest

from auditd.fleet.adapters.store import with_onset_statement
from auditd.fleet.analysis.cohorts import fleet_cohorts
from auditd.fleet.analysis.drift import drift_rates
from auditd.fleet.analysis.due import due_list, open_tickets
from auditd.fleet.analysis.facts import (
    DAY_S,
    MONTH_S,
    Device,
    DeviceDrift,
    FirmwareSeen,
    FleetFacts,
    Ticket,
    Verdict,
)
from auditd.fleet.analysis.references import reference_health
from auditd.fleet.analysis.report import build_report
from auditd.model import Profile, SensorSpec, Tolerance

T0 = 1_764_028_800.0
END = T0 + DAY_S
UPDATE = T0 + 10 * 3600


def verdict(site: str, device: str, *, failed: bool = False, cause: str = "offset_drift",
            sensor: str = "pressure", reference: str | None = None,
            causes: tuple[str, ...] | None = None, onset: float | None = None) -> Verdict:
    return Verdict(site, f"gw-{site}", device, sensor, "calibration",
                   "fail" if failed else "pass", "major" if failed else "none",
                   (causes if causes is not None else (cause,)) if failed else (),
                   reference or f"ref-{site}", 2.5 if failed else 0.1,
                   onset if onset is not None else (UPDATE + 600 if failed else None),
                   T0, END)


def device(site: str, name: str, firmware: str, *, hw: str = "B",
           installed: str = "2025-03-01", model: str = "th-200") -> Device:
    return Device(site, name, f"gw-{site}", model, firmware, hw, installed, "2025-10-01",
                  "2026-10-01", END)


def seen(site: str, name: str, *versions: tuple[str, float]) -> list[FirmwareSeen]:
    return [FirmwareSeen(site, name, fw, at) for fw, at in versions]


def eight_sites() -> tuple[list[Verdict], list[Device], list[FirmwareSeen]]:
    """One 2.4.0 device failing pressure at each of eight sites, four healthy 2.3.1 beside."""
    verdicts, devices, history = [], [], []
    for k in range(1, 9):
        site = f"s{k}"
        for i in range(5):
            name = f"th-{site}-{i}"
            bad = i == 0
            verdicts.append(verdict(site, name, failed=bad))
            devices.append(device(site, name, "2.4.0" if bad else "2.3.1"))
            history += seen(site, name, ("2.3.1", T0 - 30 * DAY_S),
                            *((("2.4.0", UPDATE),) if bad else ()))
    return verdicts, devices, history


def test_one_device_per_site_on_a_bad_release_is_one_cohort_with_its_change() -> None:
    verdicts, devices, history = eight_sites()
    (cohort,) = fleet_cohorts(verdicts, devices, history)
    assert (cohort.model, cohort.attribute, cohort.value, cohort.sensor, cohort.cause) == (
        "th-200", "firmware", "2.4.0", "pressure", "offset_drift")
    assert cohort.members == tuple((f"s{k}", f"th-s{k}-0") for k in range(1, 9))
    assert cohort.change is not None and cohort.change.from_version == "2.3.1"
    assert cohort.change.first == UPDATE and cohort.change.following == 8
    assert cohort.regression
    # hypergeometric: all 8 failures among the 8 of 40 on 2.4.0; Holm times the 2 tried
    assert math.isclose(cohort.p, 1 / math.comb(40, 8), rel_tol=1e-9)
    assert math.isclose(cohort.p_adjusted, 2 / math.comb(40, 8), rel_tol=1e-9)


def test_an_onset_stated_to_hours_follows_an_update_inside_its_interval() -> None:
    """The gateway dates each failure two hours before the roll-out, to +-3 hours (a
    drift_start across windows): the update lies inside that interval, so the fleet, like
    the gateway's own cohort test, counts the failures as following it. Stated to the
    minute they do not; a bracket's middle lends no uncertainty (before the statement
    reached the fleet, every onset was taken as exact)."""
    verdicts, devices, history = eight_sites()

    def stated(uncertainty: float) -> list[Verdict]:
        return [replace(v, onset=UPDATE - 2 * 3600, onset_uncertainty_s=uncertainty)
                if v.status == "fail" else v for v in verdicts]

    (loose,) = fleet_cohorts(stated(3 * 3600), devices, history)
    assert loose.regression and loose.change is not None and loose.change.following == 8
    (exact,) = fleet_cohorts(stated(60.0), devices, history)
    assert not exact.regression
    # as the store reads them from the published findings: a bracket lends no uncertainty
    window = {"method": "drift_start", "window": None, "uncertainty_s": 10800.0}
    bracket = {"method": "bracket", "window": None, "uncertainty_s": 10800.0}
    read = with_onset_statement(verdicts[0], {"context": {"onset_estimate": window}})
    assert (read.onset_uncertainty_s, read.onset_dated) == (10800.0, True)
    read = with_onset_statement(verdicts[0], {"context": {"onset_estimate": bracket}})
    assert (read.onset_uncertainty_s, read.onset_dated) == (0.0, False)
    assert with_onset_statement(verdicts[0], None) == verdicts[0]


def test_a_cohort_at_one_site_is_that_gateways_not_the_fleets() -> None:
    verdicts, devices = [], []
    for i in range(6):
        verdicts.append(verdict("s1", f"d{i}", failed=i < 4))
        devices.append(device("s1", f"d{i}", "2.4.0" if i < 4 else "2.3.1"))
    for k in range(2, 9):
        for i in range(4):
            verdicts.append(verdict(f"s{k}", f"d{i}"))
            devices.append(device(f"s{k}", f"d{i}", "2.3.1"))
    assert fleet_cohorts(verdicts, devices, []) == []


def test_an_install_batch_that_is_the_release_is_not_a_second_cohort() -> None:
    verdicts, devices, history = eight_sites()
    devices = [device(d.site, d.device, d.firmware or "",
                      installed="2025-06-01" if d.firmware == "2.4.0" else "2025-03-01")
               for d in devices]
    cohorts = fleet_cohorts(verdicts, devices, history)
    assert len(cohorts) == 1  # the same eight failures, one finding


def test_verdicts_of_a_drifting_reference_count_for_no_cohort() -> None:
    verdicts, devices, history = eight_sites()
    # s4's reference drifts in temperature: its gateway blames it on every device there
    verdicts.append(Verdict("s4", "gw-s4", "ref-s4", "temperature", "calibration", "fail",
                            "major", ("reference_fault",), None, 1.5, T0 + 8 * 3600, T0, END,
                            "peer_consensus"))
    verdicts += [verdict("s4", f"th-s4-{i}", failed=True, sensor="temperature",
                         causes=("reference_fault",)) for i in range(5)]
    cohorts = fleet_cohorts(verdicts, devices, history)
    assert [(c.sensor, c.value) for c in cohorts] == [("pressure", "2.4.0")]
    (drifting,) = [r for r in reference_health(verdicts) if r.state == "drifting"]
    assert (drifting.site, drifting.reference, drifting.sensor) == ("s4", "ref-s4",
                                                                    "temperature")
    assert drifting.unreliable == tuple(f"th-s4-{i}" for i in range(5))


def random_fleet(rng: random.Random, sites: int = 50, per_site: int = 40,
                 rate: float = 0.05) -> tuple[list[Verdict], list[Device]]:
    """Failures that have nothing to do with firmware, hardware or batch."""
    verdicts, devices = [], []
    versions = ["2.3.1", "2.3.5", "2.4.0", "2.4.1", "2.5.0", "2.5.1", "2.6.0", "3.0.0"]
    for k in range(sites):
        for i in range(per_site):
            name = f"d{i}"
            cause = rng.choice(["offset_drift", "noise", "gain_drift"])
            verdicts.append(verdict(f"s{k}", name, failed=rng.random() < rate, cause=cause))
            devices.append(device(f"s{k}", name, rng.choice(versions),
                                  hw=rng.choice("ABC"),
                                  installed=f"2025-{rng.randint(1, 12):02d}-01"))
    return verdicts, devices


def test_large_fleets_with_chance_failures_rarely_show_a_cohort() -> None:
    """2,000 devices, 8 firmware versions, 3 hardware revisions, 12 batches, 3 failure
    modes: 69 cohorts tried per fleet. Holm keeps the chance of any false cohort under 5 %;
    over 40 fleets, more than 6 with one (binomial tail < 1.5 %) means it does not."""
    rng = random.Random(11)
    false = sum(bool(fleet_cohorts(*random_fleet(rng), [])) for _ in range(40))
    assert false <= 6


def test_large_fleets_with_chance_failures_bh_keeps_false_cohorts_rare() -> None:
    rng = random.Random(12)
    false = sum(bool(fleet_cohorts(*random_fleet(rng), [], correction="bh"))
                for _ in range(40))
    assert false <= 6  # with no true cohort, BH's false discovery rate is its FWER


def test_a_real_cohort_stands_out_of_a_large_noisy_fleet() -> None:
    rng = random.Random(13)
    verdicts, devices = random_fleet(rng)
    bad = {(f"s{k}", "d0") for k in range(0, 50, 5)}  # ten sites, one device each
    verdicts = [verdict(v.site, v.device, failed=True) if v.key in bad else v
                for v in verdicts]
    devices = [device(d.site, d.device, "2.4.9") if d.key in bad else d for d in devices]
    cohorts = fleet_cohorts(verdicts, devices, [], correction="bh")
    assert [(c.value, c.cause) for c in cohorts] == [("2.4.9", "offset_drift")]
    assert set(cohorts[0].members) == bad


# --------------------------------------------------------------------------- drift

def profile(bias: float = 1.0, interval: float = 365) -> Profile:
    tol = Tolerance(bias, 0.02, 1.5, 0.9, 300, DAY_S, 60)
    spec = SensorSpec("pressure", "[pressure]", "hPa", (300.0, 1100.0), 60, tol)
    return Profile("th-200", {"pressure": spec}, calibration_interval_days=interval)


def drifting_fleet(rng: random.Random, rate: float, spread: float, n: int = 30,
                   se: float = 0.0) -> tuple[list[DeviceDrift], list[Device]]:
    drifts, devices = [], []
    for i in range(n):
        true = rng.gauss(rate, spread) / MONTH_S
        measured = true + rng.gauss(0, se / MONTH_S) if se else true
        drifts.append(DeviceDrift("s1", f"d{i}", "pressure", measured, 14, 7 * DAY_S,
                                  se / MONTH_S))
        devices.append(device("s1", f"d{i}", "2.3.1"))
    return drifts, devices


def test_the_rate_interval_covers_the_true_rate_about_95_percent_of_the_time() -> None:
    rng = random.Random(21)
    covered = 0
    for _ in range(300):
        drifts, devices = drifting_fleet(rng, 0.08, 0.05, n=12)
        (rate,) = drift_rates(drifts, devices, {"th-200": profile()})
        covered += rate.low <= 0.08 <= rate.high
    assert 0.91 <= covered / 300 <= 0.99


def test_the_recommended_interval_is_the_time_to_tolerance_of_the_fast_devices() -> None:
    drifts, devices = drifting_fleet(random.Random(1), 0.1, 0.0, n=10)
    (rate,) = drift_rates(drifts, devices, {"th-200": profile(1.0, 365)})
    # identical devices: no spread, an interval of zero width: 1.0 hPa / 0.1 hPa a month
    assert rate.recommended_days == pytest.approx(10 * MONTH_S / DAY_S, rel=1e-6)
    assert rate.profile_days == 365


def test_measurement_noise_does_not_pass_for_devices_drifting_apart() -> None:
    rng = random.Random(5)
    drifts, devices = drifting_fleet(rng, 0.1, 0.0, n=200, se=0.2)
    (rate,) = drift_rates(drifts, devices, {"th-200": profile()})
    # the raw spread is 0.2 a month; what is left is the sampling error of the subtraction
    assert rate.spread_per_month < 0.1
    # true: 1.0 / 0.1 = 304 days for every device; taking the raw spread for drift would
    # recommend 1.0 / (0.1 + 0.03 + 1.645 x 0.2) = 66 days
    assert rate.recommended_days is not None and rate.recommended_days > 100


def test_no_recommendation_without_drift_devices_or_profile() -> None:
    drifts, devices = drifting_fleet(random.Random(2), 0.1, 0.01, n=2)
    (few,) = drift_rates(drifts, devices, {"th-200": profile()})
    assert few.recommended_days is None and "3 needed" in few.why
    drifts, devices = drifting_fleet(random.Random(2), 0.1, 0.01)
    (unknown,) = drift_rates(drifts, devices, {})
    assert unknown.recommended_days is None and "profile" in unknown.why
    drifts = [DeviceDrift(d.site, d.device, d.sensor, 0.0, 14, 7 * DAY_S) for d in drifts]
    (still,) = drift_rates(drifts, devices, {"th-200": profile()})
    assert still.recommended_days is None and still.why == "no measurable drift"


# --------------------------------------------------------------------------- due list

def ticket(gateway: str, ticket_id: str, *, state: str = "open", event: str = "open",
           device: str = "th-s1-0") -> Ticket:
    return Ticket("s1", gateway, ticket_id, device, "pressure", "offset_drift", "major",
                  state, event, T0, T0 + 60)


def test_one_fault_filed_by_two_gateways_is_one_open_ticket() -> None:
    tickets = [ticket("gw-a", "t1"), ticket("gw-b", "t9"),
               ticket("gw-a", "t2", device="th-s1-1", state="resolved", event="resolve")]
    found = open_tickets(tickets)
    assert list(found) == [("s1", "th-s1-0")]
    (only,) = found[("s1", "th-s1-0")]
    assert only.filed_by == (("gw-a", "t1"), ("gw-b", "t9"))


def test_due_list_lists_failing_and_due_devices_not_those_a_reference_explains() -> None:
    now = T0 + 2 * DAY_S
    devices = [device("s1", "failing", "2.3.1"), device("s1", "blamed", "2.3.1"),
               Device("s1", "later", "gw-s1", "th-200", "2.3.1", "B", None, None,
                      "2026-06-01", END),
               Device("s1", "soon", "gw-s1", "th-200", "2.3.1", "B", None, None,
                      "2025-12-10", END)]
    verdicts = [verdict("s1", "failing", failed=True),
                verdict("s1", "blamed", failed=True, causes=("reference_fault",)),
                Verdict("s1", "gw-s1", "ref-s1", "pressure", "calibration", "fail", "major",
                        ("reference_fault",), None, 1.5, T0, T0, END)]
    due = due_list([replace_dates(d) for d in devices], verdicts, [], {}, now)
    assert [(i.device, i.reasons) for i in due] == [
        ("failing", ("pressure: offset_drift",)),
        ("ref-s1", ("pressure: reference drifting",)),
        ("soon", ("calibration due 2025-12-10",))]


def replace_dates(d: Device) -> Device:
    """Devices without calibration dates unless the test gave one."""
    from dataclasses import replace
    return replace(d, calibrated_at=None,
                   calibration_due=d.calibration_due if d.device in ("later", "soon")
                   else None)


def test_the_report_excludes_cohort_steps_from_the_drift_rate() -> None:
    verdicts, devices, history = eight_sites()
    drifts = [DeviceDrift(d.site, d.device, "pressure",
                          (3.0 if d.firmware == "2.4.0" else 0.05) / MONTH_S, 3, 2 * DAY_S)
              for d in devices]
    report = build_report(FleetFacts(END, tuple(verdicts), tuple(devices), tuple(history),
                                     tuple(drifts), (), {"th-200": profile()}))
    (rate,) = report.drift
    assert rate.devices == 32 and rate.rate_per_month == pytest.approx(0.05)
