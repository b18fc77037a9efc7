"""A loopback receiver for the webhook and push benchmarks (run as its own process).

POST anything: answers `--status` (204 by default) at once, and remembers when each webhook-id
(or push URL) first arrived and, when the body carries `data.t` (the sender's commit time), how
long after the commit. GET /stats answers the counts and latencies; POST /reset clears them.
"""

from __future__ import annotations

import argparse
import json
import time

from aiohttp import web

stats: dict[str, object] = {}
seen: set[str] = set()
latencies: list[float] = []
counter = {"requests": 0, "first": 0.0, "last": 0.0}


async def receive(request: web.Request) -> web.Response:
    body = await request.read()
    now = time.time()
    counter["requests"] += 1
    if not counter["first"]:
        counter["first"] = now
    counter["last"] = now
    key = request.headers.get("webhook-id") or request.path
    if key not in seen:
        seen.add(key)
        if request.headers.get("webhook-id"):
            try:
                sent_at = float(json.loads(body)["data"]["t"])
                latencies.append(now - sent_at)
            except (ValueError, KeyError, TypeError):
                pass
    return web.Response(status=request.app["status"])


async def get_stats(_request: web.Request) -> web.Response:
    return web.json_response(
        {
            "requests": counter["requests"],
            "unique": len(seen),
            "first": counter["first"],
            "last": counter["last"],
            "latencies": latencies,
        }
    )


async def reset(_request: web.Request) -> web.Response:
    seen.clear()
    latencies.clear()
    counter.update(requests=0, first=0.0, last=0.0)
    return web.Response(status=204)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--status", type=int, default=204)
    args = parser.parse_args()
    app = web.Application()
    app["status"] = args.status
    app.router.add_get("/stats", get_stats)
    app.router.add_post("/reset", reset)
    app.router.add_post("/{tail:.*}", receive)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None, backlog=2048)


if __name__ == "__main__":
    main()
