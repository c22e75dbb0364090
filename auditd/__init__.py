"""sensor-auditd: a sensor calibration audit daemon for edge and IoT fleets.

The import package is ``auditd``; everything a user types or installs is ``sensor-auditd``
(the Linux audit daemon already owns ``auditd``).
"""

from pathlib import Path

__version__ = "0.1.0"

PACKAGE_DATA = Path(__file__).resolve().parent
"""Where the shipped data files are (``units.txt``, ``data/``, ``mappings/``: package-data
in pyproject.toml), wherever the module that reads one lives in the tree."""
