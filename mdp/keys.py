"""CURVE keys: files in pyzmq's ``zmq.auth`` format, loaded with permission checks.

A key pair is two files, ``NAME.key`` (public, may be shared) and ``NAME.key_secret``
(public and secret; only its owner may read it). An allow-list is a directory of
public ``.key`` files. Keys are never logged; a short fingerprint stands for one.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import zmq.auth

from mdp.errors import ConfigError

# what a CURVE key is allowed to be, by the allow-list it is on (mdp.auth reads the lists)
CLIENT_ROLE = "client"
WORKER_ROLE = "worker"


@dataclass(frozen=True)
class KeyPair:
    """A peer's own CURVE keys (z85-encoded bytes, as libzmq takes them)."""

    public: bytes
    secret: bytes = b""

    def __repr__(self) -> str:  # never show the secret
        return f"KeyPair(public={fingerprint(self.public)})"


@dataclass(frozen=True)
class CurveConfig:
    """What a client or worker needs to talk CURVE to the brokers.

    ``broker_public`` is the key of every broker that has none of its own in
    ``broker_keys`` (endpoint -> public key): each broker may have its own key pair, so
    that one broker host's compromise exposes no other broker.
    """

    own: KeyPair
    broker_public: bytes = b""
    broker_keys: Mapping[str, bytes] = field(default_factory=dict)

    @classmethod
    def from_files(cls, secret_file: str | os.PathLike[str],
                   broker_key_file: str | os.PathLike[str]) -> CurveConfig:
        return cls(load_secret(secret_file), load_public(broker_key_file))

    @classmethod
    def from_flags(cls, secret_file: str | os.PathLike[str],
                   broker_keys: Sequence[str]) -> CurveConfig:
        """From ``--curve-secret`` and each ``--broker-key``: ``FILE`` (every broker) or
        ``ENDPOINT=FILE`` (that broker only)."""
        default = b""
        per_endpoint: dict[str, bytes] = {}
        for spec in broker_keys:
            endpoint, sep, file = spec.partition("=")
            if sep and "://" in endpoint:
                per_endpoint[endpoint] = load_public(file)
            elif default:
                raise ConfigError("--broker-key FILE given twice; name the endpoint of "
                                  "each broker that has its own: --broker-key ENDPOINT=FILE")
            else:
                default = load_public(spec)
        return cls(load_secret(secret_file), default, per_endpoint)

    def server_key(self, endpoint: str | None) -> bytes:
        """The public key of the broker at ``endpoint``."""
        key = self.broker_keys.get(endpoint or "", self.broker_public)
        if not key:
            raise ConfigError(f"no CURVE key for broker {endpoint}: give --broker-key "
                              f"{endpoint}=FILE or a --broker-key FILE for every broker")
        return key

    def apply(self, sock: zmq.Socket, endpoint: str | None = None) -> None:
        """Make ``sock`` a CURVE client of the broker at ``endpoint`` (before it connects)."""
        sock.curve_serverkey = self.server_key(endpoint)
        sock.curve_publickey = self.own.public
        sock.curve_secretkey = self.own.secret


def fingerprint(public: bytes) -> str:
    """A short, stable name for a public key, safe to log."""
    return hashlib.sha256(public).hexdigest()[:12]


def new_keypair(directory: str | os.PathLike[str], name: str) -> tuple[Path, Path]:
    """Write NAME.key and NAME.key_secret (mode 0600) into ``directory``."""
    if not name or "/" in name or name.startswith("."):
        raise ConfigError(f"invalid key name {name!r}")
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    public_file, secret_file = folder / f"{name}.key", folder / f"{name}.key_secret"
    if public_file.exists() or secret_file.exists():
        raise ConfigError(f"key {name!r} already exists in {folder}; refusing to overwrite it")
    old_umask = os.umask(0o077)
    try:
        public, secret = zmq.auth.create_certificates(folder, name)
    finally:
        os.umask(old_umask)
    os.chmod(secret, 0o600)
    os.chmod(public, 0o644)
    return Path(public), Path(secret)


def load_secret(path: str | os.PathLike[str]) -> KeyPair:
    """Load a key pair; refuse a file that others could read."""
    file = Path(path)
    try:
        mode = file.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"cannot read key file {file}: {exc.strerror}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"secret key file {file} is accessible by others (mode {stat.S_IMODE(mode):o}); "
            f"run: chmod 600 {file}")
    public, secret = _load(file)
    if not secret:
        raise ConfigError(f"{file} holds no secret key (give the .key_secret file)")
    return KeyPair(public, secret)


def load_public(path: str | os.PathLike[str]) -> bytes:
    """Load the public key of a key file (either of the pair)."""
    return _load(Path(path))[0]


def load_allowlist(directory: str | os.PathLike[str]) -> frozenset[bytes]:
    """Every public key in the ``.key`` files of a directory."""
    folder = Path(directory)
    if not folder.is_dir():
        raise ConfigError(f"allow-list {folder} is not a directory")
    return frozenset(load_public(file) for file in sorted(folder.glob("*.key")))


def _load(file: Path) -> tuple[bytes, bytes]:
    try:
        public, secret = zmq.auth.load_certificate(file)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load CURVE key file {file}: {exc}") from exc
    if not public or len(public) != 40:
        raise ConfigError(f"{file} holds no valid CURVE public key")
    return public, secret or b""
