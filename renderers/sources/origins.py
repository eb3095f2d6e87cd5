"""Which source URLs and addresses are allowed: decisions only, no I/O.

An allow-list entry is an origin, ``scheme://host[:port]``, whose host may start with ``*.``
to match every subdomain (never the bare domain). A source URL must be http or https, carry
no user name or password, and match an entry exactly in scheme, host and port (the port
defaults to the scheme's). Paths are not part of an origin, so ``https://a.example@evil``
tricks have nothing to match against: the parsed host is what is compared.

Every address a host resolves to is classified; loopback, private, site-local, shared
(100.64/10) and other non-global unicast addresses are refused unless the origin is listed
as internal; unspecified ("this network", 0.0.0.0/8), multicast, reserved and link-local
addresses are refused always (link-local is where clouds serve instance metadata and
credentials, 169.254.169.254 and fe80::/10: never an image origin, whatever DNS says). An
IPv6 address that carries an IPv4 one (mapped, NAT64, 6to4) is judged by the IPv4 address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import SplitResult, urlsplit

from mdp.errors import BadRequest, ConfigError
from renderers.sources.errors import FIELD, SourceForbidden

if TYPE_CHECKING:
    from renderers.settings import Settings

SCHEMES = {"http": 80, "https": 443}
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")


@dataclass(frozen=True)
class Pattern:
    """One allow-list entry."""

    scheme: str
    host: str  # lower case; "*.example.com" for subdomains
    port: int

    def matches(self, scheme: str, host: str, port: int) -> bool:
        if scheme != self.scheme or port != self.port:
            return False
        if self.host.startswith("*."):
            return host.endswith(self.host[1:]) and len(host) > len(self.host) - 1
        return host == self.host


@dataclass(frozen=True)
class Target:
    """A checked source URL: where to connect and what to ask for."""

    url: str
    scheme: str
    host: str  # as in the URL (lower case, IPv6 without brackets)
    port: int
    path: str  # path and query, what goes on the request line

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == SCHEMES[self.scheme] else f"{host}:{self.port}"


def parse_pattern(entry: str, setting: str) -> Pattern:
    """An allow-list entry; ConfigError naming ``setting`` when it is not an origin."""
    try:
        parts = urlsplit(entry.strip().rstrip("/"))
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"{setting}: {entry!r} is not an origin ({exc})") from None
    host = (parts.hostname or "").lower()
    if (
        parts.scheme not in SCHEMES
        or not host
        or parts.username is not None
        or parts.password is not None
        or parts.path
        or parts.query
        or parts.fragment
        or "*" in host.removeprefix("*.")
    ):
        raise ConfigError(
            f"{setting}: {entry!r} is not an origin like https://img.example.com or "
            "https://*.example.com:8443"
        )
    return Pattern(parts.scheme, host, port or SCHEMES[parts.scheme])


def parse_url(url: str) -> Target:
    """A source URL's parts; BadRequest for anything but a plain http(s) URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise BadRequest(f"source: not a valid URL ({exc})", FIELD) from None
    host = (parts.hostname or "").lower()
    if parts.scheme not in SCHEMES or not host:
        raise BadRequest("source: expected an http(s):// or local:/// URL", FIELD)
    if parts.username is not None or parts.password is not None:
        raise BadRequest("source: a URL with a user name or password is not accepted", FIELD)
    if any(ch.isspace() or ord(ch) < 0x20 for ch in url):
        raise BadRequest("source: the URL holds spaces or control characters", FIELD)
    path = _request_path(parts)
    return Target(url, parts.scheme, host, port or SCHEMES[parts.scheme], path)


def _request_path(parts: SplitResult) -> str:
    path = parts.path or "/"
    return f"{path}?{parts.query}" if parts.query else path


def patterns(limits: Settings) -> tuple[list[Pattern], list[Pattern]]:
    """The settings' allow-list and internal list, parsed."""
    allow = [parse_pattern(entry, "sources_allow") for entry in limits.sources_allow]
    internal = [parse_pattern(entry, "sources_internal") for entry in limits.sources_internal]
    return allow, internal


def listed(target: Target, patterns: Iterable[Pattern]) -> bool:
    return any(p.matches(target.scheme, target.host, target.port) for p in patterns)


def check_listed(target: Target, allow: Iterable[Pattern], internal: Iterable[Pattern]) -> bool:
    """Refuse an origin on neither list; True when it may reach internal addresses."""
    if listed(target, internal):
        return True
    if listed(target, allow):
        return False
    origin = f"{target.scheme}://{target.host_header}"
    raise SourceForbidden(f"source: the origin {origin} is not allowed on this worker")


def classify(address: IPAddress) -> tuple[str, bool] | None:
    """None for a public unicast address, else (what it is, whether internal origins may)."""
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        return classify(embedded)
    if address.is_unspecified or address in _THIS_NETWORK:
        return ("unspecified", False)
    if address.is_multicast:
        return ("multicast", False)
    if address.is_loopback:
        return ("loopback", True)
    if address.is_link_local:
        return ("link-local", False)
    if address.is_reserved or address == ipaddress.IPv4Address("255.255.255.255"):
        return ("reserved", False)
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return ("site-local", True)  # deprecated, but still routed inside some networks
    if address.is_private:
        return ("private", True)
    if not address.is_global:
        return ("non-global", True)
    return None


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def check_addresses(target: Target, addresses: list[str], internal: bool) -> list[str]:
    """Refuse the host unless *every* address is acceptable; the addresses, normalised."""
    if not addresses:
        raise SourceForbidden(f"source: {target.host} resolves to no address")
    checked = []
    for text in addresses:
        try:
            address = ipaddress.ip_address(text.split("%", 1)[0])
        except ValueError:
            raise SourceForbidden(f"source: {target.host} resolves to {text!r}") from None
        problem = classify(address)
        if problem is not None and not (internal and problem[1]):
            raise SourceForbidden(
                f"source: {target.host} resolves to {address}, a {problem[0]} address; "
                "only origins listed as internal may reach such addresses"
                if problem[1]
                else f"source: {target.host} resolves to {address}, a {problem[0]} address"
            )
        checked.append(str(address))
    return checked
