"""The measured connection inventory (issue 14): entries classified by role, the model built from them, the
breakdown that measures them, and the flags and scenario keys that describe a pool."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from ctguard.cli import cli
from ctguard.errors import BadInput
from ctguard.kernel.ctdump import Entry
from ctguard.kernel.sockets import SocketTable
from ctguard.model.breakdown import breakdown
from ctguard.model.ceph import Formula, host_conns, pool_width
from ctguard.model.inventory import Inventory, classify_entries
from ctguard.model.scenario import ClusterSpec, Scenario, from_mapping
from ctguard.model.table import TableConfig

MON, CLIENT, H1, H2, H3 = "198.18.0.1", "198.18.0.2", "198.18.0.11", "198.18.0.12", "198.18.0.13"


def _host_entries() -> list[list[object]]:
    """A host (H1) with every kind of entry, as the sweep records them."""
    e: list[list[object]] = []
    e += [["tcp", "ESTABLISHED", H1, H2, 40000 + i, 6800 + i] for i in range(7)]  # out to OSDs
    e += [["tcp", "ESTABLISHED", H3, H1, 41000 + i, 6802] for i in range(5)]  # in from OSDs
    e += [["tcp", "ESTABLISHED", H1, H1, 42000 + i, 6810] for i in range(3)]  # local OSD<->OSD
    e += [["tcp", "ESTABLISHED", CLIENT, H1, 43000 + i, 6804] for i in range(4)]  # client sessions
    e += [["tcp", "ESTABLISHED", H1, MON, 44000 + i, 3300] for i in range(2)]  # mon
    e += [["tcp", "ESTABLISHED", H1, MON, 44100, 6800]]  # mgr (an OSD-range port on the mon's address)
    e += [["tcp", "TIME_WAIT", H1, H2, 45000, 6801]]  # closing: does not churn
    e += [["tcp", "ESTABLISHED", H1, "10.0.0.5", 46000, 443], ["udp", "", H1, "10.0.0.53", 47000, 53]]
    e += [["tcp", "ESTABLISHED", H1, H2, 6806, 48000]]  # picked up mid-stream: H2 connected to our 6806
    return e


def test_classify_with_the_sweeps_addresses() -> None:
    inv = classify_entries(_host_entries(), [H1, "127.0.0.1"], mon_addrs=[MON], osd_host_addrs=[H2, H3],
                           client_addrs=[CLIENT])
    assert inv == Inventory(osd_out=7, osd_in=6, local=3, client=4, mon_mgr=3, other=2, transient=1)
    assert inv.ceph_open == 23 and inv.held == 3 and inv.total == len(_host_entries())


def test_classify_infers_mons_and_peers_from_the_entries() -> None:
    # no address hints (what `status --breakdown` has): the mon is what we reach on 3300, the OSD hosts what
    # we reach on OSD ports; H3 only connects in, so its 5 entries count as a client's (said in the docs)
    inv = classify_entries(_host_entries(), [H1])
    assert (inv.osd_out, inv.mon_mgr, inv.local, inv.other, inv.transient) == (7, 3, 3, 2, 1)
    assert inv.osd_in == 1 and inv.client == 9


def test_classify_bad_rows_are_one_line() -> None:
    with pytest.raises(BadInput, match=r"baseline_entries\[0\]"):
        classify_entries([["tcp", "ESTABLISHED", H1]], [H1])
    with pytest.raises(BadInput, match="bad address"):
        classify_entries([["tcp", "ESTABLISHED", "nope", H2, 1, 6800]], [H1])


def _entry(src: str, sport: int, dst: str, dport: int, state: int = 3) -> Entry:
    a, b = bytes(map(int, src.split("."))), bytes(map(int, dst.split(".")))
    return Entry(2, 6, a, b, sport, dport, b, a, dport, sport, 0x0E, state, 1, 0)


def test_breakdown_carries_the_inventory() -> None:
    rows = [_entry(str(r[2]), int(r[4]), str(r[3]), int(r[5]), 7 if r[1] == "TIME_WAIT" else 3)
            for r in _host_entries() if r[0] == "tcp"]
    b = breakdown([rows], SocketTable(local_addrs=frozenset({bytes((198, 18, 0, 11))})))
    assert b.inventory is not None
    assert (b.inventory.osd_out, b.inventory.mon_mgr, b.inventory.local, b.inventory.transient) == (7, 3, 3, 1)
    assert b.inventory.other == 1  # the TCP one (the UDP entry is not in this dump)
    assert b.inventory.total == b.total


def test_model_from_a_measured_inventory_is_the_measurement() -> None:
    inv = Inventory(osd_out=120, osd_in=110, local=16, client=5, mon_mgr=9, other=3000, transient=4)
    sc = Scenario(cluster=ClusterSpec(hosts=3, osds_per_host=5, pg_num=128, pool_size=3),
                  table=TableConfig(max=262144), inventory=inv, other_entries=inv.held)
    c = sc.conns()
    assert c.source == "measured" and c.baseline == pytest.approx(inv.ceph_open)
    assert c.osds * c.osd_osd_per_osd == pytest.approx(230) and c.local_conns == pytest.approx(16)
    assert c.clients * c.osds == pytest.approx(5)


def test_measured_below_the_formula_scales_the_mesh() -> None:
    # issue 14: 266 entries on a 3 x 5 host of a 128-PG size-3 pool: the formula needs more
    c = host_conns(3, 5, pgs_per_osd=128 * 3 / 15, pool_size=3, conn_per_host=200)
    assert c.source == "scaled" and c.baseline == pytest.approx(200) and c.clients == 0
    assert "scaled to the measurement" in c.note
    ok = host_conns(3, 5, pgs_per_osd=128 * 3 / 15, pool_size=3, conn_per_host=400)
    assert ok.source == "formula" and ok.clients > 0 and ok.note == ""


def test_pool_width_and_pg_num() -> None:
    assert pool_width(3) == 3 and pool_width(None, "4+2") == 6 and pool_width(2, "8+3") == 11
    for bad in ("4", "x+2", "0+1"):
        with pytest.raises(BadInput):
            pool_width(None, bad)
    spec = ClusterSpec(hosts=8, osds_per_host=4, pg_num=256, ec="4+2")
    assert spec.width == 6 and spec.replicas_per_osd == pytest.approx(256 * 6 / 32)
    sc = from_mapping({"cluster": {"hosts": 8, "osds_per_host": 4, "pg_num": 256, "ec": "4+2", "clients": 10,
                                   "client_rate": 3},
                       "table": {"max": 65536},
                       "inventory": {"osd_out": 100, "osd_in": 90, "local": 12, "client": 40, "mon_mgr": 8}})
    assert sc.cluster.width == 6 and sc.inventory is not None and sc.conns().source == "measured"
    with pytest.raises(BadInput, match="cannot be placed"):
        from_mapping({"cluster": {"hosts": 4, "ec": "4+2"}, "table": {"max": 65536}})
    with pytest.raises(BadInput, match="unknown role"):
        from_mapping({"table": {"max": 65536}, "inventory": {"osds": 3}})
    with pytest.raises(BadInput, match="whole number"):
        from_mapping({"cluster": {"pg_num": 12.5}, "table": {"max": 65536}})


def test_light_clients_loop_less_than_busy_ones() -> None:
    # the mechanism, with a loop that exists (fault_per_op 1); the fit across the sweep decides how strong
    # it is (ceph.FITTED)
    f = Formula(fault_per_op=1.0)
    base = Scenario(cluster=ClusterSpec(hosts=4, osds_per_host=3, pg_num=64, pool_size=2, clients=40,
                                        client_rate=3), table=TableConfig(max=262144), formula=f)
    busy = Scenario(cluster=ClusterSpec(hosts=4, osds_per_host=3, pg_num=64, pool_size=2, clients=40,
                                        client_rate=400), table=TableConfig(max=262144), formula=f)
    assert base.effective_behaviour().client_active_fraction > 0
    assert base.effective_behaviour().client_active_fraction < busy.effective_behaviour().client_active_fraction
    assert busy.effective_behaviour().client_active_fraction <= 1.0


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_cli_inventory_from_status_json(runner: CliRunner, tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "status.json")
    inv = {"osd_out": 98, "osd_in": 91, "local": 16, "client": 4, "mon_mgr": 8, "other": 50000, "transient": 2}
    with open(path, "w") as f:
        json.dump({"schema": 1, "breakdown": {"total": 50219, "inventory": inv}}, f)
    r = runner.invoke(cli, ["simulate", "--hosts", "3", "--osds-per-host", "4", "--pg-num", "64",
                            "--inventory", path, "--max", "262144", "--gc-phases", "1", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["host"]["source"] == "measured" and doc["baseline_entries"] == 217
    assert doc["other_entries"] == 50002
    r = runner.invoke(cli, ["simulate", "--inventory", path, "--conn-per-host", "300"])
    assert r.exit_code == 3 and "drop --conn-per-host" in r.output
    bad = os.path.join(str(tmp_path), "bad.json")
    with open(bad, "w") as f:
        json.dump({"schema": 1}, f)
    r = runner.invoke(cli, ["simulate", "--inventory", bad])
    assert r.exit_code == 3 and "no inventory" in r.output


def test_cli_pool_flags(runner: CliRunner) -> None:
    r = runner.invoke(cli, ["simulate", "--hosts", "8", "--osds-per-host", "4", "--ec", "4+2", "--pg-num", "256",
                            "--clients", "10", "--client-rate", "3", "--gc-phases", "1", "--json"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["simulate", "--pg-num", "64", "--pgs-per-osd", "30"])
    assert r.exit_code == 3 and "not both" in r.output
