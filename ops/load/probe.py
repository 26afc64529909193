#!/usr/bin/env python3
"""Probe a URL every INTERVAL seconds for SECONDS, each with a 1 s timeout, from 127.0.0.1.
Prints one JSON line: probes, answered (2xx), and latency percentiles (ms) of the answered.

usage: probe.py URL SECONDS [INTERVAL]
"""
import json, sys, time, urllib.request

url, seconds = sys.argv[1], float(sys.argv[2])
interval = float(sys.argv[3]) if len(sys.argv) > 3 else 0.1
lat, probes, answered = [], 0, 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    t = time.monotonic()
    probes += 1
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            r.read()
            if 200 <= r.status < 300:
                answered += 1
                lat.append((time.monotonic() - t) * 1000)
    except Exception:
        pass
    time.sleep(max(0, interval - (time.monotonic() - t)))
lat.sort()
pct = lambda p: round(lat[min(len(lat) - 1, int(p * len(lat)))], 2) if lat else None
print(json.dumps({"probes": probes, "answered": answered,
                  "answeredPct": round(100 * answered / max(1, probes), 1),
                  "p50ms": pct(0.5), "p99ms": pct(0.99), "maxms": round(lat[-1], 2) if lat else None}))
