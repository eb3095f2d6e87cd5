"""``mdp-http`` settings: one dataclass whose fields declare their own command-line flags."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mdp.config import VersionAction
from mdp.errors import ConfigError
from mdp.eventloop import EVENT_LOOP_HELP, EVENT_LOOPS, check_event_loop
from mdp.fdlimit import MIN_CONNECTIONS
from mdp.options import check_endpoints
from mdp.rates import (
    DEFAULT_LINK_FLOOR,
    check_link_floor,
    format_rate,
    link_floor_arg,
    link_floor_help,
)

_CONVERTERS: dict[str, Any] = {"float": float, "int": int, "str | None": str}
DESCRIPTION = ("The DIPS HTTP gateway: POST /v1/{service}, images by URL in imgproxy's format "
               "at the root of the URL space, Prometheus /metrics, and a live dashboard at /.")
MIB = 1024 * 1024
# The largest image a renderer takes (renderers' max_input_bytes, 32 MiB) sent as base64 in
# JSON (4/3 of it) with room for the other fields: one image the renderers accept always fits.
DEFAULT_MAX_BODY = 44 * MIB


def _opt(default: Any, flag: str, help: str, metavar: str | None = None, *,
         parse: Callable[[str], Any] | None = None, show: Callable[[Any], str] = str) -> Any:
    """A field and its flag; ``parse`` reads the flag's (and its variable's) text where the
    field's type alone does not, ``show`` writes the default in the help."""
    meta = {"flag": flag, "help": help, "metavar": metavar, "parse": parse, "show": show}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class HttpConfig:
    """Gateway settings; each field's metadata is its command-line flag."""

    brokers: list[str] = _opt([], "--broker", "broker endpoint (repeat for every broker)",
                              "ENDPOINT")
    listen: str = _opt("127.0.0.1:8080", "--listen", "HOST:PORT to serve HTTP on (port 0: any)",
                       "HOST:PORT")
    timeout_s: float = _opt(10.0, "--timeout", "seconds a request may take through the brokers",
                            "SECONDS")
    max_body_bytes: int = _opt(DEFAULT_MAX_BODY, "--max-body-bytes",
                               "larger request bodies get 413 (the default takes a 32 MiB "
                               "image as base64 in JSON)", "N")
    max_inflight_bytes: int = _opt(256 * MIB, "--max-inflight-bytes",
                                   "request bodies held at once; more get 429 (bounds the "
                                   "door's memory by the images in flight)", "N")
    max_concurrency: int = _opt(64, "--max-concurrency",
                                "API requests in flight at once; more get 429", "N")
    max_connections: int = _opt(4096, "--max-connections",
                                "connections held at once; at the limit the one that has "
                                "waited longest for a request (idle, or still sending its "
                                "head) is closed to make room, and with every one busy a new "
                                "one gets 503; the file-descriptor limit is raised to fit "
                                "where it can be", "N")
    send_timeout_s: float = _opt(60.0, "--send-timeout",
                                 "a connection whose peer takes no byte of a reply waiting for "
                                 "it this long is aborted (nginx's send_timeout)", "SECONDS")
    min_send_rate: float = _opt(1024.0, "--min-send-rate",
                                "a connection whose peer takes a waiting reply at fewer bytes "
                                "a second than this, on average over --send-timeout, is "
                                "aborted (a low-speed limit; 0: only --send-timeout)",
                                "BYTES_PER_S")
    body_timeout_s: float = _opt(30.0, "--body-timeout",
                                 "a client must send its whole body within this time", "SECONDS")
    header_timeout_s: float = _opt(75.0, "--header-timeout",
                                   "a connection must send a request's whole head within this "
                                   "many seconds of opening or of its previous reply, else it "
                                   "is closed; an idle keep-alive connection is closed after "
                                   "it too (keep it above a proxy's upstream keep-alive, "
                                   "nginx's 60 s)", "SECONDS")
    poll_interval_s: float = _opt(1.0, "--poll-interval",
                                  "mmi.status is asked at most this often per broker", "SECONDS")
    link_floor: int = _opt(DEFAULT_LINK_FLOOR, "--link-floor", link_floor_help(
                           "the door's client takes no broker for dead while a big request "
                           "or result may still be on its way at this rate; the brokers' "
                           "value"), "RATE", parse=link_floor_arg, show=format_rate)
    sign_keys: list[str] = _opt([], "--sign-key", "hex key file: every request must then be "
                                "signed (repeat for rotation; one --sign-salt each)", "FILE")
    sign_salts: list[str] = _opt([], "--sign-salt", "hex salt file, paired with --sign-key",
                                 "FILE")
    curve_secret: str | None = _opt(None, "--curve-secret",
                                    "this gateway's CURVE key pair (with --broker-key)", "FILE")
    broker_key: str | None = _opt(None, "--broker-key", "the brokers' CURVE public key", "FILE")
    log_level: str = _opt("INFO", "--log-level", "logging level")
    event_loop: str = _opt("auto", "--event-loop", f"{EVENT_LOOP_HELP} ({', '.join(EVENT_LOOPS)})",
                           "LOOP")
    thumbor_key: str | None = _opt(None, "--thumbor-key", "a file holding thumbor's "
                                   "SECURITY_KEY: thumbor URLs must then carry its HMAC "
                                   "signature (a door with --sign-key and no thumbor key "
                                   "refuses thumbor URLs)", "FILE")
    thumbor_respect_orientation: bool = _opt(False, "--thumbor-respect-orientation",
                                             "thumbor URLs apply the source's EXIF "
                                             "orientation (thumbor's RESPECT_ORIENTATION; off, "
                                             "as in thumbor)")
    presets: list[str] = _opt([], "--preset", "an imgproxy preset NAME=option:args/option:args "
                              "(repeat; 'default' applies to every image URL)", "NAME=OPTIONS")
    only_presets: bool = _opt(False, "--only-presets",
                              "image URLs name presets only, never options")
    auto_webp: bool = _opt(False, "--auto-webp", "a format left open becomes WebP when the "
                           "client's Accept names image/webp (Vary: Accept)")
    auto_avif: bool = _opt(False, "--auto-avif", "a format left open becomes AVIF when the "
                           "client's Accept names image/avif (before WebP)")
    cache_control: str = _opt("public, max-age=3600", "--cache-control",
                              "Cache-Control of image replies", "VALUE")
    cors_origins: list[str] = _opt([], "--cors-origin", "an origin allowed to fetch images by "
                                   "script (repeat; '*' for any); OPTIONS is answered always",
                                   "ORIGIN")
    cache_bytes: int = _opt(64 * MIB, "--cache-bytes",
                            "the door's in-memory cache of rendered images (0: none)", "N")
    cache_ttl_s: float = _opt(3600.0, "--cache-ttl",
                              "seconds a rendered image is served from a cache without asking; "
                              "then the workers revalidate its source (a stat, or a "
                              "conditional GET) and render only if it changed", "SECONDS")
    cache_keep_s: float = _opt(86400.0, "--cache-keep",
                               "seconds a rendered image is kept (in memory, and in Redis) so "
                               "that it can be revalidated after --cache-ttl rather than "
                               "rendered again (never less than --cache-ttl)", "SECONDS")
    origin_hold_s: float = _opt(0.0, "--origin-hold",
                                "after --origin-hold-after source_timeout replies in a row "
                                "for one origin (scheme://host:port), its further image "
                                "requests are answered 504 source_timeout at once for this "
                                "many seconds, then one tries it again (0, the default: never; "
                                "only for origins that are the site's own, with signed URLs: "
                                "docs/HTTP.md)", "SECONDS")
    origin_hold_after: int = _opt(2, "--origin-hold-after",
                                  "source_timeout replies in a row (no other answer from the "
                                  "origin between them) that hold an origin", "N")
    origin_concurrency: int = _opt(0, "--origin-concurrency",
                                   "image requests for one origin in the fleet from this door "
                                   "at once; more get 503 overloaded (0: no bound)", "N")
    redis: str | None = _opt(None, "--redis", "a Redis shared by the doors for rendered "
                             "images, e.g. redis://127.0.0.1:6379/0 (a failure only costs "
                             "renders)", "URL")

    @property
    def cache_kept_s(self) -> float:
        """How long a result is kept: --cache-keep, and never less than --cache-ttl."""
        return max(self.cache_keep_s, self.cache_ttl_s)

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)

    def validate(self) -> None:
        if not self.brokers:
            raise ConfigError("mdp-http needs at least one --broker endpoint")
        check_endpoints(self.brokers)  # a malformed or repeated one, named in one line
        host, _, port = self.listen.rpartition(":")
        if not host or not port.isdigit() or int(port) > 65535:
            raise ConfigError(f"--listen {self.listen!r} is not HOST:PORT")
        if min(self.timeout_s, self.body_timeout_s, self.poll_interval_s,
               self.header_timeout_s, self.send_timeout_s) <= 0:
            raise ConfigError("--timeout, --body-timeout, --header-timeout, --send-timeout "
                              "and --poll-interval must be positive")
        if not 0 <= self.min_send_rate < float("inf"):
            raise ConfigError("--min-send-rate must be >= 0 bytes a second")
        if min(self.max_body_bytes, self.max_concurrency, self.max_inflight_bytes) < 1:
            raise ConfigError("--max-body-bytes, --max-inflight-bytes and --max-concurrency "
                              "must be >= 1")
        if self.max_connections < MIN_CONNECTIONS:
            raise ConfigError(f"--max-connections must be >= {MIN_CONNECTIONS}")
        if self.cache_bytes < 0 or self.cache_ttl_s <= 0:
            raise ConfigError("--cache-bytes must be >= 0 and --cache-ttl positive")
        if not 0 <= self.origin_hold_s <= 3600:
            raise ConfigError("--origin-hold must be 0-3600 seconds")
        if self.origin_hold_after < 1 or self.origin_concurrency < 0:
            raise ConfigError("--origin-hold-after must be >= 1 and --origin-concurrency "
                              ">= 0")
        if self.cache_keep_s <= 0:
            raise ConfigError("--cache-keep must be positive")
        if self.redis is not None and not self.redis.startswith(("redis://", "rediss://",
                                                                 "unix://")):
            raise ConfigError(f"--redis {self.redis!r} is not a redis:// URL")
        if self.only_presets and not self.presets:
            raise ConfigError("--only-presets needs at least one --preset")
        if bool(self.curve_secret) != bool(self.broker_key):
            raise ConfigError("CURVE needs both --curve-secret and --broker-key")
        check_link_floor(self.link_floor, "--link-floor")
        check_event_loop(self.event_loop)


ENV_PREFIX = "DIPS_HTTP_"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def env_name(f: dataclasses.Field[Any]) -> str:
    """The environment variable that sets a flag's default: ``--redis`` ->
    ``DIPS_HTTP_REDIS`` (``mdpctl up`` passes every ``DIPS_*`` variable to its programs)."""
    return ENV_PREFIX + f.metadata["flag"].lstrip("-").replace("-", "_").upper()


def _from_env(f: dataclasses.Field[Any], environ: Mapping[str, str]) -> Any:
    """The field's default from the environment (MISSING when unset); ConfigError naming the
    variable when its value does not read as the flag's type."""
    raw = environ.get(env_name(f), "")
    if raw == "":
        return dataclasses.MISSING
    kind = str(f.type)
    try:
        if f.default_factory is not dataclasses.MISSING:  # a list: comma-separated
            return [part.strip() for part in raw.split(",") if part.strip()]
        if kind == "bool":
            if raw.strip().lower() not in _TRUE + _FALSE:
                raise ValueError("not a boolean (1/0, true/false)")
            return raw.strip().lower() in _TRUE
        return _converter(f)(raw)
    except (ValueError, argparse.ArgumentTypeError) as exc:
        raise ConfigError(f"{env_name(f)}={raw!r}: {exc}") from exc


def _converter(f: dataclasses.Field[Any]) -> Callable[[str], Any]:
    return f.metadata["parse"] or _CONVERTERS.get(str(f.type), str)


def _flag_kwargs(f: dataclasses.Field[Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """argparse's arguments for one field: its help with the default (the environment's, when
    its variable is set), its type and action."""
    meta = f.metadata
    kwargs: dict[str, Any] = {"dest": f.name}
    given = _from_env(f, environ)
    where = f"; ${env_name(f)}"
    if f.default_factory is not dataclasses.MISSING:  # a list: the flag repeats
        shown = ",".join(given) if given is not dataclasses.MISSING else "none"
        return {**kwargs, "action": "append", "default": None, "metavar": meta["metavar"],
                "help": f"{meta['help']} (default: {shown}{where}, comma-separated)"}
    default = f.default if given is dataclasses.MISSING else given
    if str(f.type) == "bool":
        return {**kwargs, "action": argparse.BooleanOptionalAction, "default": default,
                "help": f"{meta['help']} (default: {'on' if default else 'off'}{where})"}
    value = "none" if default is None else meta["show"](default)
    return {**kwargs, "default": default, "type": _converter(f),
            "metavar": meta["metavar"], "help": f"{meta['help']} (default: {value}{where})"}


def parse_args(argv: Sequence[str] | None,
               environ: Mapping[str, str] | None = None) -> HttpConfig:
    """The config the command line describes; defaults from ``DIPS_HTTP_*`` variables of
    ``environ`` (default ``os.environ``), then from the dataclass.  A wrong setting ends the
    program with one line naming it."""
    try:
        return from_command_line(argv, environ)
    except ConfigError as exc:  # one line, as every program says it
        sys.stderr.write(f"mdp-http: {exc}\n")
        raise SystemExit(2) from None


def from_command_line(argv: Sequence[str] | None,
                      environ: Mapping[str, str] | None = None) -> HttpConfig:
    """What :func:`parse_args` reads, with ConfigError naming a ``DIPS_HTTP_*`` variable
    that does not read or a setting that is wrong (``mdpctl up`` checks the door's
    environment so, before it starts anything)."""
    environ = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(prog="mdp-http", description=DESCRIPTION,
                                     epilog="Every flag's default may be set by the "
                                     "environment variable its help names (DIPS_HTTP_...).")
    parser.add_argument("--version", action=VersionAction)
    for f in dataclasses.fields(HttpConfig):
        parser.add_argument(f.metadata["flag"], **_flag_kwargs(f, environ))
    args = vars(parser.parse_args(argv))
    for f in dataclasses.fields(HttpConfig):  # a list flag not given: the environment's
        if args.get(f.name) is None and f.default_factory is not dataclasses.MISSING:
            given = _from_env(f, environ)
            if given is not dataclasses.MISSING:
                args[f.name] = given
    config = HttpConfig(**{k: v for k, v in args.items() if v is not None})
    config.validate()
    return config
