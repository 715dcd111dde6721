"""The one place ctguard runs external programs.

Always an argument list, always a timeout, stderr kept for the error message, never a shell.
Tests replace `run` (or pass a `Runner`) with recorded output.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from ctguard.errors import CommandFailed


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def first_error_line(self) -> str:
        for text in (self.stderr, self.stdout):
            for line in text.splitlines():
                if line.strip():
                    return line.strip()
        return f"exit code {self.returncode}"


class Runner(Protocol):
    def __call__(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        input: str | None = None,
        check: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> Completed: ...


def run(
    argv: Sequence[str],
    *,
    timeout: float,
    input: str | None = None,
    check: bool = False,
    env: Mapping[str, str] | None = None,
) -> Completed:
    """Run argv and return what it printed. Raise CommandFailed on a timeout, a missing program, or
    (with check=True) a non-zero exit, with a one-line reason."""
    argv = tuple(str(a) for a in argv)
    full_env = None
    if env is not None:
        full_env = dict(os.environ)
        full_env.update(env)
    try:
        p = subprocess.run(  # noqa: S603 - argument list, never a shell
            argv,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=full_env,
            check=False,
        )
    except FileNotFoundError as e:
        raise CommandFailed(f"{argv[0]}: not found (is it installed?)") from e
    except subprocess.TimeoutExpired as e:
        raise CommandFailed(f"{' '.join(argv[:4])}: no answer within {timeout:g} s") from e
    done = Completed(argv, p.returncode, p.stdout or "", p.stderr or "")
    if check and not done.ok:
        raise CommandFailed(f"{' '.join(argv[:4])}: {done.first_error_line()}")
    return done
