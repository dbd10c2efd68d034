#!/usr/bin/env python3
"""Where each hop of an event-channel IPI ping-pong goes, from a `xenkvm run --trace FILE` of
bench_hypercall_ipi (docs/trace.md): for every EVTCHNOP_send slice that injected an upcall,
  start -> upcall   the sender's hypercall from its decoded exit to the upcall sent (MSI/irqfd)
  upcall -> end     the rest of the sender's hypercall
  upcall -> reply   until the receiving vCPU's next event_channel_op (its wake, handler, reply)
  hop               start -> reply
printed as percentiles in microseconds. Usage: ipi_hops.py TRACE.json"""
import json
import sys


def main(argv):
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    events = [e for e in json.load(open(argv[1]))["traceEvents"] if e.get("ph") in ("X", "i")]
    tracks = {}
    for e in sorted(events, key=lambda e: e["ts"]):
        tracks.setdefault(e["tid"], []).append(e)
    sends = {tid: [e for e in t if e["name"] == "event_channel_op"] for tid, t in tracks.items()}
    vcpus = [tid for tid, s in sends.items() if s]
    if len(vcpus) != 2:
        print("expected event_channel_op slices on two vCPU tracks", file=sys.stderr)
        return 1
    rows = []
    for me, peer in (vcpus, vcpus[::-1]):
        upcalls = [e["ts"] for e in tracks[me] if e["name"] == "upcall"]
        replies = [e["ts"] for e in sends[peer]]
        for s in sends[me]:
            start, end = s["ts"], s["ts"] + s["dur"]
            upcall = next((u for u in upcalls if start <= u <= end), None)
            reply = next((r for r in replies if upcall is not None and r > upcall), None)
            if reply is not None:
                rows.append((upcall - start, end - upcall, reply - upcall, reply - start))
    if not rows:
        print("no hops found", file=sys.stderr)
        return 1
    print(f"{len(rows)} hops (us)        p25      p50      p75")
    for i, name in enumerate(["start -> upcall", "upcall -> end", "upcall -> reply", "hop"]):
        col = sorted(r[i] for r in rows)
        pct = [col[int(p * (len(col) - 1))] for p in (0.25, 0.5, 0.75)]
        print(f"  {name:16s} {pct[0]:8.1f} {pct[1]:8.1f} {pct[2]:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
