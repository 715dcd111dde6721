"""`ctguard notrack show|check|apply|confirm|remove`: take Ceph's traffic out of conntrack."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import click

from ctguard.cli.common import (
    EXIT_CODES_HELP,
    handle_errors,
    json_option,
    netns_options,
    print_json,
    target_netns,
)
from ctguard.errors import BadInput, CtguardError, Exit
from ctguard.firewall import inspect as insp_mod
from ctguard.firewall import iptrules, journal, nftrules, transaction
from ctguard.firewall.cephcfg import read_ceph_values
from ctguard.firewall.spec import NotrackSpec, build_spec, parse_port_list
from ctguard.kernel.netns import Netns

SCHEMA = 1
F = TypeVar("F", bound=Callable[..., Any])


def spec_options(f: F) -> F:
    opts = [
        click.option("--network", "networks", multiple=True, metavar="CIDR",
                     help="Ceph public/cluster network (repeat; IPv4 or IPv6). Default: public_network and "
                          "cluster_network from `ceph config get`."),
        click.option("--mon-ports", default=None, metavar="LIST", help="Monitor ports (default 3300,6789)."),
        click.option("--osd-range", default=None, metavar="MIN-MAX",
                     help="Messenger port range (default: ms_bind_port_min..max from the cluster, else 6800-7568)."),
        click.option("--extra-port", "extra_ports", multiple=True, metavar="PORT[-PORT]",
                     help="Extra local server port to exempt, e.g. the exporter's 9477 (repeat)."),
        click.option("--extra-from", "extra_from", multiple=True, metavar="CIDR",
                     help="Clients allowed to reach the --extra-port ports (repeat)."),
        click.option("--no-ceph", is_flag=True, help="Do not ask the cluster for ports and networks."),
        click.option("--backend", type=click.Choice(["auto", *transaction.BACKENDS]), default="auto",
                     show_default=True, help="Rule backend; auto follows what manages the firewall."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def state_dir_option(f: F) -> F:
    return click.option("--state-dir", default=journal.DEFAULT_STATE_DIR, show_default=True,
                        help="Where the apply journal lives.")(f)


def _resolve_spec(networks: tuple[str, ...], mon_ports: str | None, osd_range: str | None,
                  extra_ports: tuple[str, ...], extra_from: tuple[str, ...], no_ceph: bool,
) -> tuple[NotrackSpec, dict[str, str]]:
    sources = {"networks": "flag" if networks else "", "osd_range": "flag" if osd_range else "defaults",
               "mon_ports": "flag" if mon_ports else "defaults"}
    nets = [n for item in networks for n in item.replace(' ', ',').split(',') if n]
    rng: str | tuple[int, int] | None = osd_range
    if not no_ceph and (not nets or osd_range is None):
        cv = read_ceph_values(want_networks=not nets)
        if cv.source == "cluster":
            if osd_range is None and cv.ms_bind_port_min and cv.ms_bind_port_max:
                rng = (cv.ms_bind_port_min, cv.ms_bind_port_max)
                sources["osd_range"] = "cluster"
            if not nets and cv.networks:
                nets = list(cv.networks)
                sources["networks"] = "cluster"
        else:
            sources["ceph"] = f"not reachable: {cv.error}"
    mons = parse_port_list(mon_ports, "--mon-ports") if mon_ports else None
    spec = build_spec(nets, mons, rng, extra_ports, extra_from)
    return spec, sources


def _backend(ns: Netns, backend: str) -> str:
    if backend != "auto":
        return backend
    try:
        insp = insp_mod.inspect(ns, "nft")
    except CtguardError:
        return "nft"
    if "nftables" not in insp.managers:
        if "iptables-legacy" in insp.managers:
            return "iptables-legacy"
        if "iptables-nft" in insp.managers:
            return "iptables-nft"
    return "nft"


def _common(f: F) -> F:
    f = state_dir_option(f)
    f = netns_options(f)
    f = json_option(f)
    return f


def _spec_from(kw: dict[str, Any]) -> tuple[NotrackSpec, dict[str, str]]:
    return _resolve_spec(kw.pop("networks"), kw.pop("mon_ports"), kw.pop("osd_range"), kw.pop("extra_ports"),
                         kw.pop("extra_from"), kw.pop("no_ceph"))


@click.group(help="Take Ceph's traffic (mon ports, messenger range) between the Ceph networks out of "
             "conntrack, with rollback like iptables-apply. See docs/notrack.md.\n\n" + EXIT_CODES_HELP)
def notrack() -> None:
    pass


@notrack.command(help="Print the rules (nft script, include file or iptables-restore text); changes nothing.\n\n"
                 + EXIT_CODES_HELP)
@spec_options
@click.option("--format", "fmt", type=click.Choice(["rules", "include"]), default="rules", show_default=True,
              help="`include`: an nftables file for configuration management.")
@_common
@handle_errors
def show(fmt: str, as_json: bool, netns_name: str | None, netns_pid: int | None, state_dir: str,
         backend: str, **kw: Any) -> None:
    ns = target_netns(netns_name, netns_pid)
    spec, sources = _spec_from(kw)
    be = backend if backend != "auto" else "nft"
    if fmt == "include":
        text = nftrules.include_file(spec)
        be = "nft"
    else:
        plan = transaction.make_plan(spec, be)
        text = plan.text()
    if as_json:
        print_json({"netns": ns.label, "backend": be, "spec": spec.to_json(), "sources": sources,
                    "rules": text, "operator_rule": nftrules.OPERATOR_RULE,
                    "state": transaction.state(ns, state_dir)}, SCHEMA)
    else:
        click.echo(text, nl=False)


LABEL = {"passes": "ok", "accepts-untracked": "ok", "drops-untracked": "DROPS", "review": "REVIEW"}


@notrack.command(help="Validate the rules with the real tool (nft -c / iptables-restore --test) and judge the "
                 "host's firewall: conflicts, and what your filter chains must accept.\n\n" + EXIT_CODES_HELP)
@spec_options
@click.option("--insert-accept", "insert_accept", multiple=True, metavar="'FAMILY TABLE CHAIN'",
              help="Judge as if apply inserted the accept line into this chain of yours.")
@_common
@handle_errors
def check(as_json: bool, netns_name: str | None, netns_pid: int | None, state_dir: str, backend: str,
          insert_accept: tuple[str, ...], **kw: Any) -> None:
    ns = target_netns(netns_name, netns_pid)
    spec, sources = _spec_from(kw)
    be = _backend(ns, backend)
    inserts = [transaction.parse_chain_ref(c) for c in insert_accept]
    recovered = transaction.recover(ns, state_dir)  # an expired apply whose watchdog died: keep its promise
    insp = insp_mod.inspect(ns, be, versions=set(iptrules.families(spec)), spec=spec)
    jumps = {v: insp.ipt_state.get(f"{be.split('-', 1)[-1]}{v}", (set(), set()))[0] for v in (4, 6)}
    plan = transaction.make_plan(spec, be, inserts, jumps)
    valid, error = True, None
    try:
        transaction.validate(ns, plan)
    except BadInput as e:
        valid, error = False, e.message
    pending = [c for c in insp.needs_operator if not transaction._covered_by_insert(c.where, inserts)]
    code = Exit.OK
    if not valid or insp.refusals:
        code = Exit.CRIT
    elif pending or insp.warnings:
        code = Exit.WARN
    if as_json:
        print_json({"netns": ns.label, "backend": be, "spec": spec.to_json(), "sources": sources,
                    "valid": valid, "error": error, "inspection": insp.to_json(),
                    "operator_rule": nftrules.OPERATOR_RULE,
                    "operator_must_add": [{"chain": c.where, "rule": c.fix} for c in pending],
                    "state": transaction.state(ns, state_dir), "verdict": code.name,
                    "recovered": recovered.to_json() if recovered else None}, SCHEMA)
    else:
        click.echo(f"ctguard notrack check: {ns.label}, backend {be}")
        if recovered:
            click.echo(f"  recovered: an earlier apply passed its deadline with no watchdog alive: rolled back "
                       f"(ruleset identical: {recovered.identical})")
        click.echo(f"  exempt: tcp {', '.join(map(str, spec.ceph_ports))} between "
                   f"{', '.join(map(str, spec.networks))}  (osd range from {sources['osd_range']})")
        for ex in spec.extra:
            click.echo(f"  extra: tcp {', '.join(map(str, ex.ports))} from {', '.join(map(str, ex.sources))}")
        click.echo(f"  rules: {'valid' if valid else 'INVALID: ' + str(error)}")
        click.echo(f"  firewall managed by: {', '.join(insp.managers) or 'nothing loaded'}; "
                   f"table inet ctguard: {insp.own_table}")
        for c in insp.chains:
            covered = transaction._covered_by_insert(c.where, inserts)
            lab = "ok*" if covered else LABEL.get(c.verdict, c.verdict)
            click.echo(f"  [{lab:>6}] {c.where} ({c.hook}): {c.detail}"
                       + ("  (* --insert-accept covers it)" if covered else ""))
        if pending:
            click.echo("")
            click.echo("Your firewall would still drop the untracked Ceph traffic. Add this line to each chain "
                       "below, before its drops")
            click.echo(f"(it accepts only what ctguard untracked):  {nftrules.OPERATOR_RULE}")
            for c in pending:
                click.echo(f"    {c.where}:  {c.fix}")
            if be == "nft":
                click.echo("or let apply insert it (removed again by rollback/remove): "
                           + " ".join(f"--insert-accept '{c.where[4:]}'" for c in pending if c.where.startswith("nft ")))
        for w in insp.warnings:
            click.echo(f"  warning: {w}")
        for r in insp.refusals:
            click.echo(f"  REFUSED: {r}")
        click.echo(f"verdict: {code.name}")
    raise SystemExit(int(code))


@notrack.command(help="Load the rules in one transaction. Unless --no-rollback, the previous ruleset comes back "
                 "by itself after --timeout seconds unless `ctguard notrack confirm` arrives first.\n\n"
                 + EXIT_CODES_HELP)
@spec_options
@click.option("--timeout", "timeout", type=float, default=transaction.DEFAULT_TIMEOUT, show_default=True,
              help="Seconds until the automatic rollback.")
@click.option("--no-rollback", is_flag=True, help="Apply confirmed at once (no timer).")
@click.option("--insert-accept", "insert_accept", multiple=True, metavar="'FAMILY TABLE CHAIN'",
              help="With your consent: insert `ct state untracked accept` at the top of this chain of your "
                   "own firewall (nft backend; repeat).")
@click.option("--force", is_flag=True, help="Apply despite a detected conflict (e.g. firewalld).")
@_common
@handle_errors
def apply(as_json: bool, netns_name: str | None, netns_pid: int | None, state_dir: str, backend: str,
          timeout: float, no_rollback: bool, insert_accept: tuple[str, ...], force: bool, **kw: Any) -> None:
    ns = target_netns(netns_name, netns_pid)
    spec, _sources = _spec_from(kw)
    be = _backend(ns, backend)
    inserts = [transaction.parse_chain_ref(c) for c in insert_accept]
    out = transaction.apply(ns, spec, backend=be, timeout=None if no_rollback else timeout,
                            state_dir=state_dir, inserts=inserts, force=force)
    code = Exit.WARN if out.notes else Exit.OK
    if as_json:
        print_json(out.to_json(), SCHEMA)
    else:
        click.echo(f"applied on {ns.label} ({be}): tcp {', '.join(map(str, spec.ceph_ports))} between "
                   f"{', '.join(map(str, spec.networks))} is no longer tracked")
        for i in out.inserted:
            if "handle" in i:
                click.echo(f"  inserted `{nftrules.OPERATOR_RULE}` into {i['family']} {i['table']} {i['chain']} "
                           f"(handle {i['handle']})")
        if out.deadline is not None:
            left = out.deadline - time.time()
            click.echo(f"rolls back at {datetime.fromtimestamp(out.deadline).strftime('%H:%M:%S')} "
                       f"(in {left:.0f} s) unless you run: ctguard notrack confirm"
                       + (f" --netns {ns.name}" if ns.name else "")
                       + (f" --state-dir {state_dir}" if state_dir != journal.DEFAULT_STATE_DIR else ""))
        for n in out.notes:
            click.echo(f"  note: {n}")
    raise SystemExit(int(code))


@notrack.command(help="Keep what `apply` loaded: stops the rollback timer.\n\n" + EXIT_CODES_HELP)
@_common
@handle_errors
def confirm(as_json: bool, netns_name: str | None, netns_pid: int | None, state_dir: str) -> None:
    ns = target_netns(netns_name, netns_pid)
    out = transaction.confirm(ns, state_dir)
    if as_json:
        print_json(out.to_json(), SCHEMA)
    else:
        click.echo(f"confirmed on {ns.label}: the rollback timer is stopped")


@notrack.command(help="Delete what ctguard added (its table, chains, jumps and inserted rules) and nothing "
                 "else; before confirm, this is a rollback.\n\n" + EXIT_CODES_HELP)
@click.option("--backend", type=click.Choice(["auto", *transaction.BACKENDS]), default="auto",
              show_default=True, help="Which rules to remove (auto: as the journal says, else nft).")
@_common
@handle_errors
def remove(as_json: bool, netns_name: str | None, netns_pid: int | None, state_dir: str, backend: str) -> None:
    ns = target_netns(netns_name, netns_pid)
    out = transaction.remove(ns, state_dir, None if backend == "auto" else backend)
    if as_json:
        print_json(out.to_json(), SCHEMA)
    else:
        extra = ""
        if out.identical is not None:
            extra = (" ; ruleset identical to before apply" if out.identical else
                     " ; ruleset differs from before apply (changed meanwhile):\n" + (out.diff or ""))
        click.echo(f"{out.status} on {ns.label} ({out.backend}){extra}")


commands = [notrack]
