"""Real small file systems for the disk-full tests: a tmpfs of a few MiB, and a filler that
takes its last free byte (a real ENOSPC, not a simulated one)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def tmpfs(mount_point: Path, size: str, *, skip_if_refused: bool = False) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` (``3m``) at ``mount_point`` for the ``with`` block.

    Needs root (CI and the dev machines run as root): the test is skipped otherwise, and,
    with ``skip_if_refused``, also when root may not mount here (a container)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI and the dev machines run as root)")
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                           str(mount_point)], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        if skip_if_refused:
            pytest.skip(f"mounting a tmpfs is not permitted here: {done.stderr.strip()}")
        done.check_returncode()
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, timeout=30)


def fill(directory: Path) -> Path:
    """Take every free byte of the file system (unbuffered, so nothing is left to flush)."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (65536, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    return filler
