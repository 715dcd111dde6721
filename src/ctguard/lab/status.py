"""`lab status`: health, OSDs up/in per host, PG states and each host's conntrack table, as one document."""

from __future__ import annotations

from typing import Any

from ctguard.errors import CtguardError
from ctguard.kernel.settings import conntrack_settings
from ctguard.kernel.stats import conntrack_stats
from ctguard.lab import procs
from ctguard.lab.cluster import Lab


def lab_status(lab: Lab) -> dict[str, Any]:
    doc: dict[str, Any] = {"prefix": lab.prefix, "dir": lab.dir, "conf": lab.conf, "store": lab.state.store,
                           "health": None, "pg_states": {}, "num_pgs": 0, "hosts": [], "clients": [],
                           "errors": []}
    up_in: dict[int, tuple[bool, bool]] = {}
    try:
        s = lab.ceph_json(["-s"], timeout=15)
        doc["health"] = s.get("health", {}).get("status")
        doc["health_checks"] = sorted(s.get("health", {}).get("checks", {}))
        pgmap = s.get("pgmap", {})
        doc["num_pgs"] = int(pgmap.get("num_pgs", 0))
        doc["pg_states"] = {str(x["state_name"]): int(x["count"]) for x in pgmap.get("pgs_by_state", [])}
        dump = lab.ceph_json(["osd", "dump"], timeout=15)
        for o in dump.get("osds", []):
            up_in[int(o["osd"])] = (bool(o.get("up")), bool(o.get("in")))
    except CtguardError as e:
        doc["errors"].append(e.message)
    for h in lab.hosts:
        entry: dict[str, Any] = {"host": h, "osds": []}
        for i in lab.osd_ids(h):
            up, inn = up_in.get(i, (False, False))
            entry["osds"].append({"id": i, "up": up, "in": inn, "pid": lab.osd_pid(i)})
        try:
            ns = lab.host_netns(h)
            cs = conntrack_settings(ns)
            st = conntrack_stats(ns)
            entry["conntrack"] = {"count": cs.count, "max": cs.max, "drop": st.get("drop"),
                                  "early_drop": st.get("early_drop")}
        except CtguardError as e:
            entry["conntrack"] = None
            doc["errors"].append(f"{h}: {e.message}")
        doc["hosts"].append(entry)
    for name, pid in sorted(lab.state.daemons.items()):
        if name.startswith("client."):
            doc["clients"].append({"name": name, "pid": pid, "alive": procs.alive(pid)})
    # the ctguard mgr module's view: its CTGUARD_* health checks, and the exporters it reads
    from ctguard.lab import mgrmod

    doc["exporters"] = [{"host": h, "pid": mgrmod.exporter_pid(lab, h)} for h in lab.hosts]
    try:
        doc["mgr_checks"] = mgrmod.checks(lab)
    except CtguardError as e:
        doc["mgr_checks"] = None
        doc["errors"].append(f"ctguard mgr module: {e.message}")
    return doc
