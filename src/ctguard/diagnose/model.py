"""What the log parsers produce: one `Event` per interesting line, and per-second buckets for the
messenger lines that come by the thousand in a reconnect storm (so memory stays bounded)."""

from __future__ import annotations

from dataclasses import dataclass, field

# Event kinds.
TABLE_FULL = "table_full"  # kernel: nf_conntrack/ip_conntrack "table full, dropping packet"
SUPPRESSED = "suppressed"  # kernel: "net_ratelimit: N callbacks suppressed" right before a table-full line
COUNTED_DROPS = "counted_drops"  # the kernel's `drop` counter went up by `count` (ctguard lab recordings)
MS_FAULT = "ms_fault"  # messenger: "fault on lossy channel, failing" (the reconnect-loop signature)
MS_CLOSE = "ms_close"  # messenger: other fault/teardown lines (fault N: ..., reader/writer, _fault waiting)
MS_RESET = "ms_reset"  # messenger: RESETSESSION / session reset
HB_NO_REPLY = "hb_no_reply"  # OSD: "heartbeat_check: no reply from ... osd.N"
WRONGLY_DOWN = "wrongly_down"  # OSD: "map eN wrongly marked me down"
OSD_START = "osd_start"  # OSD: "done with init, starting boot process" (a process (re)start)
MON_BOOT = "mon_boot"  # cluster log: "osd.N ... boot"
MARKED_DOWN = "marked_down"  # cluster log: "osd.N failed (...)", "marked itself down", "marked down after no beacon"
SLOW = "slow"  # slow/blocked requests or ops, with the count

KINDS = (TABLE_FULL, SUPPRESSED, COUNTED_DROPS, MS_FAULT, MS_CLOSE, MS_RESET, HB_NO_REPLY, WRONGLY_DOWN, OSD_START, MON_BOOT,
         MARKED_DOWN, SLOW)
# Kinds kept as per-second buckets rather than one object per line.
BUCKETED = frozenset({MS_FAULT, MS_CLOSE})

WALL = "wall"
BOOT = "boot"  # raw dmesg seconds since boot, with no --boot-time to anchor them


@dataclass(slots=True)  # not frozen: a frozen dataclass is 3x slower to build, and storms build many
class Event:
    ts: float  # Unix seconds (wall clock) or seconds since boot (clock == BOOT)
    kind: str
    host: str
    daemon: str  # "osd.3", "mon.a", "kernel", or "" when unknown
    source: str  # file path or "-" (stdin)
    line_no: int
    text: str  # the line as read, trimmed to MAX_TEXT characters
    clock: str = WALL
    count: int = 1  # suppressed callbacks, slow requests
    peer: str = ""  # messenger peer address, heartbeat peer osd.N, reporter
    lossy: bool = False
    detail: str = ""  # netns inode, mark-down reason, fault tail

    def __reduce__(self) -> tuple[type[Event], tuple[object, ...]]:
        # workers send thousands back: positional arguments pickle 4x faster than the slots state dataclasses
        # generate (a Python-level __getstate__/__setstate__ per object)
        return (Event, (self.ts, self.kind, self.host, self.daemon, self.source, self.line_no, self.text, self.clock,
                        self.count, self.peer, self.lossy, self.detail))


MAX_TEXT = 400
PEER_CAP = 256  # distinct peers remembered per bucket


@dataclass(slots=True)
class Bucket:
    """All events of one kind, host and daemon within one second; `first` is the earliest."""

    first: Event
    count: int = 0
    peers: set[str] = field(default_factory=set)

    def __reduce__(self) -> tuple[type[Bucket], tuple[object, ...]]:
        return (Bucket, (self.first, self.count, self.peers))

    def add(self, ev: Event) -> None:
        self.count += 1
        if ev.ts < self.first.ts:  # input need not be in order
            self.first = ev
        if ev.peer and len(self.peers) < PEER_CAP:
            self.peers.add(ev.peer)


BucketKey = tuple[str, str, str, str, int, str]  # clock, kind, host, daemon, second, source


def bucket_key(ev: Event) -> BucketKey:
    return (ev.clock, ev.kind, ev.host, ev.daemon, int(ev.ts // 1), ev.source)
