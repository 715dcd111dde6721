"""ceph-mgr module `ctguard`: conntrack trouble of the OSD hosts in Ceph's own health.

    ceph mgr module enable ctguard
    ceph config set mgr mgr/ctguard/exporter_url 'http://{addr}:9477/metrics'
    ceph health detail                       # CTGUARD_CONNTRACK_NEARFULL / _DROPS / CTGUARD_EXPORTER_DOWN
    ceph ctguard status [-f json]
    ceph ctguard ok-to-restart osd.3 [osd.4 ...]     # rc 0 yes, -EBUSY (16) no, JSON on stdout

serve() polls every host's `ctguard exporter` (or Prometheus) each `interval` seconds in worker threads with
timeouts (core.Poller) and sets the health checks; commands answer from the latest readings and never fetch,
so a slow or dead exporter costs one health detail, never a stalled mgr command. The conventions (Option,
CLIReadCommand, HandleCommandResult, an Event that shutdown() sets) follow Pacific's own modules in
/usr/share/ceph/mgr (telegraf, zabbix, influx, prometheus).
"""

import errno
import json
import threading
import time
import urllib.parse
from typing import Any, Dict, List, Optional

from mgr_module import CLIReadCommand, HandleCommandResult, MgrModule, Option

from . import core


class Module(MgrModule):
    MODULE_OPTIONS = [
        Option("exporter_url", type="str", default="http://{addr}:9477/metrics",
               desc="URL template of each OSD host's `ctguard exporter`",
               long_desc="{host}: the CRUSH host name; {addr}: the host's entry in host_addresses, else the "
                         "public address of one of its OSDs from the OSD map.", runtime=True),
        Option("host_addresses", type="str", default="",
               desc="host=address pairs (comma separated) or a JSON object, for {addr}", runtime=True),
        Option("prometheus_url", type="str", default="",
               desc="read the hosts' ctguard metrics from this Prometheus (http://prom:9090) instead",
               runtime=True),
        Option("prometheus_selector", type="str", default='instance=~"{host}(:[0-9]+)?"',
               desc="label matchers that pick one host's series in Prometheus ({host}, {addr})", runtime=True),
        Option("interval", type="secs", default=10, min=1, desc="seconds between two readings of every host",
               runtime=True),
        Option("timeout", type="float", default=3.0, min=0.1, desc="seconds per fetch (connect and read)",
               runtime=True),
        Option("nearfull_ratio", type="float", default=0.9, min=0.0, max=1.0,
               desc="CTGUARD_CONNTRACK_NEARFULL when entries/limit reaches this", runtime=True),
        Option("drops_window", type="secs", default=300, min=1,
               desc="CTGUARD_CONNTRACK_DROPS while the drop counter rose within this many seconds",
               runtime=True),
        Option("burst_factor", type="float", default=2.0, min=1.0,
               desc="predicted restart burst of an OSD = its conntrack entries x this", runtime=True),
        Option("reserve", type="int", default=0, min=0,
               desc="entries kept free beyond the predicted burst (0: max(16, limit/10000))", runtime=True),
    ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.event = threading.Event()
        self.run = True
        self.fetcher = core.KeepAliveFetcher()
        self.poller = core.Poller(self.fetcher)
        self.settings = core.Settings()
        self.config_error = ""
        self.last_cycle = 0.0

    # -- options ----------------------------------------------------------------------------------------------
    def _opt(self, name: str) -> Any:
        return self.get_module_option(name)

    def _settings(self) -> core.Settings:
        interval = float(self._opt("interval") or 10)
        timeout = float(self._opt("timeout") or 3.0)
        return core.Settings(nearfull_ratio=float(self._opt("nearfull_ratio")),
                             drops_window=float(self._opt("drops_window") or 300),
                             burst_factor=float(self._opt("burst_factor") or 2.0),
                             reserve=int(self._opt("reserve") or 0),
                             stale_after=3 * interval + 2 * timeout)

    def config_notify(self) -> None:
        self.event.set()  # re-read the options and poll now

    # -- the loop ---------------------------------------------------------------------------------------------
    def _hosts(self) -> List[core.Host]:
        return core.hosts_from_maps(self.get("osd_map_tree"), self.get("osd_map"))

    def _urls(self, hosts: List[core.Host]) -> Dict[str, str]:
        prom = str(self._opt("prometheus_url") or "").strip()
        if prom:
            sel = str(self._opt("prometheus_selector"))
            return {h.name: prom.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode(
                {"query": core.prometheus_query(h, sel)}) for h in hosts}
        template = str(self._opt("exporter_url"))
        addresses = core.parse_address_map(str(self._opt("host_addresses") or ""))
        return {h.name: core.exporter_url(template, h, addresses) for h in hosts}

    def cycle(self) -> None:
        self.settings = s = self._settings()
        timeout = float(self._opt("timeout") or 3.0)
        try:
            hosts = self._hosts()
            urls = self._urls(hosts)
            self.config_error = ""
        except ValueError as e:
            self.config_error = str(e)
            self.log.error("ctguard: %s", e)
            self.set_health_checks({"CTGUARD_CONFIG_INVALID": {
                "severity": "warning", "summary": "ctguard mgr module: bad option", "count": 1,
                "detail": [str(e)]}})
            return
        prom = bool(str(self._opt("prometheus_url") or "").strip())
        # a whole cycle is bounded: a fetch still running after 2 timeouts counts as unreachable
        self.poller.poll(hosts, urls, timeout, 2 * timeout + 0.5, s.drops_window, prometheus=prom)
        self.last_cycle = time.time()
        checks = self.poller.consistent(lambda states: core.health_checks(states, s, self.last_cycle))
        self.set_health_checks(checks)

    def serve(self) -> None:
        self.log.info("ctguard: starting")
        while self.run:
            try:
                self.cycle()
            except Exception as e:  # noqa: BLE001 - the loop must survive anything one cycle throws
                self.log.exception("ctguard: cycle failed: %s", e)
            self.event.wait(float(self._opt("interval") or 10))
            self.event.clear()
        self.fetcher.close()

    def shutdown(self) -> None:
        self.log.info("ctguard: stopping")
        self.run = False
        self.event.set()

    # -- commands (answered from the latest readings: never a fetch here) -------------------------------------
    @CLIReadCommand("ctguard status")
    def status(self, format: Optional[str] = None) -> HandleCommandResult:
        """Conntrack table of each OSD host: count, max, free, TIME_WAIT, drops, predicted restart burst"""
        s = self.settings
        doc = self.poller.consistent(lambda states: core.status_doc(states, s, time.time()))
        if self.config_error:
            doc["config_error"] = self.config_error
        if format in ("json", "json-pretty"):
            return HandleCommandResult(stdout=json.dumps(doc, indent=2 if format == "json-pretty" else None))
        return HandleCommandResult(stdout=core.status_text(doc))

    @CLIReadCommand("ctguard ok-to-restart")
    def ok_to_restart(self, ids: List[str]) -> HandleCommandResult:
        """Whether the OSDs' hosts have conntrack room for their restart burst (like osd ok-to-stop)"""
        osd_map = self.get("osd_map")
        known = {int(o["osd"]) for o in osd_map.get("osds", [])}
        try:
            osds = core.parse_osd_names(ids, known)
        except ValueError as e:
            return HandleCommandResult(retval=-errno.ENOENT if "does not exist" in str(e) else -errno.EINVAL,
                                       stderr=str(e))
        osd_host = {}  # type: Dict[int, str]
        for h in self._hosts():
            for o in h.osds:
                osd_host[o] = h.name
        missing = [o for o in osds if o not in osd_host]
        if missing:
            return HandleCommandResult(retval=-errno.ENOENT,
                                       stderr="osd.{} is in no CRUSH host".format(missing[0]))
        s = self.settings
        ok, doc = self.poller.consistent(lambda states: core.ok_to_restart(states, osd_host, osds, s, time.time()))
        out = json.dumps(doc)
        if ok:
            return HandleCommandResult(stdout=out)
        return HandleCommandResult(retval=-errno.EBUSY, stdout=out,
                                   stderr="unsafe to restart osd(s) at this time ({})".format(doc.get("reason")))
