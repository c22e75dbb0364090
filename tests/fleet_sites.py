"""Eight sites, each its own gateway, and a firmware release no site can prove alone.

Site ``s1`` .. ``s8``: reference ``ref-sK`` and five th-200 devices ``th-sK-01`` .. ``-05``,
reporting once a minute for ``HOURS`` hours (the tests/rollout.py recording, one per site).
At each site one device (``-01``) updates to 2.4.0 over the air and from then on reads
pressure ``PRESSURE_OFFSET`` hPa high; another (``-02``) updates to 2.3.5 at the same time
and stays healthy; the rest stay on 2.3.1. No site holds two 2.4.0 devices, so no gateway
can call it a firmware regression. At ``DRIFTING_SITE`` the reference's temperature steps
``REFERENCE_STEP`` degC high at ``REFERENCE_STEP_H``: its gateway should blame the
reference, and the fleet should name it and trust none of its devices' temperature verdicts.
"""

from __future__ import annotations

from pathlib import Path

import rollout

START = rollout.START  # 2025-11-25T00:00:00Z
HOURS = rollout.HOURS
SITES = [f"s{k}" for k in range(1, 9)]
DRIFTING_SITE = "s4"
REFERENCE_STEP = 1.5  # degC; the th-200's temperature bias tolerance is 0.5 degC
REFERENCE_STEP_H = 8
PRESSURE_OFFSET = rollout.PRESSURE_OFFSET  # hPa; the tolerance is 1.0 hPa
OLD, BAD, GOOD = rollout.OLD, rollout.BAD, rollout.GOOD
REPO = Path(__file__).resolve().parents[1]


def devices(site: str) -> list[str]:
    return [f"th-{site}-{i:02d}" for i in range(1, 6)]


def regressed(site: str) -> str:
    return f"th-{site}-01"


def rollout_h(site: str) -> int:
    """The update reaches each site at its own hour (10, 11 or 12)."""
    return 10 + SITES.index(site) % 3


def write_site(site: str, path: Path, seed: int) -> Path:
    names = devices(site)
    step = ((START + REFERENCE_STEP_H * 3600, REFERENCE_STEP) if site == DRIFTING_SITE
            else None)
    return rollout.write_site(
        path, site=site, devices=names, rollout=START + rollout_h(site) * 3600,
        updates={names[0]: BAD, names[1]: GOOD}, ref_serial=f"REF-{site}",
        serial=lambda i: f"SN-{site}-{i}", seed=seed, reference_step=step)


def write_references(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for site in SITES:
        (directory / f"{site}.toml").write_text(
            f'[[reference]]\nid = "ref-{site}"\nsite = "{site}"\nserves = ["th-{site}-*"]\n'
            'sensors = ["temperature", "humidity", "pressure"]\nmodel = "ref-station"\n'
            'calibration_due = 2027-06-01\n'
            'uncertainty = {temperature = 0.1, humidity = 1.5, pressure = 0.2}\n',
            encoding="utf-8")
    return directory


def config(path: Path, site: str, references: Path, store: Path) -> Path:
    """One site's gateway: audits every 12 h (at 12 h, 24 h and the recording's end)."""
    path.write_text(f'site = "{site}"\ngateway = "gw-{site}"\n'
                    f'profiles_dir = "{REPO / "device_profiles"}"\n'
                    f'references_dir = "{references}"\n'
                    f'[audit]\ninterval = "12h"\n[store]\npath = "{store}"\n',
                    encoding="utf-8")
    return path
