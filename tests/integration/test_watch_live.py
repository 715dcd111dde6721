"""`ctguard watch` driven in a real tmux (as over ssh): the screen shows the namespace's table and follows it
live; Ctrl-C ends it cleanly. `--once --json` gives one frame as a document."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time

import pytest

from ctguard.lab import testbed as _tb
from ctguard.lab.fill import fill
from ctguard.runner import run

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-c", "from ctguard.cli import main; main()"]


def _screen(tmux: list[str]) -> str:
    return run([*tmux, "capture-pane", "-p", "-t", "w"], timeout=10, check=True).stdout


def _wait_screen(tmux: list[str], needles: tuple[str, ...], timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = _screen(tmux)
        if all(n in text for n in needles):
            return text
        time.sleep(0.25)
    pytest.fail(f"screen never showed {needles}; last screen:\n{text}")


def test_watch_in_tmux_follows_the_table(testbed: _tb.Testbed) -> None:
    if shutil.which("tmux") is None:
        pytest.fail("tmux is not installed: run `make setup`")
    ns = testbed.ns()
    fill("tcp-est", 1000, _tb.FILL_SRC, ns)
    fill("tcp-tw", 200, _tb.FILL_SRC, ns, sport=40001)
    # A private tmux server (its own socket): we start it and kill it, nothing else.
    tmux = ["tmux", "-L", f"cte-{secrets.token_hex(4)}"]
    try:
        run([*tmux, "-f", "/dev/null", "new-session", "-d", "-s", "w", "-x", "110", "-y", "40",
             "env", f"PYTHONPATH={os.environ.get('PYTHONPATH', '')}", "TERM=xterm-256color",
             *CLI, "watch", "--netns", testbed.srv, "--breakdown-interval", "2"], timeout=10, check=True)
        text = _wait_screen(tmux, ("ctguard watch", testbed.srv, "1,200 / ", "ESTABLISHED", "TIME_WAIT"))
        assert "drops" in text and "growth" in text and "headroom" in text and "top daemons" in text
        # It is live: more entries show up without touching the terminal.
        fill("tcp-est", 800, _tb.FILL_SRC, ns, start=1000)
        _wait_screen(tmux, ("2,000 / ",), timeout=10)
        # Ctrl-C ends it (exit 0 closes the pane, and with it the session).
        run([*tmux, "send-keys", "-t", "w", "C-c"], timeout=10, check=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if not run([*tmux, "has-session", "-t", "w"], timeout=10).ok:
                break
            time.sleep(0.2)
        else:
            pytest.fail("watch did not exit on Ctrl-C:\n" + _screen(tmux))
    finally:
        run([*tmux, "kill-server"], timeout=10)


def test_watch_once_json(testbed: _tb.Testbed) -> None:
    ns = testbed.ns()
    fill("tcp-tw", 150, _tb.FILL_SRC, ns)
    out = subprocess.run([*CLI, "watch", "--netns", testbed.srv, "--once", "--json"],  # noqa: S603
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["schema"] == 1 and doc["netns"] == testbed.srv and doc["verdict"] == "OK"
    assert doc["count"] == 150 and doc["free"] == doc["max"] - 150
    assert doc["top_states"] == [{"state": "TIME_WAIT", "entries": 150}]
    assert doc["rates"]["drop"] == 0 and doc["rates"]["growth"] == 0
    assert doc["headroom"]["daemon"] is None and doc["headroom"]["headroom"] == doc["free"]
    bad = subprocess.run([*CLI, "watch", "--netns", "cte-no-such-ns", "--once"],  # noqa: S603
                         capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 3 and bad.stderr.startswith("ctguard: ") and bad.stderr.count("\n") == 1


def test_watch_piped_prints_one_frame_per_interval(testbed: _tb.Testbed) -> None:
    fill("tcp-est", 77, _tb.FILL_SRC, testbed.ns())
    p = subprocess.Popen([*CLI, "watch", "--netns", testbed.srv, "--no-breakdown", "--interval", "0.5"],  # noqa: S603
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    time.sleep(5.0)  # interpreter start is 1-2 s on a loaded machine, then a frame every 0.5 s
    os.killpg(p.pid, signal.SIGTERM)
    out, err = p.communicate(timeout=10)
    assert p.returncode == 0, err
    assert out.count("ctguard watch") >= 2 and "77 / " in out
    assert "\x1b[" not in out  # no cursor movement or colours into a pipe
