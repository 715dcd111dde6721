"""One PNG per scenario from its recorded series (matplotlib, Agg backend: no display needed).

Panels: the host's conntrack entries (real entries = count - filler, with the table's limit as seen by
them), packets dropped per second by the full table, and Ceph's view (OSDs up, PGs active+clean) with the
messenger fault lines per second, and the librados clients: ops completed per second (all clients) and the
worst op latency per second (the slowest op completed in it, or the age of the oldest op still in flight at
its end, whichever is larger), with the seconds in which some op was outstanding > 1 s shaded. Vertical lines
mark OSD stops (red), starts (green) and purges (blue).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Record = dict[str, Any]


def plot_scenario(records: Sequence[Record], path: str, title: str, max_entries: int, filler: int,
                  baseline: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ct = [r for r in records if r["kind"] == "ct"]
    ceph = [r for r in records if r["kind"] == "ceph"]
    faults = [r for r in records if r["kind"] == "faults"]
    clients = [r for r in records if r["kind"] == "client"]
    fig, axes = plt.subplots(4, 1, figsize=(10, 10.5), sharex=True)
    ax1, ax2, ax3, ax4 = axes
    if ct:
        t = [float(r["t"]) for r in ct]
        ax1.plot(t, [int(r["count"]) - filler for r in ct], color="black", lw=1.2, label="entries - filler")
        ax1.axhline(max_entries - filler, color="red", ls="--", lw=1, label="limit (max - filler)")
        ax1.axhline(baseline, color="grey", ls=":", lw=1, label="baseline")
        rates_t, rates = [], []
        for a, b in zip(ct, ct[1:], strict=False):
            dt = float(b["t"]) - float(a["t"])
            if dt > 0:
                rates_t.append(float(b["t"]))
                rates.append((int(b["drop"]) - int(a["drop"])) / dt)
        ax2.plot(rates_t, rates, color="red", lw=1, label="conntrack drops/s")
        ed = [(float(b["t"]), (int(b["early_drop"]) - int(a["early_drop"])) / max(1e-3, float(b["t"]) - float(a["t"])))
              for a, b in zip(ct, ct[1:], strict=False)]
        ax2.plot([x for x, _ in ed], [y for _, y in ed], color="orange", lw=1, label="early_drop/s")
    if ceph:
        t = [float(r["t"]) for r in ceph]
        osds = max(int(r["osds"]) for r in ceph) or 1
        pgs = max(int(r["num_pgs"]) for r in ceph) or 1
        ax3.plot(t, [int(r["osds_up"]) / osds * 100 for r in ceph], color="green", label="OSDs up %")
        ax3.plot(t, [int(r["pgs_clean"]) / pgs * 100 for r in ceph], color="blue", label="PGs active+clean %")
        ax3.set_ylim(-5, 105)
    if faults:
        ax3b = ax3.twinx()
        ax3b.bar([float(r["t"]) + 0.5 for r in faults], [int(r["lines"]) for r in faults], width=1.0,
                 color="purple", alpha=0.3, label="fault lines/s")
        ax3b.set_ylabel("fault lines/s")
    if clients:
        _client_panel(ax4, clients)
    for r in records:
        if r["kind"] == "event" and r["event"] in ("stop", "start"):
            for ax in axes:
                ax.axvline(float(r["t"]), color="red" if r["event"] == "stop" else "green", lw=0.5, alpha=0.5)
        elif r["kind"] == "purge":
            for ax in axes:
                ax.axvline(float(r["t"]), color="blue", lw=1, alpha=0.8)
    ax1.set_ylabel("conntrack entries")
    ax2.set_ylabel("per second")
    ax3.set_ylabel("%")
    ax4.set_ylabel("client ops/s")
    ax4.set_xlabel("seconds")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:  # a series without client records leaves the last panel empty
            ax.legend(loc="upper right", fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def client_series(clients: Sequence[Record]) -> tuple[list[float], list[int], list[float], list[float]]:
    """Per recorded second (t = its start): ops completed by all clients, worst latency in seconds, and the
    largest blocked fraction of any client. Series recorded before the asynchronous workload have no
    `oldest_ms` / `blocked_ms`: those count as 0 (their worst latency is that of completed ops only)."""
    ops: dict[float, int] = {}
    worst: dict[float, float] = {}
    blocked: dict[float, float] = {}
    for r in clients:
        t = float(r["t"])
        ops[t] = ops.get(t, 0) + int(r.get("ops", 0))
        w = max(float(r.get("worst_ms", 0.0)), float(r.get("oldest_ms", 0.0))) / 1000
        worst[t] = max(worst.get(t, 0.0), w)
        blocked[t] = max(blocked.get(t, 0.0), float(r.get("blocked_ms", 0.0)) / 1000)
    ts = sorted(ops)
    return ts, [ops[t] for t in ts], [worst[t] for t in ts], [blocked[t] for t in ts]


def _client_panel(ax: Any, clients: Sequence[Record]) -> None:
    ts, ops, worst, blocked = client_series(clients)
    # a second's record covers [t, t+1): plotted as steps over that second
    ax.step(ts, ops, where="post", color="black", lw=1, label="ops/s (all clients)")
    prev = (float("nan"), 0.0)
    for t, b in zip(ts, blocked, strict=True):
        if b > 0:
            # a blocked stretch begins late in its first second and ends early in its last one
            cont = prev[0] == t - 1 and prev[1] > 0
            ax.axvspan(t if cont else t + 1 - b, t + b if cont else t + 1, color="red", alpha=0.15, lw=0)
        prev = (t, b)
    ax.plot([], [], color="red", alpha=0.3, lw=6, label="an op outstanding > 1 s")
    ax.set_ylim(bottom=0)
    axb = ax.twinx()
    axb.step(ts, worst, where="post", color="darkorange", lw=1.2, label="worst op latency, s")
    axb.set_ylabel("worst op latency, s")
    axb.set_ylim(bottom=0)
    axb.legend(loc="upper left", fontsize=7)


def plot_series_file(series: str, png: str) -> None:
    """Redraw a PNG from a recorded `<scenario>.jsonl` (docs/lab.md), e.g. for data/lab runs."""
    import json

    with open(series) as f:
        records = [json.loads(line) for line in f if line.strip()]
    if not records or records[0].get("kind") != "meta":
        raise ValueError(f"{series}: not a lab series (no meta line)")
    meta = records[0]
    sc = meta.get("scenario", {})
    plot_scenario(records[1:], png, title=f"{sc.get('name', '?')}: {sc.get('title', '')}",
                  max_entries=int(meta["max"]), filler=int(meta.get("filler") or 0),
                  baseline=int(meta.get("baseline") or 0))
