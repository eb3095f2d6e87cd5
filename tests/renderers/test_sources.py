"""Sources fetched by the worker: allow-list, address checks, bounds, roots, the cache.

Nothing here sends traffic anywhere but loopback, even with a broken guard: refusals of
private, link-local and other addresses use a stub resolver and a connector that fails the
test if it is ever reached; hostile origins are real servers on 127.0.0.1.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from renderer_testing import *  # noqa: F403  (the fixtures; first: see there)
from source_server import SourceServer, running, running_tls

import renderers
from mdp.errors import BadRequest, ConfigError
from mdpctl import flags as mdpctl_flags
from renderers import samples, settings, sources
from renderers.sources import origins
from renderers.sources.errors import (
    SourceError,
    SourceForbidden,
    SourceNotFound,
    SourceNotImage,
    SourceTimeout,
    SourceTooLarge,
)
from renderers.sources.remote import Fetched, HttpFetcher

JPEG = samples.photo_jpeg(64, 48)


@pytest.fixture
def server() -> Iterator[SourceServer]:
    with running() as srv:
        yield srv


@pytest.fixture
def other() -> Iterator[SourceServer]:
    with running() as srv:
        yield srv


def limits(**changes: Any) -> settings.Settings:
    return settings.Settings(**changes)


def never_connect(*args: Any) -> Any:
    pytest.fail(f"the fetcher tried to connect: {args[:2]}")


def stub_resolver(answers: dict[str, list[str]]) -> Any:
    asked: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        return answers[host]

    resolve.asked = asked  # type: ignore[attr-defined]
    return resolve


# origins and addresses: decisions without I/O -----------------------------------------------


@pytest.mark.parametrize(
    "entry",
    [
        "img.example.com",
        "ftp://x",
        "https://",
        "https://a@b.example",
        "https://x/path",
        "https://a.*.example",
        "https://x:99999",
    ],
)
def test_an_allow_list_entry_must_be_an_origin(entry: str) -> None:
    with pytest.raises(ConfigError):
        origins.parse_pattern(entry, "sources_allow")


def test_wildcards_match_subdomains_only() -> None:
    pattern = origins.parse_pattern("https://*.example.com", "sources_allow")
    assert pattern.matches("https", "img.example.com", 443)
    assert pattern.matches("https", "a.b.example.com", 443)
    assert not pattern.matches("https", "example.com", 443)
    assert not pattern.matches("https", "evilexample.com", 443)
    assert not pattern.matches("http", "img.example.com", 80)
    assert not pattern.matches("https", "img.example.com", 8443)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://img.example.com/a.jpg",
        "https://user:pw@img.example.com/a.jpg",
        "https:///a.jpg",
        "https://img.example.com/a b.jpg",
        "https://img.example.com:http/a.jpg",
        "file:///etc/passwd",
    ],
)
def test_only_plain_http_urls_pass(url: str) -> None:
    with pytest.raises(BadRequest):
        origins.parse_url(url)


@pytest.mark.parametrize(
    ("address", "what", "internal_may"),
    [
        ("127.0.0.1", "loopback", True),
        ("::1", "loopback", True),
        ("10.1.2.3", "private", True),
        ("172.16.0.1", "private", True),
        ("192.168.1.1", "private", True),
        ("169.254.169.254", "link-local", False),
        ("fe80::1", "link-local", False),
        ("fd00::1", "private", True),
        ("100.64.0.1", "non-global", True),
        ("0.0.0.0", "unspecified", False),
        ("::", "unspecified", False),
        ("224.0.0.1", "multicast", False),
        ("ff02::1", "multicast", False),
        ("240.0.0.1", "reserved", False),
        ("255.255.255.255", "reserved", False),
        ("::ffff:10.0.0.1", "private", True),
        ("64:ff9b::a9fe:a9fe", "link-local", False),
        ("2002:7f00:1::", "loopback", True),
    ],
)
def test_addresses_are_classified(address: str, what: str, internal_may: bool) -> None:
    import ipaddress

    assert origins.classify(ipaddress.ip_address(address)) == (what, internal_may)


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:2800:220:1::1"])
def test_public_addresses_pass(address: str) -> None:
    import ipaddress

    assert origins.classify(ipaddress.ip_address(address)) is None


# the fetcher with a stub resolver and a connector that must never be reached ---------------

ALLOWED = limits(sources_allow=("https://img.example.com",))


@pytest.mark.parametrize(
    "answers",
    [
        ["10.0.0.7"],
        ["169.254.169.254"],
        ["127.0.0.1"],
        ["fe80::1"],
        ["0.0.0.0"],
        ["93.184.216.34", "192.168.0.10"],
        ["::ffff:169.254.169.254"],
        [],
    ],
)
def test_a_name_that_resolves_to_a_forbidden_address_is_refused_before_connecting(
    answers: list[str],
) -> None:
    resolver = stub_resolver({"img.example.com": answers})
    fetcher = HttpFetcher(resolver=resolver, connector=never_connect)
    with pytest.raises(SourceForbidden) as caught:
        fetcher.fetch("https://img.example.com/a.jpg", ALLOWED)
    assert caught.value.code == "source_forbidden" and caught.value.field == "source"
    assert resolver.asked == ["img.example.com"]


def test_an_origin_not_listed_is_refused_before_resolving() -> None:
    resolver = stub_resolver({})
    fetcher = HttpFetcher(resolver=resolver, connector=never_connect)
    for url in (
        "https://evil.example/a.jpg",
        "http://img.example.com/a.jpg",
        "https://img.example.com:8443/a.jpg",
        "https://img.example.com.evil.example/",
    ):
        with pytest.raises(SourceForbidden, match="not allowed"):
            fetcher.fetch(url, ALLOWED)
    assert resolver.asked == []


class FakeResponse:
    def __init__(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
        self.status = status
        self.headers = {k.lower(): v for k, v in headers.items()}
        self._body = [body] if body else []
        self.closed = False

    def read1(self, amt: int | None = None) -> bytes:
        return self._body.pop(0) if self._body else b""

    def release_conn(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def test_connects_to_the_checked_address_with_the_url_host() -> None:
    seen: list[tuple[str, str, str]] = []

    def connector(target: Any, ip: str, headers: dict[str, str], timeout: float) -> FakeResponse:
        seen.append((target.host, ip, headers["Host"]))
        return FakeResponse(200, {"ETag": '"v1"'}, JPEG)

    resolver = stub_resolver({"img.example.com": ["93.184.216.34"]})
    fetched = HttpFetcher(resolver=resolver, connector=connector).fetch(
        "https://img.example.com/a.jpg", ALLOWED
    )
    assert fetched.data == JPEG and fetched.etag == '"v1"'
    assert seen == [("img.example.com", "93.184.216.34", "img.example.com")]
    assert resolver.asked == ["img.example.com"]  # resolved once: no second lookup to rebind


def test_each_redirect_hop_is_checked_again() -> None:
    hops: list[str] = []

    def connector(target: Any, ip: str, headers: dict[str, str], timeout: float) -> FakeResponse:
        hops.append(target.host)
        if target.host == "img.example.com":
            return FakeResponse(302, {"Location": "https://cdn.example.com/b.jpg"})
        pytest.fail("connected to the redirect target, which resolves to a private address")

    resolver = stub_resolver(
        {"img.example.com": ["93.184.216.34"], "cdn.example.com": ["10.0.0.1"]}
    )
    both = limits(sources_allow=("https://img.example.com", "https://cdn.example.com"))
    with pytest.raises(SourceForbidden, match="private"):
        HttpFetcher(resolver=resolver, connector=connector).fetch(
            "https://img.example.com/a.jpg", both
        )
    assert hops == ["img.example.com"] and resolver.asked == ["img.example.com", "cdn.example.com"]


def test_redirects_are_bounded() -> None:
    def connector(target: Any, ip: str, headers: dict[str, str], timeout: float) -> FakeResponse:
        return FakeResponse(302, {"Location": "/again"})

    resolver = stub_resolver({"img.example.com": ["93.184.216.34"]})
    fetcher = HttpFetcher(resolver=resolver, connector=connector)
    with pytest.raises(SourceError, match="more than 2 redirects"):
        fetcher.fetch(
            "https://img.example.com/a.jpg",
            limits(sources_allow=("https://img.example.com",), source_max_redirects=2),
        )
    assert len(resolver.asked) == 3


# a real server on loopback ------------------------------------------------------------------


def loopback(srv: SourceServer, **changes: Any) -> settings.Settings:
    return limits(sources_internal=(srv.origin,), **changes)


def test_an_allowed_internal_origin_is_fetched(server: SourceServer) -> None:
    server.serve("/a.jpg", JPEG, etag='"a"')
    fetched = HttpFetcher().fetch(server.url("/a.jpg"), loopback(server))
    assert (fetched.data, fetched.etag) == (JPEG, '"a"')


def test_a_loopback_origin_not_listed_is_refused_and_never_contacted(
    server: SourceServer,
) -> None:
    server.serve("/a.jpg", JPEG)
    with pytest.raises(SourceForbidden, match="not allowed"):
        HttpFetcher().fetch(server.url("/a.jpg"), limits())
    with pytest.raises(SourceForbidden, match="loopback"):  # allowed, but not as internal
        HttpFetcher().fetch(server.url("/a.jpg"), limits(sources_allow=(server.origin,)))
    assert sum(server.hits.values()) == 0


def test_an_allowed_origin_that_redirects_to_another_is_refused(
    server: SourceServer, other: SourceServer
) -> None:
    other.serve("/secret.jpg", JPEG)
    server.redirect("/a.jpg", other.url("/secret.jpg"))
    with pytest.raises(SourceForbidden, match="not allowed"):
        HttpFetcher().fetch(server.url("/a.jpg"), loopback(server))
    assert server.hits["/a.jpg"] == 1
    assert sum(other.hits.values()) == 0


def test_a_redirect_within_the_origin_is_followed(server: SourceServer) -> None:
    server.serve("/b.jpg", JPEG)
    server.redirect("/a.jpg", "/b.jpg", status=301)
    assert HttpFetcher().fetch(server.url("/a.jpg"), loopback(server)).data == JPEG


def test_a_source_over_the_size_limit_is_refused(server: SourceServer) -> None:
    server.serve("/big.jpg", JPEG)
    server.lying_length("/claims.jpg", 10**9)
    server.endless("/endless.jpg", b"\xff\xd8\xff" + b"\0" * 65_000)
    small = loopback(server, source_max_bytes=len(JPEG) - 1)
    for path in ("/big.jpg", "/claims.jpg", "/endless.jpg"):
        with pytest.raises(SourceTooLarge) as caught:
            HttpFetcher().fetch(server.url(path), small)
        assert caught.value.code == "source_too_large"


def test_a_trickling_source_is_cut_at_the_deadline(server: SourceServer) -> None:
    server.trickle("/slow.jpg", JPEG[:100])
    with pytest.raises(SourceTimeout) as caught:
        HttpFetcher().fetch(server.url("/slow.jpg"), loopback(server, source_timeout=0.3))
    assert caught.value.code == "source_timeout"


def test_a_source_that_is_not_an_image_is_refused(server: SourceServer) -> None:
    server.serve("/page.jpg", b"<html>" + b"x" * 5000, content_type="image/jpeg")
    with pytest.raises(SourceNotImage):
        HttpFetcher().fetch(server.url("/page.jpg"), loopback(server))


def test_missing_and_failing_sources(server: SourceServer) -> None:
    with pytest.raises(SourceNotFound):
        HttpFetcher().fetch(server.url("/nothing.jpg"), loopback(server))
    server.routes["/broken.jpg"] = lambda h: h.send_error(500)
    with pytest.raises(SourceError, match="answered 500") as caught:
        HttpFetcher().fetch(server.url("/broken.jpg"), loopback(server))
    assert caught.value.code == "source_error"


# the cache ---------------------------------------------------------------------------------


def test_five_loads_of_one_source_fetch_it_once(server: SourceServer) -> None:
    server.serve("/a.jpg", JPEG, etag='"a"')
    own = sources.Sources()
    for _ in range(5):
        assert own.load(server.url("/a.jpg"), loopback(server)).data == JPEG
    assert server.hits["/a.jpg"] == 1 and own.fetches == 1


def test_a_stale_entry_is_revalidated_with_its_etag(server: SourceServer) -> None:
    server.serve("/a.jpg", JPEG, etag='"a"')
    own = sources.Sources()
    stale = loopback(server, source_cache_ttl=0)
    first = own.load(server.url("/a.jpg"), stale)
    second = own.load(server.url("/a.jpg"), stale)
    assert first == second and first.etag == '"a"'
    assert server.hits["/a.jpg"] == 2 and server.conditional == 1 and own.fetches == 1


def test_a_caller_that_knows_the_version_gets_a_304_without_bytes(server: SourceServer) -> None:
    """Not in this process's cache: asked for conditionally with the caller's validators."""
    server.serve("/a.jpg", JPEG, etag='"a"')
    own = sources.Sources()
    with own.load(server.url("/a.jpg"), loopback(server), {"etag": '"a"'}) as same:
        assert same.not_modified and same.matches({"etag": '"a"'})
        assert same.describe() == {"etag": '"a"'}  # no length: no bytes came
    assert server.hits["/a.jpg"] == 1 and server.conditional == 1 and own.fetches == 0
    assert server.requests[-1]["If-None-Match"] == '"a"'
    changed = own.load(server.url("/a.jpg"), loopback(server), {"etag": '"old"'})
    assert changed.data == JPEG and not changed.matches({"etag": '"old"'})
    assert changed.matches({"etag": '"a"', "last_modified": "whatever"})
    # fresh in the cache now: no request at all, and it is compared as it is
    assert own.load(server.url("/a.jpg"), loopback(server), {"etag": '"a"'}).matches(
        {"etag": '"a"'})
    assert server.hits["/a.jpg"] == 2


def test_validators_are_compared_by_etag_else_by_date() -> None:
    dated = sources.Source.of(JPEG, None, "Sun, 06 Dec 2026 07:00:00 GMT")
    assert dated.matches({"last_modified": "Sun, 06 Dec 2026 07:00:00 GMT"})
    assert not dated.matches({"last_modified": "Sat, 05 Dec 2026 07:00:00 GMT"})
    assert not dated.matches({"etag": '"x"', "last_modified": "Sun, 06 Dec 2026 07:00:00 GMT"})
    assert not sources.Source.of(JPEG, '"x"').matches({"last_modified": "any"})
    assert not sources.Source.of(JPEG).matches({})


@pytest.mark.parametrize(
    "value",
    [{}, {"etag": ""}, {"etag": 5}, {"tag": '"a"'}, {"etag": '"a"\r\nX: y'}, "etag",
     {"etag": "x" * 2000}],
)
def test_if_changed_is_checked(value: Any) -> None:
    with pytest.raises(BadRequest) as caught:
        sources.if_changed({"if_changed": value})
    assert caught.value.field == "if_changed"


def test_the_cache_is_bounded_by_bytes() -> None:
    from renderers.sources.cache import Entry, SourceCache

    cache = SourceCache()
    for index in range(10):  # each counted as 1,000 bytes, a 1-byte key and its bookkeeping
        cache.put(str(index), Entry(bytes(1000), None, None, 0.0, 60.0), max_bytes=5000)
    assert cache.size <= 5000 and len(cache) == 3 and cache.get("9") is not None
    cache.put("huge", Entry(bytes(3000), None, None, 0.0, 60.0), max_bytes=5000)
    assert cache.get("huge") is None


def test_the_cache_counts_keys_and_bookkeeping_not_only_data() -> None:
    """Tiny sources under long URLs (a query string varied on an allowed origin) cannot
    outgrow the bound: each URL counts."""
    from renderers.sources.cache import Entry, SourceCache

    cache = SourceCache()
    for index in range(100):
        url = f"https://images.example/a.gif?v={index}&pad=" + "x" * 8000
        cache.put(url, Entry(b"GIF89a", None, None, 0.0, 60.0), max_bytes=64 * 1024)
    assert 0 < len(cache) <= 8 and cache.size <= 64 * 1024


# local roots --------------------------------------------------------------------------------


@pytest.fixture
def root(tmp_path: Path) -> Path:
    base = tmp_path / "root"
    (base / "photos").mkdir(parents=True)
    (base / "photos" / "a.jpg").write_bytes(JPEG)
    (base / "notes.txt").write_bytes(b"just text, long enough to sniff")
    (tmp_path / "outside.jpg").write_bytes(JPEG)
    os.symlink(tmp_path / "outside.jpg", base / "escape.jpg")
    os.symlink(base / "photos" / "a.jpg", base / "inside.jpg")
    return base


def test_a_local_file_under_a_root_is_read(root: Path) -> None:
    own = sources.Sources()
    found = own.load("local:///photos/a.jpg", limits(sources_roots=(str(root),)))
    assert found.data == JPEG and found.etag and found.last_modified
    assert own.load("local:///inside.jpg", limits(sources_roots=(str(root),))).data == JPEG


def test_a_local_file_is_read_where_it_lies_never_copied_into_the_cache(root: Path) -> None:
    own = sources.Sources()
    with own.load("local:///photos/a.jpg", limits(sources_roots=(str(root),))) as found:
        assert found.describe()["length"] == len(JPEG) and found.blob.head(3) == JPEG[:3]
        assert found.blob.stream().read() == JPEG and found.data == JPEG
        assert len(own.cache) == 0 and own.cache.size == 0
    assert found.blob.fd == -1  # closed with the source


def test_a_local_file_that_grows_past_the_limit_after_it_was_opened_is_refused(
    root: Path,
) -> None:
    path = root / "photos" / "a.jpg"
    cap = limits(sources_roots=(str(root),), source_max_bytes=len(JPEG) + 10)
    with sources.Sources().load("local:///photos/a.jpg", cap) as found:
        with path.open("ab") as grow:
            grow.write(bytes(100))
        with pytest.raises(SourceTooLarge):
            found.data  # noqa: B018


def test_the_http_client_is_imported_only_for_a_remote_source(root: Path) -> None:
    """A worker that serves local files never loads urllib3 (a fresh process)."""
    program = (
        "import sys, renderers\n"
        "from renderers import sources, settings\n"
        f"limits = settings.Settings(sources_roots=({str(root)!r},))\n"
        "with sources.Sources().load('local:///photos/a.jpg', limits) as found:\n"
        "    assert found.data\n"
        "print('urllib3' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


@pytest.mark.parametrize(
    "url",
    [
        "local:///../outside.jpg",
        "local:///photos/../../outside.jpg",
        "local:///escape.jpg",
        "local:///photos/%2e%2e/%2e%2e/outside.jpg",
        "local:///",
    ],
)
def test_a_local_path_cannot_escape_its_root(root: Path, url: str) -> None:
    with pytest.raises(SourceForbidden):
        sources.Sources().load(url, limits(sources_roots=(str(root),)))


def test_local_refusals(root: Path) -> None:
    own = sources.Sources()
    with pytest.raises(SourceForbidden, match="not enabled") as off:
        own.load("local:///photos/a.jpg", limits())
    assert "DIPS_SOURCES_ROOTS" in off.value.message
    flag = re.search(r"mdpctl up (--[a-z-]+) DIR", off.value.message)
    assert flag and flag[1] in {f.name for f in mdpctl_flags.FLAGS}  # the real flag
    with pytest.raises(SourceNotFound):
        own.load("local:///photos/none.jpg", limits(sources_roots=(str(root),)))
    with pytest.raises(SourceNotFound):
        own.load("local:///photos", limits(sources_roots=(str(root),)))
    with pytest.raises(SourceNotImage):
        own.load("local:///notes.txt", limits(sources_roots=(str(root),)))
    with pytest.raises(SourceTooLarge):
        own.load("local:///photos/a.jpg", limits(sources_roots=(str(root),), source_max_bytes=10))
    with pytest.raises(BadRequest):
        own.load("local://host/photos/a.jpg", limits(sources_roots=(str(root),)))


# requests and settings ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_map",
    [{}, {"source": "https://x/a.jpg", "image": JPEG}, {"source": 5}, {"source": "gopher://x/a"}],
)
def test_a_request_names_one_source(request_map: dict[str, Any]) -> None:
    with pytest.raises(BadRequest) as caught:
        sources.from_request(request_map, limits())
    assert caught.value.field == "source"


def test_a_request_with_no_source_is_told_to_give_one_and_with_both_to_drop_one() -> None:
    with pytest.raises(BadRequest) as neither:
        sources.from_request({}, limits())
    assert neither.value.message == "give one of source (a URL) or image (bytes)"
    with pytest.raises(BadRequest) as both:
        sources.from_request({"source": "https://x/a.jpg", "image": JPEG}, limits())
    assert both.value.message == "give either source (a URL) or image (bytes), not both"


def test_source_settings_come_from_the_environment(tmp_path: Path) -> None:
    loaded = settings.from_environment(
        {
            "DIPS_SOURCES_ALLOW": "https://img.example.com, https://*.cdn.example",
            "DIPS_SOURCES_ROOTS": str(tmp_path),
            "DIPS_SOURCE_TIMEOUT": "2.5",
            "DIPS_AUTO_WEBP": "0",
        }
    )
    assert loaded.sources_allow == ("https://img.example.com", "https://*.cdn.example")
    assert loaded.sources_roots == (str(tmp_path),)
    assert (loaded.source_timeout, loaded.auto_webp) == (2.5, False)
    for bad in (
        {"DIPS_SOURCES_ALLOW": "img.example.com"},
        {"DIPS_SOURCES_ROOTS": "relative"},
        {"DIPS_AUTO_WEBP": "maybe"},
        {"DIPS_SOURCE_TIMEOUT": "0"},
    ):
        with pytest.raises(ConfigError):
            settings.from_environment(bad)


def test_fetched_is_plain_data() -> None:
    assert Fetched(b"x", None, None).not_modified is False
    assert renderers.current().source_max_bytes > 0


# https: the connection goes to the checked address, with the URL's name for TLS and Host -----


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[SourceServer, str, list[str]]]:
    with running_tls(tmp_path) as served:
        yield served


def test_https_pins_the_address_and_keeps_the_name(
    tls_server: tuple[SourceServer, str, list[str]],
) -> None:
    from renderers.sources.remote import Connector

    srv, cert, names = tls_server
    srv.serve("/a.jpg", JPEG)
    seen_host: list[str] = []
    route = srv.routes["/a.jpg"]
    srv.routes["/a.jpg"] = lambda h: (seen_host.append(h.headers["Host"]), route(h))[1]
    resolver = stub_resolver({"img.test": ["127.0.0.1"]})
    fetcher = HttpFetcher(resolver=resolver, connector=Connector(ca_certs=cert))
    origin = f"https://img.test:{srv.port}"
    fetched = fetcher.fetch(origin + "/a.jpg", limits(sources_internal=(origin,)))
    assert fetched.data == JPEG
    assert names == ["img.test"] and seen_host == [f"img.test:{srv.port}"]
    other = HttpFetcher(
        resolver=stub_resolver({"other.test": ["127.0.0.1"]}), connector=Connector(ca_certs=cert)
    )
    wrong = f"https://other.test:{srv.port}"
    with pytest.raises(SourceError, match="other.test"):  # the certificate names img.test
        other.fetch(wrong + "/a.jpg", limits(sources_internal=(wrong,)))
