"""What every command shares: --json, namespace targeting, error handling and exit codes.

Commands are thin: parse flags, call the core, render. Only this package prints to a terminal.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Mapping
from typing import Any, ParamSpec, TypeVar

import click

from ctguard.errors import BadInput, CtguardError, Exit
from ctguard.kernel.netns import Netns
from ctguard.output import dumps

P = ParamSpec("P")
R = TypeVar("R")

EXIT_CODES_HELP = (
    "Exit codes: 0 OK, 1 WARN (something to act on), 2 CRIT (or the action failed safely), "
    "3 UNKNOWN (cannot read, bad input), 130 interrupted."
)

F = TypeVar("F", bound=Callable[..., Any])


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output (stable schema).")(f)


def netns_options(f: F) -> F:
    f = click.option("--netns-pid", type=int, default=None, metavar="PID",
                     help="Target the network namespace of process PID.")(f)
    f = click.option("--netns", "netns_name", default=None, metavar="NAME",
                     help="Target the network namespace NAME (as `ip netns` names it).")(f)
    return f


def proc_root_option(f: F) -> F:
    return click.option("--proc-root", default="/proc", hidden=True,
                        help="Read a fake /proc tree (tests).")(f)


def target_netns(netns_name: str | None, netns_pid: int | None) -> Netns:
    if netns_name is not None and netns_pid is not None:
        raise BadInput("give either --netns or --netns-pid, not both")
    if netns_pid is not None and netns_pid <= 0:
        raise BadInput(f"bad PID {netns_pid}")
    return Netns(name=netns_name, pid=netns_pid)


def print_json(doc: Mapping[str, Any], schema: int) -> None:
    click.echo(dumps(doc, schema))


def fail(message: str, code: int = Exit.UNKNOWN) -> None:
    """One line on stderr, then the exit code; never a traceback."""
    click.echo(f"ctguard: {message}", err=True)
    sys.exit(int(code))


def handle_errors(f: Callable[P, R]) -> Callable[P, R]:
    """Turn our errors into one line on stderr and their documented exit code."""

    @functools.wraps(f)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return f(*args, **kwargs)
        except CtguardError as e:
            fail(e.message, e.exit_code)
        except KeyboardInterrupt:
            fail("interrupted", Exit.INTERRUPTED)
        raise AssertionError("unreachable")

    return wrapper
