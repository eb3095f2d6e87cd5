"""Revalidation of cached results at the door, without brokers: a fresh result is answered
as it is, one past its TTL is sent to the workers with its source's validators
(``if_changed``) and kept when they say the source is unchanged (X-Cache: REVALIDATED),
rendered again when it changed; in Redis a result carries the time it was last checked, so
every door sees the same freshness. The fleet here is a stand-in that records what it is
asked (the end-to-end tests in test_imageserver.py run the real one); Redis is a real
redis-server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from imagekit import REDIS_SERVER, redis_server
from prometheus_client import CollectorRegistry

from clusterkit import needs
from mdp.errors import BadRequest
from mdp_http.config import HttpConfig
from mdp_http.images import Ask, ImageServer
from mdp_http.resultcache import Cached, Entry, RedisCache

TTL_S = 60.0
KEEP_S = 600.0
V1 = {"etag": '"v1"', "last_modified": "Sun, 06 Dec 2026 07:00:00 GMT"}
SOURCE = {"etag": V1["etag"], "last_modified": V1["last_modified"], "length": 9}


class Fleet:
    """What the door sends (service, request, key), answered from ``answers`` in turn."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any], bytes]] = []
        self.answers: list[Any] = []

    async def send_keyed(self, service: str, request: dict[str, Any], key: bytes) -> Any:
        self.calls.append((service, request, key))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def rendered(image: bytes, source: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"image": image, "content_type": "image/jpeg", "width": 3, "height": 2,
            "source": dict(SOURCE) if source is None else source}


class Door:
    """An ImageServer on a stand-in fleet, its clocks (monotonic and wall) in the test's
    hands."""

    def __init__(self, redis_url: str | None = None) -> None:
        self.now = 1_000.0
        self.fleet = Fleet()
        config = HttpConfig(brokers=["tcp://127.0.0.1:1"], cache_ttl_s=TTL_S,
                            cache_keep_s=KEEP_S, redis=redis_url)
        self.registry = CollectorRegistry()
        self.server = ImageServer(config, self.fleet, None,  # type: ignore[arg-type]
                                  self.registry, self._version)
        self.server.cache.memory.clock = lambda: self.now
        if self.server.shared is not None:
            self.server.shared.wall = lambda: self.now
        request: dict[str, Any] = {"source": "http://origin.test/a.jpg", "ops": {},
                                   "format": "jpeg", "accept": [], "quality": None}
        self.ask = Ask("imgproxy", request, b"k" * 32, False, None)

    @staticmethod
    async def _version(service: str) -> str:
        return "1"

    async def get(self, if_none_match: str = "") -> tuple[int, dict[str, str], bytes]:
        headers = {"If-None-Match": if_none_match} if if_none_match else {}
        request = make_mocked_request("GET", "/x/plain/http://origin.test/a.jpg",
                                      headers=headers)
        response = await self.server._answer(request, self.ask,
                                             lambda: self.server._render(self.ask))
        await self.settle()
        assert isinstance(response, web.Response)
        body = response.body or b""
        assert isinstance(body, bytes | bytearray)
        return response.status, dict(response.headers), bytes(body)

    async def settle(self) -> None:
        """Wait for the shared cache's background writes."""
        while self.server._background:
            await asyncio.gather(*self.server._background, return_exceptions=True)

    def revalidated(self, outcome: str) -> float | None:
        return self.registry.get_sample_value("dips_http_revalidated_total",
                                              {"outcome": outcome})


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_a_fresh_result_is_answered_without_asking_the_workers() -> None:
    async def go() -> None:
        door = Door()
        door.fleet.answers = [rendered(b"one")]
        status, first, body = await door.get()
        assert (status, first["X-Cache"], body) == (200, "MISS", b"one")
        assert "if_changed" not in door.fleet.calls[0][1]
        door.now += TTL_S - 1
        status, again, body = await door.get()
        assert (status, again["X-Cache"], again["ETag"], body) == (200, "HIT", first["ETag"],
                                                                    b"one")
        status, _, empty = await door.get(if_none_match=first["ETag"])
        assert (status, empty) == (304, b"")
        assert len(door.fleet.calls) == 1

    run(go())


def test_a_stale_result_whose_source_is_unchanged_is_kept_without_a_render() -> None:
    async def go() -> None:
        door = Door()
        door.fleet.answers = [rendered(b"one"), {"unchanged": True}]
        _, first, _ = await door.get()
        door.now += TTL_S + 1
        status, again, body = await door.get()
        assert (status, again["X-Cache"], again["ETag"], body) == (
            200, "REVALIDATED", first["ETag"], b"one")
        service, request, key = door.fleet.calls[1]
        assert request["if_changed"] == V1 and service == "imgproxy"
        assert request["source"] == door.ask.request["source"]
        assert key != door.ask.key  # not the render's coalescing key
        # fresh again for a whole TTL from the check: no more questions meanwhile
        door.now += TTL_S - 1
        status, third, _ = await door.get(if_none_match=first["ETag"])
        assert (status, third["ETag"]) == (304, first["ETag"])
        assert len(door.fleet.calls) == 2
        assert door.revalidated("unchanged") == 1 and door.revalidated("changed") is None

    run(go())


def test_a_stale_result_whose_source_changed_is_rendered_again_with_a_new_etag() -> None:
    async def go() -> None:
        door = Door()
        v2 = {**SOURCE, "etag": '"v2"'}
        door.fleet.answers = [rendered(b"one"), rendered(b"two", v2)]
        _, first, _ = await door.get()
        door.now += TTL_S + 1
        status, after, body = await door.get(if_none_match=first["ETag"])
        assert (status, after["X-Cache"], body) == (200, "MISS", b"two")
        assert after["ETag"] != first["ETag"]
        assert door.fleet.calls[1][1]["if_changed"] == V1
        status, again, body = await door.get()
        assert (status, again["X-Cache"], again["ETag"], body) == (200, "HIT", after["ETag"],
                                                                    b"two")
        assert len(door.fleet.calls) == 2
        assert door.revalidated("changed") == 1 and door.revalidated("unchanged") is None

    run(go())


def test_a_stale_result_without_validators_is_rendered_again() -> None:
    async def go() -> None:
        door = Door()
        door.fleet.answers = [rendered(b"one", {"length": 3}), rendered(b"two", {"length": 3})]
        await door.get()
        door.now += TTL_S + 1
        status, again, body = await door.get()
        assert (status, again["X-Cache"], body) == (200, "MISS", b"two")
        assert "if_changed" not in door.fleet.calls[1][1]

    run(go())


def test_a_worker_that_does_not_take_if_changed_gets_a_plain_render() -> None:
    async def go() -> None:
        door = Door()
        door.fleet.answers = [rendered(b"one"),
                              BadRequest("unknown field", field="if_changed"),
                              rendered(b"two")]
        await door.get()
        door.now += TTL_S + 1
        status, again, body = await door.get()
        assert (status, again["X-Cache"], body) == (200, "MISS", b"two")
        assert "if_changed" not in door.fleet.calls[2][1]

    run(go())


def test_a_result_past_keep_is_gone_and_rendered_without_revalidation() -> None:
    async def go() -> None:
        door = Door()
        door.fleet.answers = [rendered(b"one"), rendered(b"two")]
        await door.get()
        door.now += KEEP_S + 1
        status, again, body = await door.get()
        assert (status, again["X-Cache"], body) == (200, "MISS", b"two")
        assert "if_changed" not in door.fleet.calls[1][1]

    run(go())


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    with redis_server(tmp_path) as redis:
        yield redis.url


@needs(REDIS_SERVER is not None, "redis-server")
def test_a_redis_value_carries_its_last_check_and_its_freshness_follows_it(
        redis_url: str) -> None:
    async def go() -> None:
        now = [5_000.0]
        cache = RedisCache(redis_url, TTL_S, keep_s=KEEP_S, wall=lambda: now[0])
        entry = Entry(b"img", "image/jpeg", 3, 2, V1["etag"], V1["last_modified"])
        try:
            await cache.put(b"k", entry)
            raw = await cache._client.get(b"dips:img:k")
            assert Entry.read(raw) == (entry, 5_000.0)
            assert 0 < await cache._client.pttl(b"dips:img:k") <= KEEP_S * 1000
            now[0] += 20
            assert await cache.lookup(b"k") == (Cached(entry, True), pytest.approx(40.0))
            now[0] += 41
            assert await cache.lookup(b"k") == (Cached(entry, False), 0.0)
            assert await cache.get(b"k") is None  # get: fresh entries only
            await cache.put(b"k", entry)  # revalidated: checked now
            assert await cache.lookup(b"k") == (Cached(entry, True), pytest.approx(TTL_S))
            # a value written by an older door (no last check) is fresh for a TTL
            await cache._client.set(b"dips:img:old", entry.to_bytes())
            assert await cache.lookup(b"old") == (Cached(entry, True), TTL_S)
        finally:
            await cache.close()

    run(go())


@needs(REDIS_SERVER is not None, "redis-server")
def test_one_doors_revalidation_is_every_doors_through_redis(redis_url: str) -> None:
    """Door A renders and later revalidates; door B, whose own copy went stale, takes the
    check A wrote to Redis and asks no worker."""
    async def go() -> None:
        a, b = Door(redis_url), Door(redis_url)
        try:
            a.fleet.answers = [rendered(b"one"), {"unchanged": True}]
            _, first, _ = await a.get()
            status, seen, _ = await b.get()
            assert (status, seen["X-Cache"], seen["ETag"]) == (200, "HIT", first["ETag"])
            for door in (a, b):
                door.now += TTL_S + 1
            status, again, _ = await a.get()
            assert again["X-Cache"] == "REVALIDATED"
            status, seen, body = await b.get()
            assert (status, seen["X-Cache"], seen["ETag"], body) == (200, "HIT", first["ETag"],
                                                                      b"one")
            assert b.fleet.calls == [] and len(a.fleet.calls) == 2
        finally:
            await a.server.close()
            await b.server.close()

    run(go())
