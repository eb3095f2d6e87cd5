"""The source guard's harder cases: one deadline over every phase, addresses that are never
a source, redirects out of http(s), encoded bodies, settings that change, hostile local files.

As in test_sources.py, nothing here sends traffic anywhere but loopback, even with a broken
guard: names resolve through stubs, and a connector that fails the test stands behind every
refusal that must come before connecting.
"""

from __future__ import annotations

import gzip
import ipaddress
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from renderer_testing import *  # noqa: F403  (the fixtures; first: see there)
from source_server import SourceServer, running, running_tls

from renderers import samples, settings, sources
from renderers.sources import local, origins
from renderers.sources.errors import (
    SourceError,
    SourceForbidden,
    SourceNotFound,
    SourceNotImage,
    SourceTimeout,
)
from renderers.sources.remote import Connector, HttpFetcher
from testkit import free_ports

JPEG = samples.photo_jpeg(64, 48)
PUBLIC = "93.184.216.34"
ALLOWED = settings.Settings(sources_allow=("https://img.example.com",))


@pytest.fixture
def server() -> Iterator[SourceServer]:
    with running() as srv:
        yield srv


def loopback(srv: SourceServer, **changes: Any) -> settings.Settings:
    return settings.Settings(sources_internal=(srv.origin,), **changes)


def never_connect(*args: Any) -> Any:
    pytest.fail(f"the fetcher tried to connect: {args[:2]}")


class Redirecting:
    """A connector that answers every request with a redirect to ``location``."""

    def __init__(self, location: str) -> None:
        self.location = location
        self.hosts: list[str] = []

    def __call__(self, target: Any, ip: str, headers: dict[str, str], timeout: float) -> Any:
        self.hosts.append(target.host)
        if len(self.hosts) > 1:
            pytest.fail(f"followed a redirect to {target.url}")
        return _Redirect(self.location)


class _Redirect:
    status = 302

    def __init__(self, location: str) -> None:
        self.headers = {"location": location}

    def read1(self, amt: int | None = None) -> bytes:
        return b""

    def release_conn(self) -> None:
        pass

    def close(self) -> None:
        pass


# one deadline over every phase of a fetch --------------------------------------------------


@pytest.mark.timeout(60)
def test_headers_that_trickle_are_cut_at_the_deadline(server: SourceServer) -> None:
    # Every header byte arrives long before any read timeout: only one deadline over the
    # whole fetch ends it (else it runs until http.client's line limit, ~50 minutes).
    server.trickle_headers("/slow.jpg")
    with pytest.raises(SourceTimeout) as caught:
        HttpFetcher().fetch(server.url("/slow.jpg"), loopback(server, source_timeout=0.5))
    assert caught.value.code == "source_timeout" and caught.value.field == "source"


@pytest.mark.timeout(60)
def test_https_headers_that_trickle_are_cut_at_the_deadline(tmp_path: Path) -> None:
    with running_tls(tmp_path) as (srv, cert, _):
        srv.trickle_headers("/slow.jpg")
        origin = f"https://img.test:{srv.port}"
        fetcher = HttpFetcher(
            resolver=lambda host, port: ["127.0.0.1"], connector=Connector(ca_certs=cert)
        )
        with pytest.raises(SourceTimeout):
            fetcher.fetch(
                origin + "/slow.jpg",
                settings.Settings(sources_internal=(origin,), source_timeout=0.5),
            )


def test_a_name_that_takes_too_long_to_resolve_is_cut_at_the_deadline() -> None:
    release = threading.Event()

    def slow_resolver(host: str, port: int) -> list[str]:
        release.wait(30)  # a DNS server that does not answer
        return [PUBLIC]

    fetcher = HttpFetcher(resolver=slow_resolver, connector=never_connect)
    try:
        with pytest.raises(SourceTimeout, match="img.example.com"):
            fetcher.fetch(
                "https://img.example.com/a.jpg",
                settings.Settings(sources_allow=ALLOWED.sources_allow, source_timeout=0.2),
            )
    finally:
        release.set()


# connections that fail ---------------------------------------------------------------------


def test_a_refused_connection_is_a_source_error_not_a_timeout() -> None:
    (port,) = free_ports(1)  # nothing listens there
    origin = f"http://127.0.0.1:{port}"
    with pytest.raises(SourceError) as caught:
        HttpFetcher().fetch(origin + "/a.jpg", settings.Settings(sources_internal=(origin,)))
    assert caught.value.code == "source_error" and "refused" in caught.value.message


def test_the_next_checked_address_is_tried_when_one_refuses(server: SourceServer) -> None:
    # A name with an IPv6 and an IPv4 address, the origin serving on IPv4 only (as on a
    # host without IPv6 routes): the first refuses, the second answers.
    server.serve("/a.jpg", JPEG)
    origin = f"http://img.test:{server.port}"
    fetcher = HttpFetcher(resolver=lambda host, port: ["::1", "127.0.0.1"])
    fetched = fetcher.fetch(origin + "/a.jpg", settings.Settings(sources_internal=(origin,)))
    assert fetched.data == JPEG and server.hits["/a.jpg"] == 1


# addresses that are never a source --------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "what"),
    [
        ("169.254.169.254", "link-local"),  # the cloud's instance metadata
        ("169.254.170.2", "link-local"),
        ("fe80::1", "link-local"),
        ("::ffff:169.254.169.254", "link-local"),
        ("64:ff9b::a9fe:a9fe", "link-local"),
        ("2002:a9fe:a9fe::", "link-local"),
        ("0.1.2.3", "unspecified"),  # 0.0.0.0/8, "this network"
        ("::ffff:0.0.0.1", "unspecified"),
    ],
)
def test_link_local_and_this_network_are_refused_even_for_internal_origins(
    address: str, what: str
) -> None:
    assert origins.classify(ipaddress.ip_address(address)) == (what, False)


def test_site_local_ipv6_is_not_public() -> None:
    assert origins.classify(ipaddress.ip_address("fec0::1")) == ("site-local", True)


@pytest.mark.parametrize("answers", [["169.254.169.254"], ["fe80::1"], ["0.1.2.3"]])
def test_an_internal_origin_that_resolves_to_link_local_is_refused_before_connecting(
    answers: list[str],
) -> None:
    fetcher = HttpFetcher(resolver=lambda host, port: answers, connector=never_connect)
    with pytest.raises(SourceForbidden, match="address"):
        fetcher.fetch(
            "http://images.internal/a.jpg",
            settings.Settings(sources_internal=("http://images.internal",)),
        )


# redirects out of http(s) ------------------------------------------------------------------


@pytest.mark.parametrize(
    "location",
    [
        "local:///photos/a.jpg",
        "file:///etc/passwd",
        "gopher://img.example.com/",
        "https://user:pw@img.example.com/a.jpg",
    ],
)
def test_a_redirect_out_of_plain_http_is_forbidden_not_the_callers_mistake(
    location: str,
) -> None:
    connector = Redirecting(location)
    fetcher = HttpFetcher(resolver=lambda host, port: [PUBLIC], connector=connector)
    with pytest.raises(SourceForbidden, match="redirect") as caught:
        fetcher.fetch("https://img.example.com/a.jpg", ALLOWED)
    assert caught.value.code == "source_forbidden" and connector.hosts == ["img.example.com"]


# bodies: never decompressed ----------------------------------------------------------------


def test_an_encoded_body_is_never_inflated(server: SourceServer) -> None:
    # 64 MiB of zeros in 64 KB: inflated, it would blow the size limit's purpose. The guard
    # asks for identity, reads the bytes as sent, and refuses them by their magic bytes.
    bomb = gzip.compress(bytes(64 << 20), compresslevel=9)
    server.encoded("/bomb.jpg", bomb, "gzip")
    server.encoded("/photo.jpg", gzip.compress(JPEG), "gzip")
    for path in ("/bomb.jpg", "/photo.jpg"):
        with pytest.raises(SourceNotImage, match=r"\\x1f\\x8b"):
            HttpFetcher().fetch(server.url(path), loopback(server, source_max_bytes=1 << 20))
    assert {request.get("Accept-Encoding") for request in server.requests} == {"identity"}


# settings that change ----------------------------------------------------------------------


def test_a_cached_source_is_not_served_once_its_origin_is_no_longer_allowed(
    server: SourceServer,
) -> None:
    server.serve("/a.jpg", JPEG, etag='"a"')
    own = sources.Sources()
    assert own.load(server.url("/a.jpg"), loopback(server)).data == JPEG
    with pytest.raises(SourceForbidden, match="not allowed"):
        own.load(server.url("/a.jpg"), settings.Settings())
    with pytest.raises(SourceForbidden, match="loopback"):
        own.load(server.url("/a.jpg"), settings.Settings(sources_allow=(server.origin,)))
    assert server.hits["/a.jpg"] == 1


# local roots -------------------------------------------------------------------------------


@pytest.fixture
def root(tmp_path: Path) -> Path:
    base = tmp_path / "root"
    (base / "photos").mkdir(parents=True)
    (base / "photos" / "a.jpg").write_bytes(JPEG)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "a.jpg").write_bytes(JPEG)
    os.symlink(outside, base / "elsewhere")
    return base


@pytest.mark.parametrize(
    "url",
    [
        "local:///elsewhere/a.jpg",  # a symlinked directory that leads out
        "local:///photos/a.jpg%00.png",
        "local:///photos%2f..%2f..%2foutside/a.jpg",
        "local:///photos/..%5c..%5coutside/a.jpg",
        "local:///photos\\..\\..\\outside\\a.jpg",
        "local:///%2e%2e/outside/a.jpg",
        "local:///photos/%2E%2E/%2E%2E/outside/a.jpg",
    ],
)
def test_more_ways_out_of_a_root_are_refused(root: Path, url: str) -> None:
    with pytest.raises(SourceForbidden):
        sources.Sources().load(url, settings.Settings(sources_roots=(str(root),)))


def test_an_absolute_path_is_looked_up_under_the_root(root: Path) -> None:
    limits = settings.Settings(sources_roots=(str(root),))
    with pytest.raises(SourceNotFound):
        sources.Sources().load("local:////etc/hostname", limits)
    assert sources.Sources().load("local:////photos/a.jpg", limits).data == JPEG


@pytest.mark.timeout(30)
def test_a_file_swapped_for_a_fifo_after_the_check_is_refused_not_waited_on(
    root: Path,
) -> None:
    found = local.find("local:///photos/a.jpg", settings.Settings(sources_roots=(str(root),)))
    os.unlink(found.path)
    os.mkfifo(found.path)  # nobody will ever write to it: opening it to read would block
    with pytest.raises(SourceNotFound, match="regular file"):
        local.open_file(found, settings.Settings(sources_roots=(str(root),)))
