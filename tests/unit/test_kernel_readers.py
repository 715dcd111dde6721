"""Settings, counters and socket tables from checked-in fake /proc trees of several kernels."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ctguard.errors import CannotRead
from ctguard.kernel.settings import conntrack_settings
from ctguard.kernel.sockets import daemon_name, parse_fib_trie, parse_proc_net, socket_table
from ctguard.kernel.stats import parse_proc_stat, proc_stats

PROC = os.path.join(os.path.dirname(__file__), "..", "fixtures", "proc")


def root(name: str) -> str:
    return os.path.join(PROC, name)


def test_settings_618() -> None:
    s = conntrack_settings(proc_root=root("linux-6.18"), sys_root="/nonexistent")
    assert (s.count, s.max, s.buckets, s.hashsize) == (200000, 262144, 262144, None)
    assert s.timeouts["tcp_timeout_time_wait"] == 120
    assert s.timeouts["tcp_timeout_established"] == 432000
    assert "tcp_loose" not in s.timeouts
    assert s.free == 62144 and abs(s.fill - 200000 / 262144) < 1e-9


@pytest.mark.parametrize(
    ("tree", "entries", "drop", "early", "invalid", "cpus"),
    [
        ("linux-6.18", 200000, 2027 + 160027, 400027, 12, 2),
        ("linux-4.19", 5500, 10, 3, 10, 4),
        ("linux-3.10", 64000, 123, 0, 0, 2),
    ],
)
def test_proc_stats_sum_cpus_but_not_entries(tree: str, entries: int, drop: int, early: int, invalid: int,
                                             cpus: int) -> None:
    st_ = proc_stats(proc_root=root(tree))
    assert st_.source == "procfs" and st_.cpus == cpus
    assert st_.entries == entries  # repeated on every row: taken once
    assert st_.get("drop") == drop and st_.get("early_drop") == early and st_.get("invalid") == invalid


def test_618_columns() -> None:
    st_ = proc_stats(proc_root=root("linux-6.18"))
    assert st_.get("clash_resolve") == 3 and st_.get("search_restart") == 7 and st_.get("insert_failed") == 1


@pytest.mark.parametrize("tree", ["no-conntrack", "no-procfs-stat", "garbled-stat", "does-not-exist"])
def test_missing_or_garbled_is_cannot_read(tree: str) -> None:
    with pytest.raises(CannotRead):
        conntrack_settings(proc_root=root(tree), sys_root="/nonexistent")
        proc_stats(proc_root=root(tree))


def test_no_conntrack_message() -> None:
    with pytest.raises(CannotRead, match="not loaded"):
        conntrack_settings(proc_root=root("no-conntrack"))


@given(st.text(max_size=400))
def test_proc_stat_parser_never_crashes(text: str) -> None:
    try:
        parse_proc_stat(text)
    except CannotRead:
        pass


@given(st.lists(st.lists(st.integers(0, 2**32 - 1), min_size=3, max_size=3), min_size=1, max_size=8))
def test_proc_stat_sums(rows: list[list[int]]) -> None:
    text = "entries drop early_drop\n" + "\n".join(" ".join(f"{v:08x}" for v in r) for r in rows)
    s = parse_proc_stat(text)
    assert s.entries == rows[0][0]
    assert s.get("drop") == sum(r[1] for r in rows) and s.get("early_drop") == sum(r[2] for r in rows)


def test_proc_net_tcp() -> None:
    with open(os.path.join(root("linux-6.18"), "net", "tcp")) as f:
        socks = parse_proc_net(f.read(), "tcp")
    assert len(socks) == 4  # the garbage line is skipped
    listen = socks[0]
    assert listen.listening and listen.local == b"\0\0\0\0" and listen.lport == 6800 and listen.inode == 1001
    est = socks[1]
    assert est.local == bytes((198, 18, 0, 11)) and est.remote == bytes((198, 18, 0, 12)) and est.rport == 6801
    assert socks[2].state == 6 and socks[2].inode == 0  # TIME_WAIT: no owner


def test_proc_net_tcp6_v4_mapped() -> None:
    with open(os.path.join(root("linux-6.18"), "net", "tcp6")) as f:
        socks = parse_proc_net(f.read(), "tcp")
    assert socks[0].local == bytes((198, 18, 0, 11)) and socks[0].remote == bytes((198, 18, 0, 14))
    assert socks[1].local == bytes(15) + b"\x01" and socks[1].listening


@given(st.text(max_size=300))
def test_proc_net_parser_never_crashes(text: str) -> None:
    parse_proc_net(text, "tcp")


@pytest.mark.parametrize(
    ("cmdline", "name"),
    [
        (["ceph-osd", "-f", "-i", "3"], "osd.3"),
        (["/usr/bin/ceph-osd", "--id", "12", "--setuser", "ceph"], "osd.12"),
        (["ceph-osd", "--id=7"], "osd.7"),
        (["ceph-mon", "-n", "mon.a"], "mon.a"),
        (["ceph-mon", "--name=mon.b"], "mon.b"),
        (["ceph-mgr", "-i", "x"], "mgr.x"),
        (["ceph-mds", "--id", "fs1"], "mds.fs1"),
        (["ceph-osd"], "ceph-osd"),
        (["/usr/sbin/sshd", "-D"], "sshd"),
        ([], "comm"),
    ],
)
def test_daemon_name(cmdline: list[str], name: str) -> None:
    assert daemon_name(cmdline, "sshd" if cmdline[:1] == ["/usr/sbin/sshd"] else "comm") == name


def test_fib_trie_local_addresses() -> None:
    with open(os.path.join(root("linux-6.18"), "net", "fib_trie")) as f:
        assert parse_fib_trie(f.read()) == {bytes((127, 0, 0, 1)), bytes((198, 18, 0, 11))}


def test_socket_table_owners_from_fake_proc() -> None:
    t = socket_table(proc_root=root("linux-6.18"))
    names = {ino: p.name for ino, p in t.owners.items()}
    assert names == {1001: "osd.3", 1002: "osd.3", 1003: "osd.3", 2001: "python3", 1004: "python3"}
    assert t.owners[1001].pid == 4242
    assert bytes((198, 18, 0, 11)) in t.local_addrs
