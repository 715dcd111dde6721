"""`ctguard exporter` wired together: collector + 1 Hz sampler + breakdown refresher + HTTP/1.1 server."""

from __future__ import annotations

from dataclasses import dataclass

from ctguard.export import guard as _guard
from ctguard.export.breakdown import Refresher, Source, child_source
from ctguard.export.collector import DEFAULT_TOP_DAEMONS, ConntrackCollector, Sampler, build_registry
from ctguard.export.server import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_LISTEN,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_PER_SOURCE,
    DEFAULT_REQUEST_TIMEOUT,
    HttpCollector,
    MetricsServer,
)
from ctguard.export.trend import DEFAULT_BURST_FACTOR, SampleWindow
from ctguard.export.webconfig import WebConfig
from ctguard.kernel.netns import Netns
from ctguard.kernel.settings import conntrack_count


@dataclass(frozen=True)
class ExporterConfig:
    listen: str = DEFAULT_LISTEN
    breakdown_interval: float | None = 60.0  # None: no breakdown at all
    sample_interval: float = 1.0
    rate_window: float = 30.0
    burst_factor: float = DEFAULT_BURST_FACTOR
    top_daemons: int = DEFAULT_TOP_DAEMONS
    state_dir: str | None = None
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_per_source: int = DEFAULT_MAX_PER_SOURCE
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    web: WebConfig | None = None  # --web-config: TLS, basic auth (exporter-toolkit format)
    listen_in_target: bool = True  # make the listening socket inside the target namespace
    osd_range: str | None = None  # Ceph OSD port range for roles, e.g. "6800-7568"


class Exporter:
    def __init__(self, ns: Netns, config: ExporterConfig, proc_root: str = "/proc",
                 breakdown_source: Source | None = None) -> None:
        conntrack_count(ns, proc_root)  # fail early with one clear line if the table cannot be read
        self.ns = ns
        self.config = config
        self.refresher: Refresher | None = None
        if config.breakdown_interval is not None:
            src = breakdown_source if breakdown_source is not None else child_source(ns, config.osd_range)
            self.refresher = Refresher(src, config.breakdown_interval)
        guard_file = _guard.state_path(config.state_dir, ns) if config.state_dir else None
        self.collector = ConntrackCollector(
            ns, proc_root=proc_root, refresher=self.refresher, window=SampleWindow(config.rate_window),
            burst_factor=config.burst_factor, top_daemons=config.top_daemons, guard_state_file=guard_file)
        self.registry = build_registry(self.collector)
        self.sampler = Sampler(self.collector, config.sample_interval)
        self.server = MetricsServer(self.registry, config.listen, ns if config.listen_in_target else None,
                                    config.idle_timeout, config.max_connections, config.max_per_source,
                                    config.request_timeout, config.web)
        self.registry.register(HttpCollector(self.server))

    def start(self) -> None:
        self.sampler.start()
        if self.refresher is not None:
            self.refresher.start()
        self.server.start()

    def stop(self) -> None:
        self.server.stop()
        self.sampler.stop()
        if self.refresher is not None:
            self.refresher.stop()
