"""`ctguard mgr install|path`: put the ctguard ceph-mgr module where a mgr finds it (docs/ceph-health.md)."""

from __future__ import annotations

import shlex
import sys
from typing import Any

import click

from ctguard.cli.common import EXIT_CODES_HELP, handle_errors, json_option, print_json
from ctguard.errors import BadInput, CommandFailed, Exit
from ctguard.mgr.install import (
    CEPH_MGR_DIR,
    DEFAULT_PATH,
    apply_install,
    config_commands,
    module_source,
    plan_install,
)
from ctguard.runner import run

SCHEMA = 1


@click.group(help="The ctguard ceph-mgr module: conntrack health checks in `ceph health`, `ceph ctguard status` "
             "and `ceph ctguard ok-to-restart`. See docs/ceph-health.md.\n\n" + EXIT_CODES_HELP)
def mgr() -> None:
    pass


@mgr.command(help="Install the mgr module: plan first, --apply to write.\n\n"
             "Default: a module directory of its own (--path, default " + DEFAULT_PATH + ") holding a symlink "
             "to each of Ceph's modules plus the ctguard module, for `ceph config set mgr mgr_module_path DIR` "
             "(Pacific loads modules from one directory). --into-ceph-dir instead adds only the ctguard "
             "directory to Ceph's own module directory. Nothing of Ceph's is changed otherwise.\n\n"
             "Exit codes: 0 installed or nothing to do, 1 plan shown with changes pending (run with --apply), "
             "2 apply or --configure failed, 3 bad input or cannot read, 130 interrupted.")
@click.option("--path", "path", default=None, metavar="DIR", help=f"Module directory to build [{DEFAULT_PATH}].")
@click.option("--into-ceph-dir", is_flag=True, help="Write the module into Ceph's own module directory instead.")
@click.option("--ceph-dir", default=CEPH_MGR_DIR, show_default=True,
              help="Where Ceph's mgr modules are (the default mgr_module_path).")
@click.option("--apply", "do_apply", is_flag=True, help="Carry out the plan.")
@click.option("--configure", is_flag=True,
              help="With --apply: also run `ceph config set mgr mgr_module_path DIR` (--path mode).")
@click.option("--ceph-cmd", default="ceph", show_default=True, help="How to run ceph for --configure.")
@json_option
@handle_errors
def install(path: str | None, into_ceph_dir: bool, ceph_dir: str, do_apply: bool, configure: bool, ceph_cmd: str,
            as_json: bool) -> None:
    if configure and not do_apply:
        raise BadInput("--configure changes the cluster's config: give it together with --apply")
    plan = plan_install(path, ceph_dir=ceph_dir, into_ceph_dir=into_ceph_dir)
    configured: list[str] = []
    doc: dict[str, Any] = {"plan": plan.as_json(), "applied": False, "done": [], "configured": configured}
    code = Exit.OK
    if do_apply:
        done = apply_install(plan)
        doc["applied"] = True
        doc["done"] = [s.as_json() for s in done]
        if configure:
            try:
                argv0 = shlex.split(ceph_cmd)
            except ValueError as e:
                raise BadInput(f"--ceph-cmd: {e}") from e
            for args in config_commands(plan):
                r = run([*argv0, "--connect-timeout", "20", *args], timeout=30)
                if not r.ok:
                    raise CommandFailed(f"installed, but `ceph {' '.join(args)}` failed: {r.first_error_line()}")
                configured.append(" ".join(["ceph", *args]))
    elif plan.changes:
        code = Exit.WARN
    if as_json:
        print_json(doc, SCHEMA)
    else:
        _render(plan.as_json(), doc, do_apply)
    sys.exit(int(code))


def _render(p: dict[str, Any], doc: dict[str, Any], applied: bool) -> None:
    steps = p["steps"]
    changes = [s for s in steps if s["action"] != "keep"]
    kept = len(steps) - len(changes)
    verb = "done" if applied else "plan"
    click.echo(f"ctguard mgr module -> {p['module_dir']} ({p['mode']} mode; Ceph's modules: {p['ceph_dir']})")
    links = [s for s in changes if s["action"] == "link"]
    for s in changes:
        if len(links) > 3 and s["action"] == "link":  # a fresh module dir: one line, not thirty
            if s is links[0]:
                names = [x["path"].rsplit("/", 1)[-1] for x in links]
                click.echo(f"  {verb}: link   {len(links)} entries of {p['ceph_dir']} ({', '.join(names[:3])}, "
                           f"... {names[-1]})")
            continue
        arrow = f" -> {s['target']}" if s["target"] else ""
        click.echo(f"  {verb}: {s['action']:<6} {s['path']}{arrow}")
    click.echo(f"  unchanged: {kept} entr{'y' if kept == 1 else 'ies'}")
    for n in p["notes"]:
        click.echo(f"  note: {n}")
    if not applied and changes:
        click.echo("nothing written: run again with --apply")
    configured = doc.get("configured") or []
    click.echo("then, on the cluster:" if not configured else "configured: " + "; ".join(configured))
    for c in p["config"]:
        if c not in configured:
            click.echo(f"  {c}")


@mgr.command(help="Print the directory of the shipped mgr module (for a Dockerfile COPY or a bind mount).\n\n"
             + EXIT_CODES_HELP)
@handle_errors
def path() -> None:
    click.echo(module_source())


@mgr.command(name="demo", help="In a ctguard lab: fill one OSD host's conntrack table, show the module's "
             "CTGUARD_CONNTRACK_NEARFULL in `ceph health detail` and `ok-to-restart` saying no, empty the table, "
             "show both clear (the `make demo` step).\n\nExit codes: 0 every check rose and cleared, 2 one did "
             "not, 3 no such lab or bad input, 130 interrupted.")
@click.option("--lab", "lab_prefix", required=True, metavar="PREFIX", help="The lab (as `ctguard lab up --prefix`).")
@click.option("--lab-dir", default=None, metavar="DIR", help="Parent directory of the lab (as `lab up --dir`).")
@click.option("--host", default=None, help="The OSD host to fill [the lab's first].")
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds to wait for each check.")
@handle_errors
def demo(lab_prefix: str, lab_dir: str | None, host: str | None, timeout: float) -> None:
    from ctguard.lab import mgrmod
    from ctguard.lab.cluster import Lab

    lab = Lab.load(lab_prefix, lab_dir)
    h = host or lab.hosts[0]
    lab.host_index(h)  # BadInput for a host the lab does not have

    def show(title: str, text: str) -> None:
        click.echo(f"--- {title}")
        if text.strip():
            click.echo(text.rstrip())

    ok = mgrmod.demo(lab, h, show, timeout=timeout)
    if not ok:
        click.echo("ctguard: the mgr module's checks did not rise and clear as expected", err=True)
    sys.exit(int(Exit.OK if ok else Exit.CRIT))


commands = [mgr]
