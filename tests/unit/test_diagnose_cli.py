"""`ctguard diagnose` as the operator runs it: exit codes, --json shape, HTML report, stdin, bad input as one
line on stderr. In-process through the real entry point (`ctguard.cli.main`), plus one real subprocess."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ctguard.cli import main

LOGS = Path(__file__).parent.parent / "fixtures" / "logs"


def ctguard(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as ex:
        main(["diagnose", *args])
    out = capsys.readouterr()
    return int(ex.value.code or 0), out.out, out.err


def test_real_entry_point_json_and_crit_exit(tmp_path: Path) -> None:
    html = tmp_path / "report.html"
    out = subprocess.run([sys.executable, "-c", "from ctguard.cli import main; main()", "diagnose", "--json",
                          "--year", "2014", str(LOGS / "incident-2014"), "--html", str(html)],
                         capture_output=True, timeout=120, check=False)
    assert out.returncode == 2, out.stderr
    doc = json.loads(out.stdout)
    assert doc["schema"] == 1 and doc["verdict"] == "CRIT"
    # "fault 0: Success" is not looked at: the "fault on lossy channel" line after it carries the signal
    assert doc["lines"] == {"read": 7, "matched": 6, "skipped": 0, "ignored": 1, "duplicates": 0}
    (inc,) = doc["incidents"]
    for key in ("start", "end", "hosts", "drops", "suppressed", "restarted", "marked_down", "cause"):
        assert key in inc
    assert inc["hosts"] == ["cartman06"] and inc["drops"] == 1 and isinstance(inc["cause"], str)
    page = html.read_text()
    assert "data:image/png;base64," in page and "fault on lossy channel" in page
    assert out.stderr == b""


def test_text_report_warn_and_ok_exits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, text, _ = ctguard(capsys, str(LOGS / "pacific-1host"))
    assert rc == 1 and text.startswith("WARN") and "no-kernel-log" in text
    assert "ceph.log:11: 2026-11-26T06:08:44.275999+0000 mon.a (mon.0) 42 : cluster [INF] osd.2 failed" in text
    quiet = tmp_path / "syslog"
    quiet.write_text("Nov 26 06:00:00 h CRON[1]: (root) CMD (true)\n")
    rc, out, _ = ctguard(capsys, "--json", str(quiet))
    assert rc == 0 and json.loads(out)["incidents"] == []


def test_stdin_gzip_and_host_assignment(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    data = gzip.compress((LOGS / "incident-2014" / "osd-172.22.4.42-6802.log").read_bytes())

    def stdin() -> object:
        class Stdin:
            buffer = io.BufferedReader(io.BytesIO(data))  # type: ignore[arg-type]

            @staticmethod
            def isatty() -> bool:
                return False

        return Stdin

    monkeypatch.setattr("sys.stdin", stdin())
    rc, out, _ = ctguard(capsys, "--json", "--year", "2014", "stor1=-")
    assert rc == 0 and json.loads(out)["incidents"] == []  # 2 lossy faults are no storm
    monkeypatch.setattr("sys.stdin", stdin())
    rc, out, _ = ctguard(capsys, "--json", "--year", "2014", "--storm", "2")  # no INPUTS and a pipe: stdin
    doc = json.loads(out)
    assert rc == 1 and doc["incidents"][0]["cause_kind"] == "no-kernel-log"
    assert doc["inputs"][0]["compression"] == "gzip" and doc["inputs"][0]["source"] == "-"


def test_bad_input_is_one_line_exit_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for args in (["--tz", "Mars/Olympus", str(tmp_path)], [str(tmp_path / "missing.log")], [str(tmp_path)],
                 ["--boot-time", "yesterday", str(tmp_path)], ["--year", "99", str(tmp_path)]):
        rc, _, err = ctguard(capsys, *args)
        assert rc == 3, (args, err)
        assert err.startswith("ctguard: ") and err.count("\n") == 1 and "Traceback" not in err


def test_binary_garbage_never_crashes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "junk.bin"
    p.write_bytes(bytes(range(256)) * 4000 + b"\n\xff\xfe table full \x00\n")
    rc, out, _ = ctguard(capsys, "--json", str(p))
    assert rc == 0
    doc = json.loads(out)
    assert doc["lines"]["skipped"] >= 1 and doc["incidents"] == []


def test_boot_time_option() -> None:
    from ctguard.cli.diagnose import _boot_time
    from ctguard.errors import BadInput

    assert _boot_time("2026-11-26T06:00:00Z") == 1795672800.0
    assert _boot_time("2026-11-26T08:00:00+02:00") == 1795672800.0
    assert _boot_time(None) is None
    with pytest.raises(BadInput):
        _boot_time("yesterday")
