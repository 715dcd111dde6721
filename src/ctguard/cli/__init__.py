"""The `ctguard` command line: a thin click layer over the core. Nothing else imports this package."""

from __future__ import annotations

import sys

import click

from ctguard import __version__
from ctguard.cli.common import EXIT_CODES_HELP
from ctguard.errors import CtguardError, Exit


@click.group(help="Keep Ceph hosts out of nf_conntrack exhaustion, and make their restarts safe.\n\n"
             + EXIT_CODES_HELP)
@click.version_option(__version__, prog_name="ctguard")
def cli() -> None:
    pass


# One module per command family, each exposing `commands` (a list of click commands).
_COMMAND_MODULES = (
    "table",
    "notrack",
    "diagnose",
    "model",
    "export",
    "restart",
    "lab",
)


def _register() -> None:
    import importlib

    for name in _COMMAND_MODULES:
        mod = importlib.import_module(f"ctguard.cli.{name}")
        for cmd in mod.commands:
            cli.add_command(cmd)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: usage errors are exit 3 (UNKNOWN) with one line, not click's exit 2,
    because 2 means CRIT here."""
    _register()
    try:
        rc = cli.main(args=argv, prog_name="ctguard", standalone_mode=False)
    except click.UsageError as e:
        if type(e).__name__ in ("NoArgsIsHelpError", "NoArgsIsHelp"):  # click >= 8.2: help was shown
            click.echo(e.format_message(), err=True)
            sys.exit(0)
        click.echo(f"ctguard: {e.format_message()}", err=True)
        sys.exit(int(Exit.UNKNOWN))
    except click.exceptions.Abort:
        click.echo("ctguard: interrupted", err=True)
        sys.exit(int(Exit.INTERRUPTED))
    except click.ClickException as e:
        click.echo(f"ctguard: {e.format_message()}", err=True)
        sys.exit(int(Exit.UNKNOWN))
    except CtguardError as e:
        click.echo(f"ctguard: {e.message}", err=True)
        sys.exit(int(e.exit_code))
    except KeyboardInterrupt:
        click.echo("ctguard: interrupted", err=True)
        sys.exit(int(Exit.INTERRUPTED))
    sys.exit(rc if isinstance(rc, int) else 0)
