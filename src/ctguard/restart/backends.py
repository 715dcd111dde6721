"""How an OSD is restarted: systemd, cephadm, a command template, or the lab's plain processes.

`restart(osd, host, on_stopped)` returns once the new daemon has been started (not once it is up in the OSD
map: the engine checks that through Ceph). `on_stopped` is called between the stop and the start where the
backend can tell them apart, so the event stream and the journal show both.
"""

from __future__ import annotations

import shlex
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ctguard import runner
from ctguard.ceph.client import CephClient
from ctguard.errors import BadInput, CommandFailed
from ctguard.runner import Runner


class Backend(Protocol):
    name: str

    def restart(self, osd: int, host: str, on_stopped: Callable[[], None]) -> None: ...

    def describe(self, osd: int, host: str) -> str: ...


@dataclass
class SystemdBackend:
    """`systemctl restart ceph-osd@N` on this host (package-based deployments)."""

    timeout: float = 300.0
    run: Runner = field(default=runner.run)
    name: str = "systemd"

    def argv(self, osd: int) -> list[str]:
        return ["systemctl", "restart", f"ceph-osd@{osd}"]

    def describe(self, osd: int, host: str) -> str:
        return " ".join(self.argv(osd))

    def restart(self, osd: int, host: str, on_stopped: Callable[[], None]) -> None:
        on_stopped()  # systemctl restart = stop + start in one job
        self.run(self.argv(osd), timeout=self.timeout, check=True)


@dataclass
class CephadmBackend:
    """`ceph orch daemon restart osd.N` through the orchestrator (works from any admin host)."""

    ceph: CephClient
    name: str = "cephadm"

    def describe(self, osd: int, host: str) -> str:
        return f"ceph orch daemon restart osd.{osd}"

    def restart(self, osd: int, host: str, on_stopped: Callable[[], None]) -> None:
        on_stopped()
        self.ceph.orch_daemon_restart(f"osd.{osd}")


@dataclass
class TemplateBackend:
    """A command template split like a shell would (never run by one): `{id}` and `{host}` are substituted
    in each argument, e.g. `ssh {host} systemctl restart ceph-osd@{id}`."""

    template: str
    timeout: float = 300.0
    run: Runner = field(default=runner.run)
    name: str = "cmd"

    def __post_init__(self) -> None:
        try:
            parts = shlex.split(self.template)
        except ValueError as e:
            raise BadInput(f"--restart-cmd: {e}") from e
        if not parts or not any("{id}" in p for p in parts):
            raise BadInput("--restart-cmd must contain {id} (e.g. 'systemctl restart ceph-osd@{id}')")
        self._parts = parts

    def argv(self, osd: int, host: str) -> list[str]:
        try:
            return [p.format(id=osd, host=host) for p in self._parts]
        except (KeyError, IndexError, ValueError) as e:
            raise BadInput(f"--restart-cmd: bad placeholder ({e}); use {{id}} and {{host}}") from e

    def describe(self, osd: int, host: str) -> str:
        return shlex.join(self.argv(osd, host))

    def restart(self, osd: int, host: str, on_stopped: Callable[[], None]) -> None:
        on_stopped()
        self.run(self.argv(osd, host), timeout=self.timeout, check=True)


class LabApi(Protocol):
    def stop_osd(self, osd_id: int, sig: int = ...) -> Any: ...
    def start_osd(self, osd_id: int) -> Any: ...
    def osd_pid(self, osd_id: int) -> int | None: ...


@dataclass
class LabBackend:
    """The lab's OSDs are plain processes (ctguard.lab.cluster.Lab): SIGTERM, wait for the process to be
    gone, start it again in its host namespace."""

    lab: LabApi
    stop_timeout: float = 60.0
    sig: int = signal.SIGTERM
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    name: str = "lab"

    def describe(self, osd: int, host: str) -> str:
        return f"lab: stop osd.{osd} ({signal.Signals(self.sig).name}), start it again in {host}"

    def restart(self, osd: int, host: str, on_stopped: Callable[[], None]) -> None:
        if self.lab.osd_pid(osd) is not None:
            self.lab.stop_osd(osd, self.sig)
            deadline = self.clock() + self.stop_timeout
            while self.lab.osd_pid(osd) is not None:
                if self.clock() > deadline:
                    raise CommandFailed(f"osd.{osd} did not exit within {self.stop_timeout:g} s of "
                                        f"{signal.Signals(self.sig).name}")
                self.sleep(0.1)
        on_stopped()
        self.lab.start_osd(osd)


def make_backend(kind: str, *, ceph: CephClient, template: str | None = None, lab: LabApi | None = None,
                 timeout: float = 300.0) -> Backend:
    if kind == "systemd":
        return SystemdBackend(timeout=timeout)
    if kind == "cephadm":
        return CephadmBackend(ceph)
    if kind == "cmd":
        if not template:
            raise BadInput("--backend cmd needs --restart-cmd TEMPLATE")
        return TemplateBackend(template, timeout=timeout)
    if kind == "lab":
        if lab is None:
            raise BadInput("--backend lab needs --lab PREFIX")
        return LabBackend(lab)
    raise BadInput(f"unknown backend {kind!r} (systemd, cephadm, cmd, lab)")


def backend_names() -> Sequence[str]:
    return ("systemd", "cephadm", "cmd", "lab")
