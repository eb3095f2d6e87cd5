"""imgproxy's URL paths, split into signature, options and source (no I/O).

    /{signature}/{options...}/plain/{percent-encoded source URL}[@{extension}]
    /{signature}/{options...}/{base64url source URL, may be split by /}[.{extension}]
    /info/{signature}/{options...}/plain/{source URL}      (and the base64 form)

Options are the segments that contain ``:`` before the source. The query string is dropped,
and a path a proxy normalised is repaired (:func:`redenormalize`), as imgproxy does; the
signature covers the path after the signature segment so repaired (exactly as it was sent
when nothing needed repair). A source is ``http(s)://`` or
``local:///path`` (a file under the workers' configured roots); the workers decide whether
it is allowed (their guard: allow-list, address checks, roots).
"""

from __future__ import annotations

import base64
import binascii
import re
import urllib.parse
from dataclasses import dataclass

from mdp.errors import BadRequest
from mdp_http.errors import NotFound

MAX_PATH_CHARS = 16_384
MAX_SOURCE_CHARS = 8192
MAX_OPTIONS = 64
SOURCE_SCHEMES = ("http", "https", "local")
URL_SAFE = "!#$%&'()*+,/:;=?@[]~"  # left as they are in a source URL; the rest is escaped
SHAPE = "/{signature}/{options}/plain/{source}@{ext}"
_PLAIN_LOOKING = re.compile(r"(?:https?|local):", re.IGNORECASE)  # a source URL's start


@dataclass(frozen=True)
class ImageUrl:
    """One imgproxy URL path, taken apart."""

    signature: str
    signed_path: str  # what the signature covers: "/" + everything after the signature
    options: tuple[str, ...]
    source: str  # "" for a POST whose body is the image
    extension: str  # "" when none was given
    thumbor: bool = False  # a thumbor URL, its options translated (mdp_http.thumborurl)


def b64url_decode(text: str, where: str) -> bytes:
    """URL-safe base64 with or without padding; BadRequest naming ``where`` otherwise."""
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise BadRequest(f"not URL-safe base64: {exc}", field=where) from exc


def parse_path(raw_path: str, *, info: bool = False, allow_no_source: bool = False
               ) -> ImageUrl:
    """Split a raw (still percent-encoded) path; ``info`` for the ``/info/...`` prefix."""
    if len(raw_path) > MAX_PATH_CHARS:
        raise BadRequest(f"the URL path is longer than {MAX_PATH_CHARS} characters", field="url")
    signature, rest = split_signature(raw_path, info=info, allow_no_source=allow_no_source)
    signed_path = "/" + rest
    parts = rest.split("/") if rest else []
    options: list[str] = []
    index = 0
    while index < len(parts) and ":" in parts[index]:
        option = urllib.parse.unquote(parts[index])
        if _PLAIN_LOOKING.match(option):  # "https:" or "local:" starts a source, not an option
            raise _plain_left_out(urllib.parse.unquote("/".join(parts[index:])))
        options.append(option)
        index += 1
    if len(options) > MAX_OPTIONS:
        raise BadRequest(f"more than {MAX_OPTIONS} processing options", field="options")
    try:
        source, extension = _source(parts[index:], allow_no_source)
    except BadRequest as exc:
        if options or parts[index:index + 1] == ["plain"]:
            raise
        raise NotFound(f"no such path ({exc.message}; an image URL is {SHAPE})") from exc
    return ImageUrl(signature, signed_path, tuple(options), source, extension)


def split_signature(raw_path: str, *, info: bool = False, allow_no_source: bool = False,
                    repair: bool = True) -> tuple[str, str]:
    """(signature, the path after it) as imgproxy's SplitPathSignature has them: the query
    string dropped (it is no part of the URL or of what is signed), and the path repaired
    (:func:`redenormalize`) unless ``repair`` is false (thumbor's URLs: it signs them raw)."""
    path = raw_path.partition("?")[0]
    prefix = "/info/" if info else "/"
    if not path.startswith(prefix):
        raise BadRequest("not an image URL path", field="url")
    signature, sep, rest = path[len(prefix):].partition("/")
    if not signature or (not sep and not allow_no_source):
        raise NotFound(f"an image URL is {SHAPE}", field="url")
    return signature, redenormalize(rest) if repair else rest


_COLLAPSED = re.compile(r"^(\S+):/([^/])")


def redenormalize(path: str) -> str:
    """Undo what browsers, proxies and CDNs do to a URL path, as imgproxy does (its
    handlers/path.go RedenormalizePath, whose test vectors are in the unit tests): ``%3A``
    in the options becomes ``:``, and a plain source's ``scheme:/host`` (slashes merged)
    becomes ``scheme://host`` (``local:/x`` becomes ``local:///x``). The signature covers
    the path so repaired, as in imgproxy."""
    if path.startswith("plain/"):
        options, plain, has_plain = "", path[len("plain/"):], True
    else:
        options, sep, plain = path.partition("/plain/")
        has_plain = bool(sep)
    options = options.replace("%3A", ":")
    if not has_plain:
        return options.removeprefix("/")
    match = _COLLAPSED.match(plain)
    if match is not None:
        scheme, first = match.group(1), match.group(2)
        fixed = f"{scheme}://" + ("/" if scheme == "local" else "") + first
        plain = plain.replace(match.group(0), fixed, 1)
    return f"{options}/plain/{plain}".removeprefix("/")


def _source(parts: list[str], allow_no_source: bool) -> tuple[str, str]:
    if not parts or parts == [""]:
        if allow_no_source:
            return "", ""
        raise BadRequest("the URL names no source", field="source")
    if parts[0] == "plain":
        return _plain("/".join(parts[1:]))
    if parts[0] == "enc":
        raise BadRequest("encrypted source URLs (/enc/) are not supported here", field="source")
    name, dot, extension = parts[0].partition(".")
    if name == "upload" and len(parts) == 1 and allow_no_source:  # POST .../upload[.ext]
        return "", extension if dot else ""
    encoded = "".join(parts)
    if _PLAIN_LOOKING.match(urllib.parse.unquote(encoded)):
        raise _plain_left_out(urllib.parse.unquote("/".join(parts)))
    body, dot, extension = encoded.rpartition(".")
    if not dot:
        body, extension = encoded, ""
    url = b64url_decode(body, "source")
    try:
        text = url.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest("the base64 source URL is not UTF-8 text", field="source") from exc
    return check_source(text), extension


def _plain_left_out(source: str) -> BadRequest:
    """A source URL where options or a base64 source belong: ``plain/`` was left out."""
    return BadRequest(f"{source[:80]!r} looks like a source URL: a plain source URL follows "
                      f"`plain/`: {SHAPE} (without it, the source is URL-safe base64)",
                      field="source")


def _plain(encoded: str) -> tuple[str, str]:
    body, at, extension = encoded.rpartition("@")
    if not at:
        body, extension = encoded, ""
    return check_source(urllib.parse.unquote(body)), urllib.parse.unquote(extension)


def check_source(url: str) -> str:
    """``url`` if it is one a worker may be asked to fetch (the workers' guard decides)."""
    if not url:
        raise BadRequest("the source URL is empty", field="source")
    if len(url) > MAX_SOURCE_CHARS:
        raise BadRequest(f"the source URL is longer than {MAX_SOURCE_CHARS} characters",
                         field="source")
    url = urllib.parse.quote(url, safe=URL_SAFE)  # spaces, controls, non-ASCII: escaped
    scheme = url.partition(":")[0].lower()
    if scheme not in SOURCE_SCHEMES:
        raise BadRequest(f"source scheme {scheme[:20]!r} is not supported "
                         "(http, https or local:///path)", field="source")
    if scheme == "local" and not url.startswith("local:///"):
        raise BadRequest("a local source is local:///relative/path", field="source")
    return url


def plain_path(options: list[str] | tuple[str, ...], source: str, extension: str = "") -> str:
    """The path (without signature) of a plain URL: ``/opt/.../plain/{escaped}@{ext}``."""
    escaped = urllib.parse.quote(source, safe=":/=&,;+$!*'()~[]")  # '%', '?', '@' escaped
    tail = f"@{extension}" if extension else ""
    return "/" + "/".join([*options, "plain", escaped + tail])


def encoded_path(options: list[str] | tuple[str, ...], source: str, extension: str = "") -> str:
    """The path (without signature) of a base64 URL: ``/opt/.../{base64url}.{ext}``."""
    encoded = base64.urlsafe_b64encode(source.encode()).rstrip(b"=").decode("ascii")
    tail = f".{extension}" if extension else ""
    return "/" + "/".join([*options, encoded + tail])
