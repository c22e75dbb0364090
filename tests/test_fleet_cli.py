"""A gateway installed without the ``fleet`` extra: sensor-auditd starts, and the fleet
commands say what to install (exit 2) instead of a traceback."""

from __future__ import annotations

import subprocess
import sys

WITHOUT_PSYCOPG = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("psycopg", "psycopg_pool"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Block())
from auditd.cli import main
sys.argv = ["sensor-auditd", *sys.argv[1:]]
main()
"""


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", WITHOUT_PSYCOPG, *args], capture_output=True,
                          text=True, timeout=120)


def test_the_gateway_commands_work_without_psycopg() -> None:
    result = run("--help")
    assert result.returncode == 0, result.stderr
    assert "fleet" in result.stdout and "replay" in result.stdout


def test_a_fleet_command_without_psycopg_names_the_extra() -> None:
    result = run("fleet", "status", "--dsn", "postgresql://postgres@127.0.0.1:5432/x")
    assert result.returncode == 2
    assert "sensor-auditd[fleet]" in result.stderr and "Traceback" not in result.stderr
