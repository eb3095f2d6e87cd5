"""The door's bound on request bodies held at once (``--max-inflight-bytes``) covers
``POST /v1/{service}`` as it covers image uploads: a body that would pass it while others
are held is refused with 429 before it is read, and every body's share is given back when
its reply is sent. A real aiohttp server on loopback and a real HTTP client; the fleet is a
stand-in that holds each request until the test lets it go (the end-to-end tests of
test_http_api.py run the real one)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from mdp_http.api import Api
from mdp_http.bodies import Budget
from mdp_http.metrics import GatewayMetrics


class HeldFleet:
    """Answers each request with its size once ``release`` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.arrived = asyncio.Event()

    async def send(self, service: str, request: dict[str, Any]) -> Any:
        self.arrived.set()
        await asyncio.wait_for(self.release.wait(), 10)
        return {"size": len(request["blob"])}


def test_api_bodies_count_toward_the_inflight_bound() -> None:
    async def scenario() -> None:
        fleet = HeldFleet()
        budget = Budget(1000)
        api = Api(fleet, GatewayMetrics(CollectorRegistry()), None,  # type: ignore[arg-type]
                  max_concurrency=8, max_body_bytes=10_000, body_timeout_s=5.0,
                  known_services=lambda: {"echo"}, service_info=lambda service: None,
                  budget=budget)
        app = web.Application()
        app.add_routes(api.routes())
        async with TestServer(app, host="127.0.0.1") as server, \
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            url = str(server.make_url("/v1/echo"))
            body = {"blob": "x" * 600}  # about 615 bytes of JSON
            first = asyncio.create_task(http.post(url, json=body))
            await asyncio.wait_for(fleet.arrived.wait(), 10)
            assert 600 < budget.held < 1000
            async with http.post(url, json=body) as refused:
                assert refused.status == 429 and refused.headers["Retry-After"] == "1"
                assert "max-inflight-bytes" in (await refused.json())["error"]["message"]
            fleet.release.set()
            async with await first as answered:
                assert answered.status == 200 and (await answered.json()) == {"size": 600}
            assert budget.held == 0
            async with http.post(url, json=body) as again:  # the share was given back
                assert again.status == 200

    asyncio.run(scenario())
