"""The image server in a host's configuration: the door's keys and shared cache, the
workers' sources.

``mdp-http`` signs image URLs with key and salt files (``--sign-key``/``--sign-salt``, in
pairs) and keeps rendered images in memory, and with a Redis also in Redis, shared by
every door.  A :class:`RedisProgram` is a ``redis-server`` that supervisord runs beside
the door: a cache, so nothing is written to disk (``--save ''``, ``--appendonly no``), its
memory bounded and least recently used entries evicted first.  On loopback it needs no
password; on any other address it requires one, of which the configuration holds only the
SHA-256, and the doors read it from supervisord's environment when they start
(:data:`REDIS_PASSWORD_ENV`), so the password never sits in a file.

The workers that fetch sources (``imgproxy``, ``info``) read where from the environment:
``DIPS_SOURCES_ROOTS`` for ``local:///path`` and ``DIPS_SOURCES_ALLOW`` for http(s)
origins (docs/RENDERERS.md); :meth:`ImageServing.worker_environment` sets them.
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mdpctl.endpoints import split_listen
from mdpctl.errors import UsageError

REDIS_PROGRAM = "redis"
REDIS_SERVER = "redis-server"
REDIS_LISTEN = "127.0.0.1:6379"  # where --redis alone runs it, Redis's own port
REDIS_MAX_MEMORY = "256mb"
REDIS_PASSWORD_ENV = "DIPS_REDIS_PASSWORD"
# The variables the renderers read (renderers/settings.py); a test holds the two together.
SOURCES_ROOTS_ENV = "DIPS_SOURCES_ROOTS"
SOURCES_ALLOW_ENV = "DIPS_SOURCES_ALLOW"
DOOR_REDIS_ENV = "DIPS_HTTP_REDIS"  # mdp-http's --redis (mdp_http/config.py)
_SIZE = re.compile(r"^[1-9]\d*(b|k|kb|m|mb|g|gb)?$", re.IGNORECASE)
_REDIS_URL = ("redis://", "rediss://", "unix://")


def redis_size(text: str) -> str:
    """argparse ``type=``: a memory size as Redis reads it (``256mb``, ``2gb``)."""
    if not _SIZE.match(text.strip()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 256mb or 2gb")
    return text.strip().lower()


def redis_url(text: str) -> str:
    """argparse ``type=``: a Redis URL (``redis://HOST:PORT/DB``), or ``off``."""
    if text.strip().lower() == "off":
        return "off"
    if not text.startswith(_REDIS_URL) or any(c in text for c in '"\n\r\t '):
        raise argparse.ArgumentTypeError(f"{text!r} is not a redis:// URL (e.g. "
                                         "redis://10.0.0.9:6379/0)")
    return text


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class RedisProgram:
    """A redis-server that supervisord runs: a cache for the doors, never persisted."""

    listen: str  # HOST:PORT
    max_memory: str = REDIS_MAX_MEMORY
    server: str = REDIS_SERVER
    password_sha256: str | None = None  # required beyond loopback

    def __post_init__(self) -> None:
        host, _port = split_listen(self.listen)
        if not is_loopback(host) and self.password_sha256 is None:
            raise UsageError(
                f"a Redis at {self.listen} listens beyond loopback and needs a password: set "
                f"${REDIS_PASSWORD_ENV} (the file gets only its SHA-256; the doors read it "
                "from supervisord's environment)")

    @property
    def host_port(self) -> tuple[str, int]:
        return split_listen(self.listen)

    def command(self, run_dir: str) -> list[str]:
        host, port = self.host_port
        argv = [self.server, "--bind", host, "--port", str(port), "--save", "",
                "--appendonly", "no", "--maxmemory", self.max_memory,
                "--maxmemory-policy", "allkeys-lru", "--dir", run_dir]
        if self.password_sha256 is not None:  # the default user, by the password's hash
            argv += ["--user", "default", "on", f"#{self.password_sha256}", "~*", "&*",
                     "+@all"]
        return argv

    def url(self) -> str:
        """Where a door on the same host reaches it."""
        host, port = self.host_port
        host = "127.0.0.1" if host in ("0.0.0.0", "*") else host
        return f"redis://{host}:{port}/0"


@dataclass(frozen=True)
class ImageServing:
    """What a host's configuration says about images by URL."""

    sign_keys: tuple[str, ...] = ()
    sign_salts: tuple[str, ...] = ()
    sources_roots: tuple[str, ...] = ()
    sources_allow: tuple[str, ...] = ()
    redis: RedisProgram | None = None  # run here
    redis_url: str | None = None  # the doors' Redis when it runs elsewhere
    redis_password: bool = False  # the doors' Redis wants $DIPS_REDIS_PASSWORD

    def __post_init__(self) -> None:
        if len(self.sign_keys) != len(self.sign_salts):
            raise UsageError("--sign-key and --sign-salt go in pairs: "
                             f"{len(self.sign_keys)} key(s), {len(self.sign_salts)} salt(s)")
        if self.redis is not None and self.redis_url is not None:
            raise UsageError("--redis runs a Redis here and --redis-url names one elsewhere "
                             "for the door: give one of them")
        for value in (*self.sources_roots, *self.sources_allow):
            if "," in value or '"' in value or "%" in value:
                raise UsageError(f"{value!r}: a source root or origin cannot hold a comma, "
                                 "a quote or a %")

    def door_args(self) -> list[str]:
        argv: list[str] = []
        for key, salt in zip(self.sign_keys, self.sign_salts, strict=True):
            argv += ["--sign-key", key, "--sign-salt", salt]
        return argv

    def door_redis(self) -> str | None:
        """The door's Redis URL as supervisord reads it (``%`` doubled), for the door's
        ``$DIPS_HTTP_REDIS``; a password is a reference to supervisord's environment,
        filled in when it starts the door."""
        url = self.redis.url() if self.redis is not None else self.redis_url
        if url is None:
            return None
        url = url.replace("%", "%%")
        wanted = self.redis_password or (self.redis is not None and
                                         self.redis.password_sha256 is not None)
        scheme, _, rest = url.partition("://")
        if not wanted or "@" in rest.split("/", 1)[0]:  # none, or the URL carries its own
            return url
        return f"{scheme}://:%(ENV_{REDIS_PASSWORD_ENV})s@{rest}"

    def worker_environment(self) -> dict[str, str]:
        env = {}
        if self.sources_roots:
            env[SOURCES_ROOTS_ENV] = ",".join(self.sources_roots)
        if self.sources_allow:
            env[SOURCES_ALLOW_ENV] = ",".join(self.sources_allow)
        return env


_URL_SAFE = re.compile(r"^[A-Za-z0-9_.~-]+$")


def password_sha256(environ: Mapping[str, str]) -> str | None:
    """The SHA-256 of ``$DIPS_REDIS_PASSWORD`` (None: not set); UsageError for one that a
    URL cannot carry as it is (the doors put it in theirs)."""
    password = environ.get(REDIS_PASSWORD_ENV)
    if not password:
        return None
    if not _URL_SAFE.match(password):
        raise UsageError(f"${REDIS_PASSWORD_ENV} must be URL-safe (letters, digits, - _ . ~), "
                         "e.g. python -c 'import secrets; print(secrets.token_urlsafe(24))'")
    return hashlib.sha256(password.encode()).hexdigest()


def find_redis_server() -> str:
    """The redis-server that ``up`` runs; UsageError saying how to get one."""
    found = shutil.which(REDIS_SERVER)
    if found is None:
        raise UsageError("--redis: redis-server is not installed (Debian: apt-get install "
                         "redis-server), or leave --redis off for the door's memory cache "
                         "only")
    return found


def absolute_dirs(paths: list[str] | None, flag: str) -> tuple[str, ...]:
    """Directories named on the command line, made absolute (the programs run in the run
    directory); UsageError for one that is not a directory."""
    found = []
    for text in paths or ():
        path = Path(text).expanduser().resolve()
        if not path.is_dir():
            raise UsageError(f"{flag} {text}: not a directory")
        found.append(str(path))
    return tuple(found)


def readable_files(paths: list[str] | None, flag: str) -> tuple[str, ...]:
    """Key files named on the command line, made absolute; UsageError for one that cannot
    be read (the door would exit at start)."""
    found = []
    for text in paths or ():
        path = Path(text).expanduser().resolve()
        if not path.is_file() or not os.access(path, os.R_OK):
            raise UsageError(f"{flag} {text}: not a readable file")
        found.append(str(path))
    return tuple(found)


def host_paths(paths: list[str] | None, flag: str) -> tuple[str, ...]:
    """Paths on another host, for its configuration: written as given, absolute only (its
    programs run in its run directory)."""
    for text in paths or ():
        if not text.startswith("/"):
            raise UsageError(f"{flag} {text}: give an absolute path on the host")
    return tuple(paths or ())
