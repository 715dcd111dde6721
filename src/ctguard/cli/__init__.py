"""The `ctguard` command line: a thin click layer over the core. Nothing else imports this package."""

from __future__ import annotations

import importlib
import sys

import click

from ctguard import __version__
from ctguard.cli.common import EXIT_CODES_HELP
from ctguard.errors import CtguardError, Exit

# Command name -> the module under ctguard.cli that defines it (in its `commands` list). Modules are imported
# only when their command runs, so `ctguard status` (a monitoring check run every minute) does not pay for
# importing every capability.
_COMMANDS = {
    "status": "table",
    "purge": "table",
    "notrack": "notrack",
    "diagnose": "diagnose",
    "simulate": "model",
    "plan": "model",
    "exporter": "export",
    "guard": "export",
    "watch": "export",
    "restart": "restart",
    "lab": "lab",
    "mgr": "mgr",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = _COMMANDS.get(cmd_name)
        if module is None:
            return None
        mod = importlib.import_module(f"ctguard.cli.{module}")
        for cmd in mod.commands:
            if cmd.name == cmd_name:
                return cmd  # type: ignore[no-any-return]
        raise AssertionError(f"ctguard.cli.{module} does not define {cmd_name}")


@click.group(cls=_LazyGroup, help="Keep Ceph hosts out of nf_conntrack exhaustion, and make their restarts safe.\n\n"
             + EXIT_CODES_HELP)
@click.version_option(__version__, prog_name="ctguard")
def cli() -> None:
    pass


def main(argv: list[str] | None = None) -> None:
    """Console entry point: usage errors are exit 3 (UNKNOWN) with one line, not click's exit 2,
    because 2 means CRIT here."""
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
