"""Kernel messages about conntrack overflow, and the shapes kernel logs come in.

Message text (kernel sources: net/netfilter/nf_conntrack_core.c `__nf_conntrack_alloc`):
* `nf_conntrack: table full, dropping packet` (3.x - 6.x), printed with net_warn_ratelimited();
* `nf_conntrack: nf_conntrack: table full in netns 4026532177, dropping packet` (6.18 here: the prefix is
  printed twice and a non-init namespace is named by its inode; measured in kernel-conntrack.md 2.4);
* `ip_conntrack: table full, dropping packet.` (2.6.x ip_conntrack, before nf_conntrack);
* `net_ratelimit: N callbacks suppressed` (or `__ratelimit: N callbacks suppressed` on older kernels): the
  number of rate-limited messages not printed. The budget (net.core.message_cost/message_burst: 10 lines per
  5 s) is shared by every net_*_ratelimited() caller, so N is only attributed to conntrack when the host's next
  kernel line is a table-full line (`scan.attach_suppressed`), and even then it is an upper bound of the
  unprinted table-full lines: count real drops with the `drop` counter, not with log lines;
* `printk: N messages suppressed.` (2.6.10 - 2.6.30: net_ratelimit() was `__printk_ratelimit()`) and
  `NET: N messages suppressed.` (2.4 - 2.6.9: net_ratelimit() had its own copy).
"""

from __future__ import annotations

import re

TABLE_FULL_RE = re.compile(r"(?:(?:nf|ip)_conntrack: )*table full(?: in netns (\d+))?, dropping packet")
# `FUNC: N callbacks suppressed` (lib/ratelimit.c; FUNC is `__ratelimit` in 2.6.31-2.6.33, then the caller's
# __func__, `net_ratelimit` for net_*_ratelimited()), `printk: N messages suppressed.` (kernel/printk.c
# `__printk_ratelimit`, which net_ratelimit() called from 2.6.10 to 2.6.30) and `NET: N messages suppressed.`
# (net/core/utils.c net_ratelimit() of 2.4 and 2.6.0-2.6.9)
SUPPRESSED_RE = re.compile(
    r"(?:^|\s)(?:(net_ratelimit|_{0,3}ratelimit): (\d+) callbacks suppressed|(printk|NET): (\d+) messages suppressed)")

# Shapes of a kernel log line without a syslog envelope.
# raw dmesg: `[ 8723.214092] msg`; `dmesg -x` adds `kern  :warn  : `.
DMESG_RAW_RE = re.compile(r"^(?:\w+\s*:\s*\w+\s*: )?\[\s*(\d{1,10})\.(\d{1,9})\] ?(.*)$")
# dmesg -T: `[Thu Nov 26 06:05:51 2026] msg`
DMESG_T_RE = re.compile(
    r"^(?:\w+\s*:\s*\w+\s*: )?\[(?:[A-Z][a-z]{2} )?([A-Z][a-z]{2}) +(\d{1,2}) (\d\d:\d\d:\d\d) (\d{4})\] ?(.*)$")
# dmesg --time-format=iso: `2024-03-05T10:12:13,123456+00:00 msg` (a comma, and no host)
DMESG_ISO_RE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d,\d{1,9}[+-]\d\d:?\d\d) (.*)$")
# the `[secs.usecs] ` that kern.log keeps inside the syslog message
INNER_STAMP_RE = re.compile(r"^\[\s*\d{1,10}\.\d{1,9}\] ?")


def kernel_message(msg: str) -> tuple[str, int, str] | None:
    """(kind, count, detail) for a conntrack-overflow kernel message, else None."""
    if "table full" in msg:
        m = TABLE_FULL_RE.search(msg)
        if m:
            return ("table_full", 1, m.group(1) or "")
        return None
    if "callbacks suppressed" in msg:
        m = SUPPRESSED_RE.search(msg)
        if m and m.group(2):
            return ("suppressed", int(m.group(2)), m.group(1))
    if "messages suppressed" in msg:
        m = SUPPRESSED_RE.search(msg)
        if m and m.group(3):
            return ("suppressed", int(m.group(4)), m.group(3))
    return None
