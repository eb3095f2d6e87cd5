"""Images by URL in imgproxy's format, at the root of the URL space beside ``/v1/``.

    GET  /{signature}/{options}/plain/{source}@{ext}     (or the base64 source form)
    GET  /info/{signature}/{options}/plain/{source}      the source's info as JSON
    POST /{signature}/{options}/upload[.{ext}]           the image in the body
    OPTIONS any path                                     CORS preflight / Allow

For each request the door checks the signature, reads the options into the contract's
``ops`` map (:mod:`mdp_http.imgops`), negotiates the format, and computes the request key
(:func:`mdp_http.negotiate.request_key`). Then, cheapest first: a fresh cached result is
answered from the cache; one kept past its TTL is revalidated (the workers check whether its
source changed, by the validators it recorded, and render only if it did); an identical
request already in flight at this door is waited for; otherwise the request goes to the
fleet with the key (``send(..., key=)``), so identical requests in flight through any door
and any broker are rendered once. An ``If-None-Match`` naming the result's ETag (the key and
the source's version) gets a 304. The worker fetches the source (see docs/HTTP.md for why).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from mdp.body import pack
from mdp.errors import BadRequest, ConfigError, MDPError, RequestError, blame_of
from mdp.logs import RateLimitedLog
from mdp_http import imgops, imgurl, negotiate, thumborurl
from mdp_http.backend import Backend
from mdp_http.bodies import Budget, read_into_frame
from mdp_http.config import HttpConfig
from mdp_http.errors import BadReply, Busy, Forbidden, NotFound, error_map, status_for
from mdp_http.imgmetrics import ImageMetrics
from mdp_http.origins import OriginBusy, OriginGuard, OriginHeld, origin_of
from mdp_http.resultcache import Entry, MemoryCache, RedisCache, TieredCache
from mdp_http.signing import Signer, post_text, thumbor_key

log = logging.getLogger(__name__)

IMAGE_SERVICE = "imgproxy"
INFO_SERVICE = "info"
CONTENT_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp",
                 "avif": "image/avif", "gif": "image/gif"}
ALLOWED_METHODS = "GET, HEAD, POST, OPTIONS"
WARNING_HEADER = "X-Image-Warning"  # a damaged source, rendered as far as it decoded

VersionOf = Callable[[str], Awaitable[str]]
Observe = Callable[[str, int, float], None]  # (service, status, seconds): the HTTP metrics
Route = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Ask:
    """One image request, decided: what goes to the fleet and what the reply's headers say."""

    service: str
    request: dict[str, Any]
    key: bytes
    vary: bool
    proc: imgops.Processing | None
    by_url: bool = True  # names its source by URL: a kept result may be revalidated
    origin: str | None = None  # scheme://host:port of an http(s) source (mdp_http.origins)


class ImageServer:
    """The image URL handlers and their state (cache, requests in flight, counters)."""

    def __init__(self, config: HttpConfig, backend: Backend, signer: Signer | None,
                 registry: CollectorRegistry, version_of: VersionOf,
                 observe: Observe | None = None) -> None:
        self.config = config
        self.observe = observe
        self.backend = backend
        self.signer = signer
        self.version_of = version_of
        self.thumbor_key = thumbor_key(config.thumbor_key) if config.thumbor_key else None
        self.thumbor_orientation = config.thumbor_respect_orientation
        try:
            self.presets = imgops.Presets.parse(config.presets, config.only_presets)
        except (ValueError, BadRequest) as exc:
            raise ConfigError(f"--preset: {exc}") from exc
        self.auto = tuple(fmt for fmt, on in (("avif", config.auto_avif),
                                              ("webp", config.auto_webp)) if on)
        self.shared = (RedisCache(config.redis, config.cache_ttl_s, keep_s=config.cache_kept_s)
                       if config.redis else None)
        self.cache = TieredCache(MemoryCache(config.cache_bytes, config.cache_ttl_s,
                                             keep_s=config.cache_kept_s), self.shared)
        self.origins = OriginGuard(config.origin_hold_s, config.origin_hold_after,
                                   config.origin_concurrency, time.monotonic)
        self.metrics = ImageMetrics(registry, held=self.origins.held)
        self._failures = RateLimitedLog(log)
        self.budget = Budget(config.max_inflight_bytes)
        self.rendering = 0
        self._inflight: dict[bytes, asyncio.Task[Entry]] = {}
        self._background: set[asyncio.Task[Any]] = set()

    def routes(self) -> list[web.AbstractRouteDef]:
        """Catch-all routes: register them after every other route."""
        return [
            web.get("/info/{tail:.+}", self._timed(INFO_SERVICE, self.get_info)),
            web.get("/{tail:.+}", self._timed(IMAGE_SERVICE, self.get)),
            web.post("/{tail:.+}", self._timed(IMAGE_SERVICE, self.post)),
            web.route("OPTIONS", "/{tail:.*}", self.options),
        ]

    def _timed(self, service: str, handler: Route) -> Route:
        """``handler`` counted in the gateway's HTTP metrics under ``service`` (a fixed
        label: the URL never names it)."""
        async def timed(request: web.Request) -> web.StreamResponse:
            started = time.monotonic()
            response = await handler(request)
            if self.observe is not None:
                self.observe(service, response.status, time.monotonic() - started)
            return response
        return timed

    def stats(self) -> dict[str, Any]:
        """The dashboard's view of the image server."""
        memory = self.cache.memory
        return {**self.metrics.snapshot(), "cached": len(memory), "cached_bytes": memory.bytes,
                "rendering": self.rendering, "body_bytes": self.budget.held,
                "origins_held": self.origins.held(),
                "shared_cache": None if self.shared is None else
                ("down" if self.shared.breaker.down else "up")}

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        await self.cache.close()

    # --- handlers ----------------------------------------------------------------------

    async def get(self, request: web.Request) -> web.StreamResponse:
        try:
            ask = await self._ask_get(request, info=False)
        except MDPError as exc:
            return self._error(request, exc)
        return await self._answer(request, ask, lambda: self._render(ask))

    async def get_info(self, request: web.Request) -> web.StreamResponse:
        try:
            ask = await self._ask_get(request, info=True)
        except MDPError as exc:
            return self._error(request, exc)
        return await self._answer(request, ask, lambda: self._render(ask))

    async def post(self, request: web.Request) -> web.StreamResponse:
        try:
            url = imgurl.parse_path(request.raw_path, allow_no_source=True)
            if url.source:
                raise BadRequest("a POST sends the image in its body: end the path with "
                                 "/upload[.ext] and name no source", field="source")
            proc = self._processing(url)
            accept, vary = self._negotiate(proc, request)
            fields = self._fields(proc, accept)
            frame = await read_into_frame(
                request, fields, "image", max_bytes=self.config.max_body_bytes,
                timeout_s=self.config.body_timeout_s, budget=self.budget)
        except MDPError as exc:
            return self._error(request, exc)
        try:
            if self.signer is not None and not self.signer.verify(
                    url.signature, post_text(url.signed_path, frame.sha256)):
                return self._error(request, Forbidden(
                    "the signature does not match the path and body (a POST signs the path, "
                    "a newline and the body's SHA-256 in hex)"))
            version = await self.version_of(IMAGE_SERVICE)
            key = negotiate.request_key(service=IMAGE_SERVICE, source=frame.sha256,
                                        ops=proc.ops, fmt=proc.format, accept=accept,
                                        quality=proc.quality, cachebuster=proc.cachebuster,
                                        version=version)
            ask = Ask(IMAGE_SERVICE, fields, key, vary, proc, by_url=False)

            async def render() -> Entry:
                try:
                    # read-only: the door never changes a filled frame, so it is sent
                    # from its own memory (a 24 MP photo is not copied once more)
                    result = await self.backend.send_frame(
                        IMAGE_SERVICE, memoryview(frame.data).toreadonly(), key=key)
                finally:
                    frame.release()
                return entry_of(result, IMAGE_SERVICE)

            return await self._answer(request, ask, render)
        finally:
            frame.release()

    async def options(self, request: web.Request) -> web.Response:
        headers = {"Allow": ALLOWED_METHODS}
        headers.update(self._cors(request, preflight=True))
        return web.Response(status=204, headers=headers)

    # --- deciding -----------------------------------------------------------------------

    async def _ask_get(self, request: web.Request, *, info: bool) -> Ask:
        url = self._thumbor_url(request.raw_path) if not info else None
        if url is None:
            url = imgurl.parse_path(request.raw_path, info=info)
            if self.signer is not None and not self.signer.verify(url.signature,
                                                                  url.signed_path):
                raise Forbidden("the URL's signature does not match its path")
        if info:
            return await self._ask_info(url)
        return await self._ask_image(url, request)

    def _thumbor_url(self, raw_path: str) -> imgurl.ImageUrl | None:
        """A thumbor URL, its signature checked, read as imgproxy options; None for any
        other path. A door with keys takes thumbor URLs only with thumbor's key; a
        presets-only door takes none."""
        signature, rest = imgurl.split_signature(raw_path, repair=False)
        if self.presets.only or not thumborurl.is_thumbor(rest):
            return None
        if self.thumbor_key is not None:
            if not thumborurl.verify(self.thumbor_key, signature, rest):
                raise Forbidden("the thumbor URL's signature does not match its path "
                                "(thumbor's HMAC-SHA1 with the door's thumbor key)")
        elif self.signer is not None:
            raise Forbidden("this door takes signed URLs only, and has no thumbor key to "
                            "check a thumbor URL with (--thumbor-key)")
        parsed = thumborurl.parse(rest, respect_orientation=self.thumbor_orientation)
        return imgurl.ImageUrl(signature, "/" + rest, parsed.options, parsed.source, "",
                               thumbor=True)

    async def _ask_info(self, url: imgurl.ImageUrl) -> Ask:
        if url.options:
            raise BadRequest("the info endpoint takes no options here", field="options")
        key = negotiate.request_key(service=INFO_SERVICE, source=url.source, ops={}, fmt="",
                                    accept=(), quality=None, cachebuster="",
                                    version=await self.version_of(INFO_SERVICE))
        return Ask(INFO_SERVICE, {"source": url.source}, key, False, None,
                   origin=origin_of(url.source))

    async def _ask_image(self, url: imgurl.ImageUrl, request: web.Request) -> Ask:
        proc = self._processing(url)
        accept, vary = self._negotiate(proc, request)
        key = negotiate.request_key(service=IMAGE_SERVICE, source=url.source, ops=proc.ops,
                                    fmt=proc.format, accept=accept, quality=proc.quality,
                                    cachebuster=proc.cachebuster,
                                    version=await self.version_of(IMAGE_SERVICE))
        call = {"source": url.source, **self._fields(proc, accept)}
        return Ask(IMAGE_SERVICE, call, key, vary, proc, origin=origin_of(url.source))

    def _processing(self, url: imgurl.ImageUrl) -> imgops.Processing:
        proc = imgops.parse_options(url.options, self.presets)
        if url.extension:
            proc.format = imgops.output_format(url.extension)
        if proc.expires is not None and proc.expires < time.time():
            raise NotFound("this image URL has expired")
        return proc

    def _negotiate(self, proc: imgops.Processing, request: web.Request
                   ) -> tuple[tuple[str, ...], bool]:
        if proc.format or not self.auto:
            return (), False
        return negotiate.accepted(request.headers.get("Accept", ""), self.auto), True

    @staticmethod
    def _fields(proc: imgops.Processing, accept: tuple[str, ...]) -> dict[str, Any]:
        return {"ops": proc.ops, "format": proc.format, "accept": list(accept),
                "quality": proc.quality}

    # --- answering ----------------------------------------------------------------------

    async def _answer(self, request: web.Request, ask: Ask,
                      render: Callable[[], Awaitable[Entry]]) -> web.StreamResponse:
        """Fresh in a cache: as it is. Kept past its TTL: revalidated (the workers say
        whether its source changed; only a changed one is rendered). Else rendered. Then
        304 if ``If-None-Match`` names the result's ETag, which covers the request's key and
        the source's version."""
        cached = await self.cache.lookup(ask.key)
        how = "HIT"
        try:
            if cached is not None and cached.fresh:
                entry = cached.entry
            elif cached is not None and ask.by_url and cached.entry.validators():
                stale = cached.entry
                try:
                    entry = await self._once(ask, lambda: self._revalidate(ask, stale))
                    how = "REVALIDATED" if entry is stale else "MISS"
                except OriginHeld:  # the origin stalls: what it gave last (stale-if-error)
                    entry, how = stale, "STALE"
            else:
                self.metrics.count("misses")
                entry = await self._once(ask, render)
                how = "MISS"
        except MDPError as exc:
            return self._error(request, exc)
        tag = negotiate.result_etag(ask.key, entry.source_etag, entry.last_modified)
        if self._not_modified(request, tag, entry):
            self.metrics.count("not_modified")
            return web.Response(status=304, headers=self._headers(request, ask, entry, tag,
                                                                  body=False))
        if how in ("HIT", "STALE"):
            self.metrics.count("hits", "memory" if self.shared is None else "any")
        headers = self._headers(request, ask, entry, tag)
        headers["X-Cache"] = how
        return web.Response(body=entry.image, headers=headers)

    @staticmethod
    def _not_modified(request: web.Request, tag: str, entry: Entry) -> bool:
        """RFC 9110's preconditions: If-None-Match when sent (any method here, as before),
        else If-Modified-Since, for GET and HEAD only, against the source's Last-Modified."""
        headers = request.headers
        since = headers.get("If-Modified-Since") if request.method in ("GET", "HEAD") else None
        return negotiate.not_modified(headers.get("If-None-Match"), since, tag,
                                      entry.last_modified)

    async def _revalidate(self, ask: Ask, stale: Entry) -> Entry:
        """``stale`` again if the workers find its source unchanged (a stat or a conditional
        GET, no decode), else the new render."""
        known = stale.validators()
        # not the render's coalescing key: a door without the result must not get this answer
        key = hashlib.sha256(b"revalidate\0" + ask.key + pack(known)).digest()
        try:
            result = await self.backend.send_keyed(ask.service,
                                                   {**ask.request, "if_changed": known}, key)
        except BadRequest as exc:
            if exc.field != "if_changed":
                raise
            log.info("a %s worker does not take if_changed (an older version); rendering",
                     ask.service)
            return await self._render(ask)
        if isinstance(result, dict) and result.get("unchanged") is True:
            self.metrics.count("revalidated", "unchanged")
            return stale
        self.metrics.count("revalidated", "changed")
        return entry_of(result, ask.service)

    async def _once(self, ask: Ask, render: Callable[[], Awaitable[Entry]]) -> Entry:
        """The result of ``render``, run once for every identical request in flight here."""
        task = self._inflight.get(ask.key)
        if task is not None:
            self.metrics.count("coalesced")
            return await asyncio.shield(task)
        if self.rendering >= self.config.max_concurrency:
            raise Busy(f"the gateway already renders {self.config.max_concurrency} images; "
                       "try again shortly")
        probe = False
        if ask.origin is not None:
            try:
                probe = self.origins.admit(ask.origin)
            except OriginHeld:
                self.metrics.count("origin_refused", "held")
                raise
            except OriginBusy:
                self.metrics.count("origin_refused", "busy")
                raise
        task = asyncio.get_running_loop().create_task(self._run(ask, render, probe))
        self._inflight[ask.key] = task
        task.add_done_callback(_consume)
        return await asyncio.shield(task)

    async def _run(self, ask: Ask, render: Callable[[], Awaitable[Entry]],
                   probe: bool = False) -> Entry:
        self.rendering += 1
        self.metrics.count("renders", ask.service)
        origin_timed_out: bool | None = None  # unknown: the origin may not have been asked
        try:
            entry = await render()
            origin_timed_out = False
        except RequestError as exc:
            self._inflight.pop(ask.key, None)
            if exc.code == "source_timeout":
                origin_timed_out = True
                self.metrics.count("origin_timeouts")
            elif exc.code.startswith("source_"):
                origin_timed_out = False  # the origin answered (or was refused by name)
            raise
        except BaseException:
            self._inflight.pop(ask.key, None)
            raise
        finally:
            self.rendering -= 1
            if ask.origin is not None:
                self.origins.done(ask.origin, timed_out=origin_timed_out, probe=probe)
        if entry.warning:
            self.metrics.count("damaged")
        # the result stays findable as in flight until the caches hold it: no request in
        # between renders it again (memory holds it at once; Redis after a round trip)
        self.cache.memory.put_now(ask.key, entry)
        if self.shared is None:
            self._inflight.pop(ask.key, None)
        else:
            self._later(self._store_shared(ask.key, entry))
        return entry

    async def _store_shared(self, key: bytes, entry: Entry) -> None:
        try:
            if self.shared is not None:
                await self.shared.put(key, entry)
        finally:
            self._inflight.pop(key, None)

    async def _render(self, ask: Ask) -> Entry:
        result = await self.backend.send_keyed(ask.service, ask.request, ask.key)
        return entry_of(result, ask.service)

    def _later(self, coroutine: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _headers(self, request: web.Request, ask: Ask, entry: Entry, tag: str,
                 body: bool = True) -> dict[str, str]:
        cache_control = self.config.cache_control
        if ask.proc is not None and ask.proc.expires is not None:
            cache_control = negotiate.cap_max_age(cache_control, ask.proc.expires - time.time())
        headers = {"ETag": tag, "Cache-Control": cache_control}
        if body:
            headers["Content-Type"] = entry.content_type
        if entry.last_modified:
            headers["Last-Modified"] = entry.last_modified
        if entry.warning:
            headers[WARNING_HEADER] = entry.warning
        vary = ["Accept"] if ask.vary else []
        cors = self._cors(request, preflight=False)
        if cors.get("Access-Control-Allow-Origin", "*") != "*":
            vary.append("Origin")
        if vary:
            headers["Vary"] = ", ".join(vary)
        headers.update(cors)
        proc = ask.proc
        if proc is not None and (proc.filename or proc.attachment) and body:
            kind = "attachment" if proc.attachment else "inline"
            name = proc.filename or "image"
            extension = entry.content_type.rpartition("/")[2]
            headers["Content-Disposition"] = f'{kind}; filename="{name}.{extension}"'
        return headers

    def _cors(self, request: web.Request, *, preflight: bool) -> dict[str, str]:
        origins = self.config.cors_origins
        if not origins:
            return {}
        origin = request.headers.get("Origin", "")
        if "*" in origins:
            allowed = "*"
        elif origin in origins:
            allowed = origin
        else:
            return {}
        headers = {"Access-Control-Allow-Origin": allowed,
                   "Access-Control-Expose-Headers":
                       f"ETag, Last-Modified, Content-Length, {WARNING_HEADER}"}
        if preflight:
            headers.update({"Access-Control-Allow-Methods": ALLOWED_METHODS,
                            "Access-Control-Allow-Headers":
                                request.headers.get("Access-Control-Request-Headers", "")[:500]
                                or "Content-Type",
                            "Access-Control-Max-Age": "86400"})
        return headers

    def _error(self, request: web.Request, exc: MDPError) -> web.Response:
        status = status_for(exc)
        code = getattr(exc, "code", "internal")
        if status >= 500:
            # a peer can repeat a failing request at will: at most ten lines a second
            self._failures(time.monotonic(), "%s %r: %d %s", request.method,
                           request.path[:200], status, exc)
        headers = {"Cache-Control": "no-store"}
        if status in (429, 503) or isinstance(exc, OriginHeld):
            headers["Retry-After"] = str(getattr(exc, "retry_after", 1))
        headers.update(self._cors(request, preflight=False))
        log.debug("%s: %s (%s)", request.path[:200], exc, blame_of(code).value)
        return web.json_response(error_map(exc), status=status, headers=headers)


def _consume(task: asyncio.Task[Any]) -> None:
    """Mark a render's exception as seen (every waiter got it already)."""
    if not task.cancelled():
        task.exception()


def entry_of(result: Any, service: str) -> Entry:
    """A worker's result as a cache entry; BadReply when it is not the contract's map."""
    found = result.get("source") if isinstance(result, dict) else None
    source: dict[str, Any] = found if isinstance(found, dict) else {}
    if service == INFO_SERVICE:
        if not isinstance(result, dict):
            raise BadReply(f"the {service} worker's result is not a map")
        body = json.dumps(_jsonable(result), separators=(",", ":")).encode()
        return Entry(body, "application/json", source_etag=_text(source.get("etag")),
                     last_modified=_text(source.get("last_modified")),
                     warning=_warning(result.get("warning")))
    if not isinstance(result, dict) or not isinstance(result.get("image"), bytes):
        raise BadReply(f"the {service} worker's result is not a map with image bytes")
    kind = result.get("content_type")
    return Entry(
        image=result["image"],
        content_type=kind if isinstance(kind, str) and kind.startswith("image/") else
        "application/octet-stream",
        width=_int(result.get("width")),
        height=_int(result.get("height")),
        source_etag=_text(source.get("etag")),
        last_modified=_text(source.get("last_modified")),
        warning=_warning(result.get("warning")),
    )


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _text(value: Any) -> str:
    if not isinstance(value, str) or len(value) > 200 or not value.isprintable():
        return ""
    return value


def _warning(value: Any) -> str:
    """A worker's warning as a header value: printable ASCII, at most 300 characters."""
    if not isinstance(value, str):
        return ""
    text = "".join(c if " " <= c <= "~" else "?" for c in value[:300])
    return text.strip()


def _jsonable(value: Any) -> Any:
    """An info map as JSON can hold it (it should hold no bytes; any are left out)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items() if not isinstance(v, bytes)}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
