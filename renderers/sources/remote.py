"""Fetching a source over HTTP(S), guarded at every hop.

For each hop (the first request and every redirect) the URL is parsed, its origin checked
against the allow-list, its host resolved once, *every* address checked, and the connection
made to the first checked address, with the Host header and TLS server name of the URL: the
name is never resolved a second time, so a DNS answer that changes between the check and
the connection (rebinding) changes nothing. Redirects are followed by hand, at most
``source_max_redirects``; a redirect out of plain http(s) is refused. One deadline covers
the whole fetch, every phase of it: the lookup runs on a helper thread and is given up at
the deadline; connect and read timeouts are what remains of it; and a watchdog shuts the
connection's socket down when the deadline passes, so a source that trickles its status
line, headers or body a byte at a time, each well within a read timeout, is cut too. The
size is bounded by Content-Length and by the bytes counted as sent (``identity`` is asked
for and nothing is ever decompressed); the first bytes must be an image's magic bytes.

The resolver and the connector are parameters, so tests can stub them (a connector that
fails the test if it is ever reached).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urljoin

import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import NewConnectionError
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from mdp.errors import BadRequest
from mdp.version import package_version
from renderers.decode import sniff
from renderers.settings import Settings
from renderers.sources import origins
from renderers.sources.deadline import Watchdog, tracked_pool, within
from renderers.sources.errors import (
    SourceError,
    SourceForbidden,
    SourceNotFound,
    SourceNotImage,
    SourceTimeout,
    SourceTooLarge,
)
from renderers.sources.origins import Target

log = logging.getLogger(__name__)

REDIRECTS = (301, 302, 303, 307, 308)
CHUNK = 256 * 1024
SNIFF_BYTES = 12
MAX_CONNECT_S = 5.0
POOLS = 16


class Response(Protocol):
    """What the fetcher needs of a response (urllib3's HTTPResponse has it)."""

    status: int
    headers: Mapping[str, str]

    def read1(self, amt: int | None = None) -> bytes: ...

    def release_conn(self) -> None: ...

    def close(self) -> None: ...


Resolve = Callable[[str, int], list[str]]
Connect = Callable[[Target, str, dict[str, str], float], Response]


@dataclass(frozen=True)
class Fetched:
    """A fetched body (or a 304's empty one) with the origin's validators."""

    data: bytes
    etag: str | None
    last_modified: str | None
    not_modified: bool = False
    max_age: float | None = None  # from the origin's Cache-Control, when it gives one


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, for TCP."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise SourceError(f"source: cannot resolve {host}: {exc}") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class Connector:
    """Opens requests to a checked address with urllib3, keeping a few pools alive."""

    def __init__(self, pools: int = POOLS, ca_certs: str | None = None) -> None:
        self.ca_certs = ca_certs  # None: the system's trust store
        self._pools: OrderedDict[tuple[str, str, str, int], urllib3.HTTPConnectionPool] = (
            OrderedDict()
        )
        self._size = pools
        self._lock = threading.Lock()

    def __call__(self, target: Target, ip: str, headers: dict[str, str], timeout: float) -> Any:
        """The response to a GET; its socket is shut down once ``timeout`` has passed, in
        whatever phase the exchange is (the watchdog ends when the response is closed or
        released)."""
        pool = self._pool(target, ip)
        watchdog = Watchdog(timeout)
        try:
            with watchdog.tracking():
                response = pool.urlopen(
                    "GET",
                    target.path,
                    headers=headers,
                    redirect=False,
                    retries=False,
                    preload_content=False,
                    decode_content=False,
                    timeout=urllib3.Timeout(connect=min(timeout, MAX_CONNECT_S), read=timeout),
                )
        except (Urllib3Error, OSError):
            watchdog.cancel()
            if watchdog.fired:
                raise Urllib3Timeout(f"no answer within {timeout:.3g} s") from None
            raise
        return watchdog.guard(response)

    def _pool(self, target: Target, ip: str) -> urllib3.HTTPConnectionPool:
        key = (target.scheme, target.host, ip, target.port)
        with self._lock:
            pool = self._pools.get(key)
            if pool is not None:
                self._pools.move_to_end(key)
                return pool
            pool = self._new_pool(target, ip)
            self._pools[key] = pool
            while len(self._pools) > self._size:
                self._pools.popitem(last=False)[1].close()
            return pool

    def _new_pool(self, target: Target, ip: str) -> urllib3.HTTPConnectionPool:
        if target.scheme == "https":
            return tracked_pool(urllib3.HTTPSConnectionPool)(
                ip,
                target.port,
                maxsize=2,
                retries=False,
                cert_reqs="CERT_REQUIRED",
                ca_certs=self.ca_certs,
                assert_hostname=target.host,
                server_hostname=target.host,
            )
        return tracked_pool(urllib3.HTTPConnectionPool)(ip, target.port, maxsize=2, retries=False)

    def close(self) -> None:
        with self._lock:
            for pool in self._pools.values():
                pool.close()
            self._pools.clear()


class HttpFetcher:
    """Fetches http(s) sources under the settings' allow-list and bounds."""

    def __init__(
        self,
        resolver: Resolve = resolve,
        connector: Callable[[Target, str, dict[str, str], float], Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.resolve = resolver
        self.connect = connector if connector is not None else Connector()
        self.clock = clock

    def fetch(
        self, url: str, limits: Settings, validators: Mapping[str, str] | None = None
    ) -> Fetched:
        """The source at ``url``; a ``SourceError`` subclass for every refusal or failure.

        ``validators`` (``If-None-Match`` / ``If-Modified-Since``) make a conditional
        request; a 304 comes back as ``not_modified``.
        """
        deadline = self.clock() + limits.source_timeout
        allow, internal = origins.patterns(limits)
        for hop in range(limits.source_max_redirects + 1):
            target = _parse_hop(url, hop)
            may_be_internal = origins.check_listed(target, allow, internal)
            found = self._lookup(target, deadline)
            addresses = origins.check_addresses(target, found, may_be_internal)
            response = self._open_any(target, addresses, validators, deadline)
            location = response.headers.get("location")
            if response.status in REDIRECTS and location:
                response.close()
                url = urljoin(url, location.strip())
                log.debug("source redirected to %s", url)
                continue
            return self._answer(target, response, limits, deadline, validators)
        raise SourceError(f"source: more than {limits.source_max_redirects} redirects")

    def _lookup(self, target: Target, deadline: float) -> list[str]:
        """The host's addresses, given up at the deadline (a resolver can hang for long)."""
        remaining = deadline - self.clock()
        if remaining <= 0:
            raise SourceTimeout("source: the fetch took longer than source_timeout")
        found = within(remaining, self.resolve, target.host, target.port)
        if found is None:
            raise SourceTimeout(f"source: resolving {target.host} took longer than source_timeout")
        return found[0]

    def _open_any(
        self,
        target: Target,
        addresses: list[str],
        validators: Mapping[str, str] | None,
        deadline: float,
    ) -> Response:
        """The first checked address that takes the connection (an IPv6 address first in
        the answer may have no route here; the IPv4 one after it does)."""
        for index, ip in enumerate(addresses):
            try:
                return self._open(target, ip, validators, deadline)
            except _Refused as exc:
                if index == len(addresses) - 1:
                    raise
                log.debug("source %s at %s: %s; trying %s", target.host, ip, exc,
                          addresses[index + 1])
        raise AssertionError("check_addresses returns at least one address")

    def _open(
        self,
        target: Target,
        ip: str,
        validators: Mapping[str, str] | None,
        deadline: float,
    ) -> Response:
        remaining = deadline - self.clock()
        if remaining <= 0:
            raise SourceTimeout("source: the fetch took longer than source_timeout")
        headers = {
            "Host": target.host_header,
            "User-Agent": f"DIPS/{package_version()}",
            "Accept": "image/*",
            "Accept-Encoding": "identity",
            **(validators or {}),
        }
        try:
            response: Response = self.connect(target, ip, headers, remaining)
        except NewConnectionError as exc:  # urllib3 makes it a ConnectTimeoutError too
            reason = exc.__cause__ or exc
            where = target.host if target.host == ip else f"{target.host} ({ip})"
            raise _Refused(f"source: cannot connect to {where}: {reason}") from None
        except Urllib3Timeout:
            raise SourceTimeout(f"source: {target.host} did not answer in time") from None
        except (Urllib3Error, OSError) as exc:
            raise SourceError(f"source: cannot fetch from {target.host}: {exc}") from None
        return response

    def _answer(
        self,
        target: Target,
        response: Response,
        limits: Settings,
        deadline: float,
        validators: Mapping[str, str] | None,
    ) -> Fetched:
        status = response.status
        headers = response.headers
        etag, modified = headers.get("etag"), headers.get("last-modified")
        max_age = _max_age(headers.get("cache-control"))
        if status == 304 and validators:
            response.close()
            return Fetched(b"", etag, modified, not_modified=True, max_age=max_age)
        if status != 200:
            response.close()
            if status in (404, 410):
                raise SourceNotFound(f"source: {target.host} answered {status}")
            raise SourceError(f"source: {target.host} answered {status}")
        data = self._read(target, response, limits, deadline)
        return Fetched(data, etag, modified, max_age=max_age)

    def _read(self, target: Target, response: Response, limits: Settings, deadline: float) -> bytes:
        limit = limits.source_max_bytes
        declared = response.headers.get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            response.close()
            raise SourceTooLarge(f"source: {declared} bytes is over the limit of {limit}")
        chunks: list[bytes] = []
        total = 0
        sniffed = False
        try:
            while True:
                if self.clock() > deadline:
                    raise SourceTimeout("source: the fetch took longer than source_timeout")
                chunk = response.read1(CHUNK)
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
                if total > limit:
                    raise SourceTooLarge(f"source: more than {limit} bytes (the limit)")
                if not sniffed and total >= SNIFF_BYTES:
                    _check_image(b"".join(chunks))
                    sniffed = True
        except SourceError:
            response.close()
            raise
        except Urllib3Timeout:
            response.close()
            raise SourceTimeout(f"source: {target.host} sent too slowly") from None
        except (Urllib3Error, OSError) as exc:
            response.close()
            raise SourceError(f"source: reading from {target.host} failed: {exc}") from None
        response.release_conn()
        data = b"".join(chunks)
        _check_image(data)
        return data


class _Refused(SourceError):
    """The connection to one address failed at once (refused, no route): try the next."""


def _parse_hop(url: str, hop: int) -> Target:
    """The URL of a hop; a redirect out of plain http(s) is the origin's doing, refused."""
    try:
        return origins.parse_url(url)
    except BadRequest as exc:
        if hop == 0:
            raise
        raise SourceForbidden(f"source: a redirect to a refused URL ({exc.message})") from None


def _check_image(head: bytes) -> None:
    if sniff(head) is None:
        raise SourceNotImage(
            f"source: not a JPEG, PNG, WebP or GIF image (starts with {head[:8]!r})"
        )


def _max_age(cache_control: str | None) -> float | None:
    if not cache_control:
        return None
    for part in cache_control.lower().split(","):
        name, _, value = part.strip().partition("=")
        if name in ("no-cache", "no-store"):
            return 0.0
        if name == "max-age" and value.strip().isdigit():
            return float(value)
    return None


__all__ = ["Connector", "Fetched", "HttpFetcher", "SourceForbidden", "resolve"]
