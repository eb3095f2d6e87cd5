"""Slow origins kept from taking the fleet (decisions only; the door's clock is passed in).

A worker fetches its source inline, under ``DIPS_SOURCE_TIMEOUT`` (5 s): while an origin
stalls, every request for it holds a worker that long, and a handful of them hold a small
fleet. Two bounds, per origin (``scheme://host:port`` of an http(s) source), at each door:

* **hold** (``--origin-hold``, ``--origin-hold-after``): after that many ``source_timeout``
  replies for an origin in a row (no other answer from it in between), the door answers its
  further requests at once, ``source_timeout`` naming the origin, with ``Retry-After``, for
  ``--origin-hold`` seconds. Then one request tries the origin again (the others are still
  answered at once until it comes back): an answer of any other kind ends the hold, another
  timeout starts it again. nginx's passive health check does the same for upstream servers
  (``max_fails``, ``fail_timeout``).
* **bound** (``--origin-concurrency``): at most that many requests for one origin in the
  fleet from this door at once; the next gets 503 ``overloaded`` naming the origin.

Results already cached are served whatever the origin does; the door (mdp_http.images)
asks the guard only for requests that need the fleet.
"""

from __future__ import annotations

import ipaddress
import math
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from mdp.errors import Overloaded, RequestError

MAX_TRACKED = 10_000  # origins with a record kept at once (those timing out, or in flight)


class OriginHeld(RequestError):
    """The source's origin timed out just now: answered at once, not sent to the fleet."""

    code = "source_timeout"

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message, field="source")
        self.retry_after = max(1, math.ceil(retry_after_s))


class OriginBusy(Overloaded):
    """As many requests for the source's origin are in the fleet as the door allows."""

    def __init__(self, message: str) -> None:
        super().__init__(message, field="source")
        self.retry_after = 1


def origin_of(source: str) -> str | None:
    """``scheme://host:port`` of an http(s) source URL, lowercased (the port filled in);
    None for any other source (``local:///``, a body) or one that does not read."""
    try:
        parts = urlsplit(source)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            return None
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        return None
    host = _host(parts.hostname)
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def _host(name: str) -> str:
    """One spelling of a host name or address, as a resolver reads it: lowercase, without
    a root dot, IDNA as punycode, an IP address (IPv4 in any form ``inet_aton`` reads:
    ``127.1``, ``0x7f.1``; IPv6 mapping an IPv4 address as that address) in its canonical
    form; so that spellings of one origin share its record. (The door's URL check escapes
    non-ASCII host names before they come here, as the workers then resolve them; the
    IDNA step serves other callers.)"""
    host = name.lower().rstrip(".")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:  # (an IPv4-mapped IPv6 address reaches the IPv4 host)
        mapped = getattr(address, "ipv4_mapped", None)
        return str(mapped or address)
    if host and all(c in "0123456789abcdefx." for c in host) and host[0].isdigit():
        try:
            return socket.inet_ntoa(socket.inet_aton(host))
        except OSError:
            pass
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return host


@dataclass
class _Record:
    timeouts: int = 0  # source_timeout replies in a row
    held_until: float = 0.0
    probing: bool = False  # one request is trying a held origin again
    in_flight: int = 0


class OriginGuard:
    """Which requests for an origin go to the fleet; told how each one ended."""

    def __init__(self, hold_s: float, hold_after: int, concurrency: int,
                 clock: Callable[[], float]) -> None:
        self.hold_s = hold_s
        self.hold_after = hold_after
        self.concurrency = concurrency
        self.clock = clock
        self._records: dict[str, _Record] = {}

    def held(self) -> int:
        """Origins held now (their requests answered at once)."""
        now = self.clock()
        return sum(1 for r in self._records.values() if self._holding(r) and
                   (now < r.held_until or r.probing))

    def admit(self, origin: str) -> bool:
        """Count a request for ``origin`` as in the fleet, or raise OriginHeld or
        OriginBusy. True when it is the one that tries a held origin again. Every admitted
        request must be ended with :meth:`done`, given what this returned."""
        record = self._records.get(origin)
        if record is None:
            if len(self._records) >= MAX_TRACKED:
                self._forget()
            record = self._records[origin] = _Record()
        probe = False
        if self._holding(record):
            left = record.held_until - self.clock()
            if left > 0:
                raise OriginHeld(
                    f"the origin {origin} did not send a source within source_timeout "
                    f"{record.timeouts} times in a row; its requests are answered at once for "
                    f"another {left:.0f} s (--origin-hold), then one tries it again", left)
            if record.probing:
                raise OriginHeld(
                    f"the origin {origin} did not send a source within source_timeout "
                    f"{record.timeouts} times in a row; one request is trying it again now "
                    "(--origin-hold)", 1)
            probe = True
        if self.concurrency and record.in_flight >= self.concurrency:
            raise OriginBusy(f"{record.in_flight} requests for the origin {origin} are "
                             f"in the fleet already (--origin-concurrency {self.concurrency})")
        record.probing = record.probing or probe
        record.in_flight += 1
        return probe

    def done(self, origin: str, *, timed_out: bool | None, probe: bool) -> None:
        """An admitted request ended: with ``source_timeout`` (True), with an answer that
        shows the origin answered or was never due to be asked (False), or in a way that
        says nothing of it (None: the door's own timeout, a worker lost, a cancel)."""
        record = self._records.get(origin)
        if record is None:
            return
        record.in_flight = max(0, record.in_flight - 1)
        if probe:
            record.probing = False
        if timed_out:
            record.timeouts += 1
            if self._holding(record):
                record.held_until = self.clock() + self.hold_s
        elif timed_out is False:
            record.timeouts = 0
            record.held_until = 0.0
        if record.in_flight == 0 and record.timeouts == 0:
            del self._records[origin]

    def _holding(self, record: _Record) -> bool:
        return self.hold_s > 0 and record.timeouts >= self.hold_after

    def _forget(self) -> None:
        """Drop the records of origins neither in flight nor held (a bound on memory)."""
        now = self.clock()
        for origin, record in list(self._records.items()):
            if record.in_flight == 0 and not record.probing and record.held_until <= now:
                del self._records[origin]
