"""Helpers shared by the real-kernel tests for the peer processes they start (netpeer.py, exporters, guards)."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

PEER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "netpeer.py")


def wait_ready(path: str | os.PathLike[str], proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """Wait for the peer's ready file; fail at once if the peer died first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if os.path.exists(path):
            return
        if proc.poll() is not None:
            pytest.fail(f"peer exited with {proc.returncode} before it was ready")
        time.sleep(0.05)
    pytest.fail(f"peer not ready: {path}")


def stop_group(p: subprocess.Popen[str] | subprocess.Popen[bytes], timeout: float = 10) -> None:
    """SIGTERM the process group of a daemon the test started (own session), SIGKILL if it lingers."""
    if p.poll() is not None:
        return
    os.killpg(p.pid, signal.SIGTERM)
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout)
