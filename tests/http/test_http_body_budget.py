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
from mdp_http.config import HttpConfig
from mdp_http.images import ImageServer
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


def api_app(fleet: HeldFleet, budget: Budget, body_timeout_s: float,
            max_body_bytes: int) -> web.Application:
    """The door's /v1 routes on ``fleet`` with ``budget``."""
    api = Api(fleet, GatewayMetrics(CollectorRegistry()), None,  # type: ignore[arg-type]
              max_concurrency=8, max_body_bytes=max_body_bytes, body_timeout_s=body_timeout_s,
              known_services=lambda: {"echo"}, service_info=lambda service: None,
              budget=budget)
    app = web.Application()
    app.add_routes(api.routes())
    return app


def test_api_bodies_count_toward_the_inflight_bound() -> None:
    async def scenario() -> None:
        fleet = HeldFleet()
        budget = Budget(1000)
        app = api_app(fleet, budget, body_timeout_s=5.0, max_body_bytes=10_000)
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


def test_a_sender_that_falls_behind_its_pace_gives_its_share_back_long_before_the_timeout(
        ) -> None:
    """A client declares a large body and trickles it: it holds its share of the budget
    only while it keeps the pace its size needs. Here the body timeout is 300 s; the
    trickler is answered 408 soon after the 2 s grace (the wait allows 60 s), its share
    given back while its connection is still open, and a body that needs the whole
    budget is taken again."""
    async def scenario() -> None:
        fleet = HeldFleet()
        fleet.release.set()
        budget = Budget(100_000)
        app = api_app(fleet, budget, body_timeout_s=300.0, max_body_bytes=1_000_000)
        async with TestServer(app, host="127.0.0.1") as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"POST /v1/echo HTTP/1.1\r\nHost: door\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 90000\r\n\r\n"
                         b'{"blob": "')  # ...and nothing more
            await writer.drain()
            async with asyncio.timeout(60):
                status = await reader.readline()
            assert b" 408 " in status, status
            assert budget.held == 0
            writer.close()
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
                body = {"blob": "x" * 90_000}
                async with http.post(str(server.make_url("/v1/echo")), json=body) as taken:
                    assert taken.status == 200

    asyncio.run(scenario())


def test_an_image_upload_that_falls_behind_its_pace_gives_its_share_back() -> None:
    """The same rule for an image POSTed to an image URL (the door's largest bodies)."""
    async def scenario() -> None:
        config = HttpConfig(brokers=["tcp://127.0.0.1:1"], body_timeout_s=300.0,
                            max_inflight_bytes=10_000_000)

        async def version(service: str) -> str:
            return "1"

        images = ImageServer(config, HeldFleet(), None,  # type: ignore[arg-type]
                             CollectorRegistry(), version)
        app = web.Application()
        app.add_routes(images.routes())
        async with TestServer(app, host="127.0.0.1") as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"POST /unsafe/w:40/upload.png HTTP/1.1\r\nHost: door\r\n"
                         b"Content-Type: image/jpeg\r\nContent-Length: 5000000\r\n\r\n"
                         b"\xff\xd8\xff\xe0")  # a JPEG's first bytes, and no more
            await writer.drain()
            async with asyncio.timeout(60):
                status = await reader.readline()
            assert b" 408 " in status, status
            assert images.budget.held == 0
            writer.close()

    asyncio.run(scenario())
