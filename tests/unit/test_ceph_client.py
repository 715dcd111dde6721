"""Parsers against the real Ceph 16.2.15 output captured in the lab, and the client's runner contract."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence

import pytest

from ctguard.ceph.client import CephClient
from ctguard.ceph.parse import (
    PgSummary,
    parse_ok_to_stop,
    parse_osd_dump,
    parse_osd_tree,
    parse_pg_stat,
    parse_status,
)
from ctguard.errors import CannotRead, CommandFailed
from ctguard.runner import Completed

HERE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "ceph")


def fixture(name: str) -> str:
    with open(os.path.join(HERE, name)) as f:
        return f.read()


def test_osd_dump_real_shape() -> None:
    d = parse_osd_dump(fixture("osd_dump.json"))
    assert len(d.osds) == 12 and d.epoch > 0
    o = d.osd(0)
    assert o.up and o.in_ and o.up_from == 29
    assert "sortbitwise" in d.flags and "noout" not in d.flags
    with pytest.raises(CannotRead, match="osd.99 is not in the OSD map"):
        d.osd(99)


def test_osd_dump_flags_with_noout() -> None:
    doc = json.loads(fixture("osd_dump.json"))
    doc["flags"] = "noout," + doc["flags"]
    doc["flags_set"] = ["noout", *doc["flags_set"]]
    assert "noout" in parse_osd_dump(json.dumps(doc)).flags


def test_pg_stat_uses_name_num_and_status_uses_state_name_count() -> None:
    p = parse_pg_stat(fixture("pg_stat.json"))
    assert p.states == {"active+clean": 65} and p.num_pgs == 65 and p.all_clean and p.all_active
    s = parse_status(fixture("status.json"))
    assert s.pgs.states == {"active+clean": 65} and s.health == "HEALTH_OK"
    assert s.num_osds == 12 and s.num_up_osds == 12
    # the two shapes are not interchangeable
    with pytest.raises(CannotRead):
        parse_status(fixture("pg_stat.json"))


@pytest.mark.parametrize("states,active", [
    ({"active+clean": 60, "active+undersized+degraded": 5}, True),
    ({"active+clean": 60, "peering": 5}, False),
    ({"active+clean": 60, "down": 5}, False),
    ({"active+clean": 60, "unknown": 5}, False),
    ({"active+clean": 60, "stale+active+clean": 5}, False),
    ({"active+clean": 60, "undersized+peered": 5}, False),
    ({"active+clean": 60, "activating+degraded": 5}, False),
    ({"active+clean": 60}, False),  # 5 of 65 PGs unaccounted for: unknown
])
def test_pg_activity(states: dict[str, int], active: bool) -> None:
    assert PgSummary(states, 65, "pg stat").all_active is active


def test_ok_to_stop_yes_and_ebusy_shapes() -> None:
    yes = parse_ok_to_stop('{"ok_to_stop":true,"osds":[0,1,2,3],"num_ok_pgs":65,"num_not_ok_pgs":0,'
                           '"ok_become_degraded":["1.0","2.0"]}', "", 0)
    assert yes.ok and yes.osds == (0, 1, 2, 3)
    no = parse_ok_to_stop('{"ok_to_stop":false,"osds":[0,4],"num_ok_pgs":22,"num_not_ok_pgs":6,'
                          '"bad_become_inactive":["1.1","1.2","1.3","1.4","1.5","1.6"],"ok_become_degraded":[]}',
                          "Error EBUSY: unsafe to stop osd(s) at this time (6 PGs are or would become offline)\n",
                          16)
    assert not no.ok and len(no.bad_become_inactive) == 6 and no.reason.startswith("Error EBUSY")
    with pytest.raises(CannotRead, match="no JSON on stdout"):
        parse_ok_to_stop("", "Error ETIMEDOUT: no mgr\n", 110)


def test_osd_tree_hosts() -> None:
    tree = parse_osd_tree(json.dumps({"nodes": [
        {"id": -1, "name": "default", "type": "root", "children": [-3, -5]},
        {"id": -3, "name": "cl-h1", "type": "host", "children": [1, 0]},
        {"id": 0, "name": "osd.0", "type": "osd"}, {"id": 1, "name": "osd.1", "type": "osd"},
        {"id": -5, "name": "cl-h2", "type": "host", "children": [2]},
        {"id": 2, "name": "osd.2", "type": "osd"}], "stray": []}))
    assert tree.hosts == {"cl-h1": (0, 1), "cl-h2": (2,)} and tree.host_of(2) == "cl-h2"


def test_garbage_is_cannot_read() -> None:
    with pytest.raises(CannotRead, match="ceph osd dump: not JSON"):
        parse_osd_dump("Error: something\n")
    with pytest.raises(CannotRead, match="unexpected shape"):
        parse_pg_stat('{"pg_summary": {}}')


class Rec:
    def __init__(self, out: Completed) -> None:
        self.out = out
        self.argv: list[str] = []
        self.timeout = 0.0

    def __call__(self, argv: Sequence[str], *, timeout: float, input: str | None = None, check: bool = False,
                 env: Mapping[str, str] | None = None) -> Completed:
        self.argv, self.timeout = list(argv), timeout
        return self.out


def test_client_argv_prefix_timeout_and_noout_on_stderr() -> None:
    rec = Rec(Completed((), 0, "", "noout is set\n"))
    c = CephClient(["ip", "netns", "exec", "cl-mon", "ceph", "-c", "/x/ceph.conf"], timeout=7, run=rec)
    c.set_flag("noout")
    assert rec.argv == ["ip", "netns", "exec", "cl-mon", "ceph", "-c", "/x/ceph.conf", "--connect-timeout", "7",
                        "osd", "set", "noout"]
    assert rec.timeout == 7
    rec.out = Completed((), 0, fixture("pg_stat.json"), "")
    c.pg_stat()
    assert rec.argv[-4:] == ["pg", "stat", "-f", "json"]


def test_client_ok_to_stop_rc16_is_an_answer_other_rc_an_error() -> None:
    rec = Rec(Completed((), 16, '{"ok_to_stop":false,"osds":[0]}', "Error EBUSY: unsafe\n"))
    c = CephClient(run=rec)
    assert not c.ok_to_stop([0], max_osds=4).ok
    assert rec.argv[-6:] == ["ok-to-stop", "0", "--max", "4", "-f", "json"]
    rec.out = Completed((), 2, "", "Error ENOENT: osd.9 does not exist\n")
    with pytest.raises(CommandFailed, match="ENOENT"):
        c.ok_to_stop([9])


def test_client_call_that_hangs_past_its_timeout_fails_cleanly() -> None:
    # a stand-in `ceph` that never answers: the real runner kills it at the timeout
    c = CephClient([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5)
    with pytest.raises(CommandFailed, match="no answer within 0.5 s"):
        c.pg_stat()
