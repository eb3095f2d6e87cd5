"""URL signatures in imgproxy's scheme: HMAC-SHA256 over salt + path, URL-safe base64.

A signed URL is ``/v1/{signature}/{rest}`` (``rest`` is the path after the signature as it
is sent, query string included: ``/ecard?pSN=1&pData=...``) or an image URL
``/{signature}/{options}/plain/...`` (imgproxy's own). A POST signs its body too: the signed
text is the path, a newline and the body's SHA-256 in hex (:func:`post_text`), so that a
signature made for one body cannot carry another. Keys and salts are given hex-encoded in
files, one pair per key; several pairs let a key be rotated: a signature made with any of them
is accepted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mdp.errors import ConfigError


def sign(key: bytes, salt: bytes, path: str) -> str:
    """The signature of ``path``: URL-safe base64 of HMAC-SHA256(key, salt + path), unpadded."""
    digest = hmac.new(key, salt + path.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def post_text(path: str, body_sha256: bytes) -> str:
    """What a POST's signature covers: its path, a newline, its body's SHA-256 in hex."""
    return f"{path}\n{body_sha256.hex()}"


def _read_hex(path: str) -> bytes:
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: the key or salt file does not exist") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the key or salt file: "
                          f"{exc.strerror or exc}") from None
    try:
        value = bytes.fromhex(raw.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{path}: expected a hex-encoded key or salt ({exc})") from exc
    if not value:
        raise ConfigError(f"{path}: the key or salt is empty")
    return value


@dataclass(frozen=True)
class Signer:
    """The accepted (key, salt) pairs; the first one signs."""

    pairs: tuple[tuple[bytes, bytes], ...]

    @classmethod
    def from_files(cls, key_files: Sequence[str], salt_files: Sequence[str]) -> Signer | None:
        """None when no key is given (signing off); ConfigError when keys and salts mismatch."""
        if len(key_files) != len(salt_files):
            raise ConfigError(f"{len(key_files)} --sign-key file(s) but {len(salt_files)} "
                              "--sign-salt file(s); give one salt per key")
        if not key_files:
            return None
        return cls(tuple((_read_hex(k), _read_hex(s)) for k, s in zip(key_files, salt_files,
                                                                       strict=True)))

    def sign(self, path: str) -> str:
        key, salt = self.pairs[0]
        return sign(key, salt, path)

    def verify(self, signature: str, path: str) -> bool:
        try:
            given = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
        except (binascii.Error, ValueError):
            return False
        ok = False
        for key, salt in self.pairs:  # every pair is tried: the time does not tell which
            expected = hmac.new(key, salt + path.encode(), hashlib.sha256).digest()
            ok |= hmac.compare_digest(expected, given)
        return ok


def thumbor_key(path: str) -> bytes:
    """thumbor's SECURITY_KEY, the text of the file ``path`` (--thumbor-key) without its
    final newline."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the thumbor key file (--thumbor-key): "
                          f"{exc.strerror or exc}") from None
    key = raw.removesuffix(b"\n").removesuffix(b"\r")
    if not key:
        raise ConfigError(f"{path}: the thumbor key is empty")
    return key
