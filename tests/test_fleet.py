"""The fleet step of an audit run on hand-made findings: keys, roots, reports per site."""

from __future__ import annotations

from auditd.domain.metadata import DeviceHistory, MetaVersion
from auditd.domain.run_context import COHORT, apply_cohorts
from auditd.model import Cause, Finding

T0 = 1_764_028_800.0
UPDATE = T0 + 12 * 3600
END = T0 + 86_400


def finding(device: str, site: str = "north", failed: bool = False,
            sensor: str = "pressure") -> Finding:
    return Finding(kind="calibration", site=site, device=device, sensor=sensor,
                   status="fail" if failed else "pass",
                   severity="major" if failed else "none", window_start=T0, window_end=END,
                   unit="hPa", reference=f"ref-{site}",
                   causes=(Cause("offset_drift", 0.9, "+2.5 hPa"),) if failed else (),
                   onset=UPDATE + 60 if failed else None)


def history(device: str, firmware: str, site: str = "north") -> DeviceHistory:
    v = MetaVersion({"model": "th-200", "firmware": firmware}, UPDATE, UPDATE, END, site)
    return DeviceHistory(device, site, (v,))


def rollout(bad: int = 4, good: int = 8) -> tuple[list[Finding], dict[str, DeviceHistory]]:
    findings = [finding(f"bad-{i}", failed=True) for i in range(bad)]
    findings += [finding(f"ok-{i}") for i in range(good)]
    histories = {f.device: history(f.device, "2.4.0" if f.device.startswith("bad")
                                   else "2.3.1") for f in findings}
    return findings, histories


def test_a_device_that_moved_sites_keeps_both_verdicts() -> None:
    findings, histories = rollout()
    moved = [finding("bad-0", site="south", failed=False)]
    out = apply_cohorts(findings + moved, histories, dict.fromkeys(histories, "th-200"),
                        now=END)
    stream = [(f.site, f.device) for f in out.findings if f.device == "bad-0"]
    assert sorted(stream) == [("north", "bad-0"), ("south", "bad-0")]


def test_a_regression_gives_one_root_and_its_report_names_the_site() -> None:
    findings, histories = rollout()
    out = apply_cohorts(findings, histories, dict.fromkeys(histories, "th-200"), now=END)
    roots = [f for f in out.findings if f.context.get("comparison") == COHORT]
    assert [(r.device, r.status) for r in roots] == [("th-200.fw-2.4.0", "fail")]
    assert [c["sites"] for c in out.cohorts] == [["north"]]


def test_a_root_that_is_no_longer_regressed_is_cleared_once() -> None:
    findings, histories = rollout()
    first = apply_cohorts(findings, histories, dict.fromkeys(histories, "th-200"), now=END)
    root = next(f for f in first.findings if f.context.get("comparison") == COHORT)
    healed = [finding(f.device) for f in findings]  # rolled back: everyone passes
    later = apply_cohorts(healed, histories, dict.fromkeys(histories, "th-200"),
                          now=END + 3600, previous_roots=[root])
    cleared = [f for f in later.findings if f.context.get("comparison") == COHORT]
    assert [(f.device, f.sensor, f.status) for f in cleared] == [
        ("th-200.fw-2.4.0", "pressure", "pass")]
    assert cleared[0].context["cleared"] == root.context["members"]
    again = apply_cohorts(healed, histories, dict.fromkeys(histories, "th-200"),
                          now=END + 7200, previous_roots=[cleared[0]])
    assert not [f for f in again.findings if f.context.get("comparison") == COHORT]
