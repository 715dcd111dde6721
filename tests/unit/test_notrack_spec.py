"""Validation of ports, ranges and CIDRs for `ctguard notrack`: one clear BadInput, never a partial spec."""

from __future__ import annotations

import ipaddress

import pytest

from ctguard.errors import BadInput
from ctguard.firewall.spec import (
    PortRange,
    build_spec,
    merge_ranges,
    parse_network,
    parse_port_list,
    parse_range,
)


@pytest.mark.parametrize("text, lo, hi", [("6800-7568", 6800, 7568), ("6800:7568", 6800, 7568),
                                           (" 9477 ", 9477, 9477), ("1-65535", 1, 65535)])
def test_parse_range_ok(text: str, lo: int, hi: int) -> None:
    assert parse_range(text) == PortRange(lo, hi)


@pytest.mark.parametrize("text, msg", [("7568-6800", "above end"), ("0-10", "out of range"),
                                       ("6800-65536", "out of range"), ("abc", "expected a number"),
                                       ("-5", "expected a number"), ("", "expected a number")])
def test_parse_range_bad(text: str, msg: str) -> None:
    with pytest.raises(BadInput, match=msg):
        parse_range(text, "--osd-range")


def test_port_list() -> None:
    assert parse_port_list("6789, 3300,3300") == (3300, 6789)
    with pytest.raises(BadInput, match="out of range"):
        parse_port_list("3300,70000")
    with pytest.raises(BadInput, match="empty"):
        parse_port_list(",")


@pytest.mark.parametrize("text", ["10.0.0.0/8", "198.18.0.0/24", "fd00::/64", "2001:db8::/32", "10.1.2.3/32"])
def test_parse_network_ok(text: str) -> None:
    assert str(parse_network(text)) == text


@pytest.mark.parametrize("text, msg", [
    ("10.0.0.1/8", r"host bits set \(did you mean 10.0.0.0/8\?\)"),
    ("fd00::1/64", r"host bits set \(did you mean fd00::/64\?\)"),
    ("10.0.0.0/33", "not an IPv4 or IPv6 CIDR"),
    ("10.0.0.256/24", "not an IPv4 or IPv6 CIDR"),
    ("ceph-public", "not an IPv4 or IPv6 CIDR"),
    ("0.0.0.0/0", "refusing"),
    ("::/0", "refusing"),
])
def test_parse_network_bad(text: str, msg: str) -> None:
    with pytest.raises(BadInput, match=msg):
        parse_network(text, "--network")


def test_build_spec_defaults_and_merging() -> None:
    s = build_spec(["10.2.0.0/24", "10.1.0.0/16", "10.1.5.0/24", "fd00:1::/64"])
    # nested network dropped (nft interval sets refuse overlapping elements), v4 and v6 both kept
    assert s.networks == (ipaddress.ip_network("10.1.0.0/16"), ipaddress.ip_network("10.2.0.0/24"),
                          ipaddress.ip_network("fd00:1::/64"))
    assert [str(r) for r in s.ceph_ports] == ["3300", "6789", "6800-7568"]
    s = build_spec(["10.0.0.0/8"], mon_ports=[6800, 3300], osd_range="6800-7300")
    assert [str(r) for r in s.ceph_ports] == ["3300", "6800-7300"]


def test_build_spec_osd_range_from_cluster_tuple() -> None:
    assert build_spec(["10.0.0.0/8"], osd_range=(6800, 7300)).osd_range == PortRange(6800, 7300)
    with pytest.raises(BadInput, match="ms_bind_port_min 7300 is above ms_bind_port_max 6800"):
        build_spec(["10.0.0.0/8"], osd_range=(7300, 6800))


@pytest.mark.parametrize("kw, msg", [
    ({"networks": []}, "no network given"),
    ({"networks": ["10.0.0.0/8"], "extra_ports": ["9477"]}, "--extra-port needs --extra-from"),
    ({"networks": ["10.0.0.0/8"], "extra_from": ["10.9.0.0/24"]}, "--extra-from needs at least one"),
    ({"networks": ["10.0.0.0/8"], "extra_ports": ["99999"], "extra_from": ["10.9.0.0/24"]}, "out of range"),
    ({"networks": ["10.0.0.0/8"], "extra_ports": ["9477"], "extra_from": ["10.9.0.1/24"]}, "host bits"),
    ({"networks": ["10.0.0.0/8"], "mon_ports": ["0"]}, "out of range"),
])
def test_build_spec_errors(kw: dict[str, object], msg: str) -> None:
    with pytest.raises(BadInput, match=msg):
        build_spec(**kw)  # type: ignore[arg-type]


def test_merge_ranges() -> None:
    got = merge_ranges([PortRange(7000, 7100), PortRange(6800, 7000), PortRange(7101, 7101), PortRange(3300, 3300)])
    assert got == (PortRange(3300, 3300), PortRange(6800, 7101))
