"""The HTTP API: ``POST /v1/[{signature}/]{service}`` and ``GET /v1/[{signature}/]{service}``.

Each request is read within the body limits, decoded to a request map (:mod:`codec`),
sent through the brokers, and answered with the image bytes and their Content-Type, or
with the JSON error map and the status that fits (:mod:`mdp_http.errors`). A msgpack body is
already the request frame: it is passed through as it is, never unpacked and packed again.
On a gateway with signing keys every request is signed, a POST over its path and body
(:func:`mdp_http.signing.post_text`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from mdp import protocol as p
from mdp.errors import BadRequest, MDPError, RequestError, UnknownService
from mdp_http import codec, content
from mdp_http.backend import Backend
from mdp_http.bodies import Budget, read_body
from mdp_http.errors import (
    BodyTimeout,
    Busy,
    Forbidden,
    NotFound,
    TooLarge,
    UnsupportedMediaType,
    error_map,
    status_for,
)
from mdp_http.metrics import GatewayMetrics
from mdp_http.signing import Signer, post_text

log = logging.getLogger(__name__)

OTHER = "(other)"  # the metrics label of names that are no known service


@dataclass
class Api:
    backend: Backend
    metrics: GatewayMetrics
    signer: Signer | None
    max_concurrency: int
    max_body_bytes: int
    body_timeout_s: float
    known_services: Any  # () -> set[str]: services some broker has seen
    service_info: Any  # (service) -> ServiceInfo | None: what its workers say of it
    budget: Budget  # bytes of bodies held at once, shared with the image server
    in_flight: int = 0

    def routes(self) -> list[web.AbstractRouteDef]:
        return [
            web.post("/v1/{service}", self.post),
            web.post("/v1/{signature}/{service}", self.post_signed),
            web.get("/v1/{service}", self.get),
            web.get("/v1/{signature}/{service}", self.get_signed),
            # any other path under /v1 names no service: not an image URL either
            web.get("/v1{rest:(/.*)?}", self.no_service),
            web.post("/v1{rest:(/.*)?}", self.no_service),
        ]

    async def no_service(self, request: web.Request) -> web.Response:
        error = NotFound("name a service: /v1/{service} (POST a body, or GET with a query "
                         "string), or /v1/{signature}/{service} when signed; the services "
                         "on offer are listed by GET /api/fleet and `mdpctl services`",
                         field="service")
        return self._error("", error, time.monotonic())  # counted under "(other)"

    async def post(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, self._read_unsigned_body)

    async def post_signed(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, self._read_signed_body)

    async def get(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, self._read_query)

    async def get_signed(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, self._read_signed_query)

    async def _serve(self, request: web.Request, read: Any) -> web.StreamResponse:
        service = request.match_info["service"]
        started = time.monotonic()
        if self.in_flight >= self.max_concurrency:
            return self._error(service, Busy(f"the gateway already runs {self.max_concurrency} "
                                             "requests; try again shortly"), started)
        self.in_flight += 1
        reached = False  # a worker or broker answered for the service: it exists
        held = 0
        try:
            if request.method == "POST":  # its body is held until the reply is sent
                declared = request.content_length
                size = self.max_body_bytes if declared is None else min(declared,
                                                                        self.max_body_bytes)
                self.budget.take(size)
                held = size
            if not p.valid_service(service.encode()) or service.startswith("mmi."):
                raise BadRequest(f"{service!r} is not a service name", field="service")
            call = await read(request, service)
            try:
                if isinstance(call, bytes):
                    result = await self.backend.send_frame(service, call)
                else:
                    result = await self.backend.send(service, call)
            except RequestError as exc:
                reached = not isinstance(exc, UnknownService | Forbidden | TooLarge)
                raise
            reached = True
            response = self._result(service, call, result, request.headers.get("Accept", ""))
        except MDPError as exc:
            return self._error(service, exc, started, reached)
        finally:
            self.in_flight -= 1
            self.budget.give(held)
        self.metrics.observe(self._label(service, reached), response.status,
                             time.monotonic() - started)
        return response

    def _label(self, service: str, reached: bool = False) -> str:
        """The service's name for the metrics when some broker knows it (or a worker has
        just answered for it, before the first poll), else ``(other)``: random names in
        URLs never grow the label set."""
        return service if reached or service in self.known_services() else OTHER

    def _error(self, service: str, exc: MDPError, started: float,
               reached: bool = False) -> web.Response:
        status = status_for(exc)
        if status >= 500 or status == 429:
            log.info("%s: %d %s", service, status, exc)
        headers = {"Retry-After": "1"} if status in (429, 503) else None
        self.metrics.observe(self._label(service, reached), status, time.monotonic() - started)
        return web.json_response(error_map(exc), status=status, headers=headers)

    def _result(self, service: str, call: dict[str, Any] | bytes, result: Any,
                accept: str) -> web.Response:
        if isinstance(result, bytes):
            kind = content.content_type(self.service_info(service), result)
            return web.Response(body=result, content_type=kind)
        body, kind = codec.encode_result(result, accept)
        return web.Response(body=body, content_type=kind)

    async def _read_unsigned_body(self, request: web.Request, service: str
                                  ) -> dict[str, Any] | bytes:
        if self.signer is not None:
            raise Forbidden("this gateway takes signed requests only: POST "
                            "/v1/{signature}/{service}, the signature over the path, a newline "
                            "and the body's SHA-256 in hex")
        return await self._read_body(request, service)

    async def _read_signed_body(self, request: web.Request, service: str
                                ) -> dict[str, Any] | bytes:
        signature = request.match_info["signature"]
        body = await self._read_raw(request)
        if self.signer is not None:
            signed = request.raw_path[len("/v1/") + len(signature):]
            if not self.signer.verify(signature, post_text(signed,
                                                           hashlib.sha256(body).digest())):
                raise Forbidden("the signature does not match the path and body")
        return await self._read_body(request, service, body)

    async def _read_raw(self, request: web.Request) -> bytes:
        if request.content_length is not None and request.content_length > self.max_body_bytes:
            raise TooLarge(f"the body is {request.content_length} bytes; the limit is "
                           f"{self.max_body_bytes}")
        try:
            return await read_body(request, self.body_timeout_s)
        except web.HTTPRequestEntityTooLarge as exc:
            raise TooLarge(f"the body is larger than the limit of {self.max_body_bytes} "
                           "bytes") from exc

    async def _read_body(self, request: web.Request, service: str,
                         body: bytes | None = None) -> dict[str, Any] | bytes:
        """The request map, or for a msgpack body the frame itself (passed through)."""
        if request.content_length is not None and request.content_length > self.max_body_bytes:
            raise TooLarge(f"the body is {request.content_length} bytes; the limit is "
                           f"{self.max_body_bytes}")
        kind = request.content_type
        try:
            if kind in codec.FORM_TYPES:
                if body is not None and kind == "multipart/form-data":
                    raise UnsupportedMediaType("a signed POST is JSON, msgpack or "
                                               "application/x-www-form-urlencoded")
                form = await asyncio.wait_for(request.post(), self.body_timeout_s)
                return codec.from_form(_form_fields(form))
            if body is None:
                body = await read_body(request, self.body_timeout_s)
        except web.HTTPRequestEntityTooLarge as exc:
            raise TooLarge(f"the body is larger than the limit of {self.max_body_bytes} "
                           "bytes") from exc
        except TimeoutError as exc:
            raise BodyTimeout(f"the body did not arrive within {self.body_timeout_s:g} s") \
                from exc
        except ValueError as exc:  # a malformed multipart body
            raise BadRequest(f"the form cannot be read: {exc}") from exc
        if not body:
            raise BadRequest("the body is empty; send the request as JSON or msgpack")
        if kind in codec.MSGPACK_TYPES:
            return codec.msgpack_frame(body)
        info = self.service_info(service)
        return content.guess_bytes(codec.parse_body(request.headers.get("Content-Type", ""),
                                                    body, content.bytes_fields(info)), info)

    async def _read_query(self, request: web.Request, service: str) -> dict[str, Any]:
        if self.signer is not None:
            raise Forbidden("this gateway takes GET requests with a signature only: "
                            "/v1/{signature}/{service}?...")
        return codec.from_fields(request.query.items())

    async def _read_signed_query(self, request: web.Request, service: str) -> dict[str, Any]:
        if self.signer is not None:
            signature = request.match_info["signature"]
            signed = request.raw_path[len("/v1/") + len(signature):]
            if not self.signer.verify(signature, signed):
                raise Forbidden("the URL's signature does not match its path")
        return codec.from_fields(request.query.items())


def _form_fields(form: Any) -> list[tuple[str, str | bytes]]:
    fields: list[tuple[str, str | bytes]] = []
    for name, value in form.items():
        if isinstance(value, str):
            fields.append((name, value))
        elif isinstance(value, web.FileField):
            fields.append((name, value.file.read()))
        else:
            raise UnsupportedMediaType(f"form field {name!r} is neither text nor a file")
    return fields
