"""sensor-auditd: a sensor calibration audit daemon for edge and IoT fleets.

The import package is ``auditd``; everything a user types or installs is ``sensor-auditd``
(the Linux audit daemon already owns ``auditd``).
"""

__version__ = "0.1.0"
