"""The outputs of `ctguard diagnose`: the JSON document (schema 1), the text report, and a self-contained
HTML report whose timeline plot is a matplotlib PNG embedded as base64 (no external file, no network)."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

from ctguard.diagnose import model
from ctguard.diagnose.correlate import Incident, fmt_ts
from ctguard.diagnose.scan import BINARY, ScanResult

SCHEMA = 1


def _ev(e: model.Event | None) -> dict[str, Any] | None:
    if e is None:
        return None
    return {"source": e.source, "line": e.line_no, "text": e.text}


def incident_doc(inc: Incident, n: int) -> dict[str, Any]:
    def t(ts: float) -> str:
        return fmt_ts(ts, inc.clock)

    return {
        "id": n,
        "clock": inc.clock,
        "start": t(inc.start),
        "end": t(inc.end),
        "duration_s": round(inc.end - inc.start, 3),
        "hosts": inc.hosts,
        "drops": inc.drops,
        "drops_logged": inc.drops_logged,
        "suppressed": inc.suppressed,
        "drops_counted": inc.drops_counted,
        "restarted": [{"daemon": p.daemon, "host": p.host, "at": t(p.ts), "how": p.how, "evidence": _ev(p.ev)}
                      for p in inc.restarted],
        "marked_down": [{"daemon": p.daemon, "host": p.host, "at": t(p.ts), "how": p.how, "evidence": _ev(p.ev)}
                        for p in inc.marked_down],
        "marked_down_by_mon": len(inc.marked_down_by_mon),
        "lab_scenarios": inc.lab_scenarios,
        "cause": inc.cause,
        "cause_kind": inc.cause_kind,
        "conntrack": inc.conntrack,
        "claims": [{"claim": c.claim, "evidence": [{"source": e.source, "line": e.line, "text": e.text}
                                                   for e in c.evidence]} for c in inc.claims],
        "table_full": [{"host": k.host, "first": t(k.first), "last": t(k.last), "duration_s": round(k.duration, 3),
                        "drops_logged": k.drops_logged, "suppressed": k.suppressed, "drops_counted": k.drops_counted,
                        "drops_per_s_peak": k.peak_per_s, "netns": k.netns} for k in inc.kernel],
        "daemons": [{"daemon": d.daemon, "host": d.host, "lossy_faults": d.lossy_faults,
                     "faults_per_s_peak": d.peak_faults_per_s, "distinct_peers": len(d.peers),
                     "other_faults": d.closes, "session_resets": d.resets,
                     "heartbeat_no_reply": d.heartbeat_no_reply, "slow_requests_max": d.slow_max}
                    for d in inc.daemons],
    }


def verdict(incidents: list[Incident]) -> str:
    if any(i.conntrack for i in incidents):
        return "CRIT"
    return "WARN" if any(i.cause_kind != "clean-restart" for i in incidents) else "OK"


def document(res: ScanResult, incidents: list[Incident]) -> dict[str, Any]:
    return {
        "verdict": verdict(incidents),
        "lines": {"read": res.read, "matched": res.matched, "skipped": res.skipped,
                  "ignored": max(0, res.read - res.matched - res.skipped), "duplicates": res.duplicates},
        "inputs": [{"source": i.source, "host": i.host, "daemon": i.daemon, "kinds": i.kinds,
                    "compression": i.compression or None, "via": i.via, "lines": i.lines, "bytes": i.bytes,
                    "error": i.error or None, "duplicates": i.duplicates} for i in res.inputs],
        "incidents": [incident_doc(inc, n) for n, inc in enumerate(incidents, start=1)],
    }


def text(doc: dict[str, Any]) -> str:
    """Plain-text report (the CLI adds colour)."""
    out = []
    ln = doc["lines"]
    binary = [i for i in doc["inputs"] if i["error"] == BINARY]
    out.append(f"Read {ln['read']} lines from {len(doc['inputs']) - len(binary)} input(s): {ln['matched']} matched, "
               f"{ln['skipped']} skipped (unknown shape or garbage), {ln['ignored']} ordinary."
               + (f" {ln['duplicates']} kernel line(s) counted once: another input of the same host has them."
                  if ln.get("duplicates") else "")
               + (f" Not read: {len(binary)} binary file(s) found in the directories." if binary else ""))
    for i in doc["inputs"]:
        if i["error"] and i["error"] != BINARY:
            out.append(f"  ! {i['source']}: {i['error']}")
    if not doc["incidents"]:
        out.append("No incident: no conntrack overflow and no OSD trouble in these logs.")
    for inc in doc["incidents"]:
        out.append("")
        lab = f" (lab scenario {', '.join(inc['lab_scenarios'])})" if inc.get("lab_scenarios") else ""
        out.append(f"Incident {inc['id']}{lab}: {inc['start']} .. {inc['end']} ({inc['duration_s']:.0f} s), "
                   f"hosts: {', '.join(inc['hosts']) or '-'}")
        out.append(f"  Cause [{inc['cause_kind']}]: {inc['cause']}")
        counted = f"{inc['drops_counted']} counted; " if inc["drops_counted"] else ""
        out.append(f"  Drops: {inc['drops']} ({counted}{inc['drops_logged']} logged + {inc['suppressed']} suppressed); "
                   f"restarted: {len(inc['restarted'])}; marked down by the mon: {inc['marked_down_by_mon']}"
                   + (f" (+{len(inc['marked_down']) - inc['marked_down_by_mon']} stopped cleanly)"
                      if len(inc["marked_down"]) > inc["marked_down_by_mon"] else ""))
        for c in inc["claims"]:
            out.append(f"  - {c['claim']}")
            for e in c["evidence"]:
                out.append(f"      {e['source']}:{e['line']}: {e['text']}")
        busy = [d for d in inc["daemons"] if d["lossy_faults"] or d["heartbeat_no_reply"] or d["slow_requests_max"]]
        if busy:
            out.append("  Daemons (lossy faults, peak/s, peers, heartbeat failures, slow max):")
            for d in busy[:20]:
                out.append(f"    {d['daemon']:<28} {d['lossy_faults']:>7} {d['faults_per_s_peak']:>6} "
                           f"{d['distinct_peers']:>5} {d['heartbeat_no_reply']:>5} {d['slow_requests_max']:>5}")
    if len(doc["incidents"]) > 1:  # one line each, to set beside `lab reproduce`'s table or a timeline
        out.append("")
        out.append(f"  {'#':>3}  {'start':<24} {'length s':>8} {'drops':>8} {'marked down':>11}  cause")
        for inc in doc["incidents"]:
            lab = f" ({', '.join(inc['lab_scenarios'])})" if inc.get("lab_scenarios") else ""
            out.append(f"  {inc['id']:>3}  {inc['start']:<24} {inc['duration_s']:>8.0f} {inc['drops']:>8} "
                       f"{inc['marked_down_by_mon']:>11}  {inc['cause_kind']}{lab}")
    return "\n".join(out)


def timeline_png(inc: Incident) -> bytes:
    """Drops/s per host, lossy faults/s per host, restarts (green) and mark-downs (red) over the incident."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = inc.start
    span = max(inc.end - inc.start, 1.0)
    step = max(1, int(span // 600) + 1)  # at most ~600 bins
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True)
    for key, series in sorted(inc.series.items()):
        what, _, host = key.partition(":")
        bins: dict[int, int] = {}
        for sec, n in series.items():
            b = int((sec - t0) // step) * step
            bins[b] = bins.get(b, 0) + n
        xs = list(range(int(min(bins, default=0)), int(span) + step, step))  # empty bins are zeros
        ys = [bins.get(x, 0) / step for x in xs]
        ax = ax1 if what == "drops" else ax2
        ax.plot(xs, ys, drawstyle="steps-post", linewidth=1.0, label=host)
    for ax in (ax1, ax2):
        for p in inc.restarted:
            ax.axvline(p.ts - t0, color="tab:green", linestyle="--", linewidth=0.8)
        for p in inc.marked_down:
            ax.axvline(p.ts - t0, color="tab:red", linestyle=":", linewidth=1.0)
        ax.grid(alpha=0.3)
    ax1.set_ylabel("conntrack drops/s")
    ax2.set_ylabel("lossy faults/s")
    ax1.set_ylim(bottom=0)
    ax2.set_ylim(bottom=0)
    ax2.set_xlabel(f"seconds after {fmt_ts(t0, inc.clock)} (green: restarts, red: mark-downs)")
    for ax in (ax1, ax2):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper right", fontsize=8)
    ax1.set_title(inc.cause[:110] + ("…" if len(inc.cause) > 110 else ""), fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


_CSS = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "code,pre{background:#f4f4f4;font-size:12px}pre{padding:6px;white-space:pre-wrap;word-break:break-all}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}"
        ".crit{color:#b00}.warn{color:#a60}")


def html_report(doc: dict[str, Any], incidents: list[Incident], max_plots: int = 20) -> str:
    e = html.escape
    ln = doc["lines"]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>ctguard diagnose</title>"
             f"<style>{_CSS}</style></head><body><h1>ctguard diagnose</h1>",
             f"<p>Verdict: <b class='{'crit' if doc['verdict'] == 'CRIT' else 'warn'}'>{e(doc['verdict'])}</b>. "
             f"Read {ln['read']} lines ({ln['matched']} matched, {ln['skipped']} skipped, {ln['ignored']} ordinary) "
             f"from {len(doc['inputs'])} input(s).</p>",
             "<table><tr><th>input</th><th>host</th><th>daemon</th><th>kinds</th><th>lines</th><th>note</th></tr>"]
    for i in doc["inputs"]:
        parts.append(f"<tr><td>{e(i['source'])}</td><td>{e(i['host'])}</td><td>{e(i['daemon'])}</td>"
                     f"<td>{e(', '.join(i['kinds']))}</td><td>{i['lines']}</td><td>{e(i['error'] or '')}</td></tr>")
    parts.append("</table>")
    if not incidents:
        parts.append("<p>No incident found.</p>")
    for n, (inc, d) in enumerate(zip(incidents, doc["incidents"], strict=True), start=1):
        parts.append(f"<h2>Incident {n}: {e(d['start'])} – {e(d['end'])}</h2>")
        parts.append(f"<p><b>Cause ({e(d['cause_kind'])}):</b> {e(d['cause'])}</p>")
        parts.append(f"<p>Hosts: {e(', '.join(d['hosts']) or '-')}. Drops: {d['drops']} ({d['drops_logged']} "
                     f"logged + {d['suppressed']} suppressed). Restarted: {len(d['restarted'])}. "
                     f"Marked down: {len(d['marked_down'])}.</p>")
        if n <= max_plots and inc.series:
            png = base64.b64encode(timeline_png(inc)).decode()
            parts.append(f"<img alt='timeline of incident {n}' src='data:image/png;base64,{png}'>")
        parts.append("<h3>Claims and evidence</h3><ol>")
        for c in d["claims"]:
            ev = "".join(f"<pre>{e(x['source'])}:{x['line']}: {e(x['text'])}</pre>" for x in c["evidence"])
            parts.append(f"<li>{e(c['claim'])}{ev}</li>")
        parts.append("</ol>")
        if d["daemons"]:
            parts.append("<table><tr><th>daemon</th><th>host</th><th>lossy faults</th><th>peak/s</th><th>peers</th>"
                         "<th>other faults</th><th>heartbeat no reply</th><th>slow max</th></tr>")
            for x in d["daemons"][:50]:
                parts.append(f"<tr><td>{e(x['daemon'])}</td><td>{e(x['host'])}</td><td>{x['lossy_faults']}</td>"
                             f"<td>{x['faults_per_s_peak']}</td><td>{x['distinct_peers']}</td><td>{x['other_faults']}"
                             f"</td><td>{x['heartbeat_no_reply']}</td><td>{x['slow_requests_max']}</td></tr>")
            parts.append("</table>")
        for title, key in (("Restarts", "restarted"), ("Marked down", "marked_down")):
            if d[key]:
                parts.append(f"<h3>{title}</h3><ul>")
                for p in d[key]:
                    parts.append(f"<li>{e(p['at'])} {e(p['daemon'])} {e(p['host'])}: {e(p['how'])}</li>")
                parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)
