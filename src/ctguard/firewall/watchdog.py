"""The rollback watchdog: `python -m ctguard.firewall.watchdog JOURNAL TOKEN`.

Started detached by `apply` (own session, stdio to a log file next to the journal). It sleeps until the
journal's deadline, polling the journal so that `confirm`, `remove` or a newer apply (another token) lets it
exit at once; at the deadline it rolls back under the journal lock. If it is killed, the next ctguard
command on that namespace notices the expired deadline and rolls back itself (transaction.recover).
"""

from __future__ import annotations

import sys
import time

from ctguard.errors import CtguardError
from ctguard.firewall import journal, transaction

POLL = 0.2


def watch(jpath: str, token: str, sleep: float = POLL) -> str:
    while True:
        try:
            doc = journal.read(jpath)
        except CtguardError:
            doc = None
        if not doc or doc.get("token") != token or doc.get("status") != "pending":
            return "done"
        left = float(doc["deadline"]) - time.time()
        if left <= 0:
            out = transaction.rollback(jpath, token)
            return "rolled-back" if out else "done"
        time.sleep(min(sleep, left))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m ctguard.firewall.watchdog JOURNAL TOKEN", file=sys.stderr)
        return 3
    try:
        result = watch(args[0], args[1])
    except CtguardError as e:
        print(f"ctguard watchdog: {e.message}", file=sys.stderr)
        return int(e.exit_code)
    print(f"ctguard watchdog: {result}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
