"""``mdp-http``: the aiohttp application and its command line.

Routes: ``/`` (the dashboard, static files from the package), ``/api/fleet`` (its data as
JSON), ``/api/events`` (the same as server-sent events, one per poll interval),
``/metrics`` (Prometheus), ``/healthz`` (for load balancers), the API under ``/v1/``, and
images by URL in imgproxy's format in the rest of the URL space (:mod:`mdp_http.images`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
import traceback
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from mdp import fdlimit
from mdp.errors import BadRequest, ConfigError, MDPError, Timeout
from mdp.eventloop import loop_factory
from mdp.fdlimit import MIN_CONNECTIONS
from mdp.keys import CurveConfig
from mdp.logs import LOG_FORMAT, RateLimitedLog, loop_errors
from mdp.status import ServiceInfo
from mdp.version import code_version
from mdp_http import serverlog
from mdp_http.api import Api
from mdp_http.backend import Backend
from mdp_http.config import HttpConfig, parse_args
from mdp_http.connlimit import ConnectionGuard
from mdp_http.dashboard import fleet_state
from mdp_http.errors import Busy, NotFound, TooLarge, error_map
from mdp_http.images import ImageServer
from mdp_http.metrics import ConnectionCollector, FleetCollector, GatewayMetrics
from mdp_http.poller import Poller
from mdp_http.signing import Signer

log = logging.getLogger(__name__)

INFO_MAX_AGE_S = 5.0  # services' info changes with deployments; the API polls this seldom
STATIC = Path(str(resources.files("mdp_http").joinpath("static")))
# live event streams (the dashboard's) at most: one in this share of --max-connections, so
# that streams, which are never idle, cannot take every connection
EVENT_STREAM_SHARE = 8
SWEEP_S = 1.0  # how often connections are checked for a peer that stopped reading
BACKLOG = 128  # the listening socket's queue, as aiohttp's own site sets it
# on SIGTERM, how long past --timeout the door waits for its requests in flight (no request
# through the brokers takes longer than --timeout; aiohttp cut them 2 s after the signal)
DRAIN_MARGIN_S = 1.0
# the gateway's own failures: a peer may find how to repeat one
_BUGS = RateLimitedLog(log, level=logging.ERROR)


class Gateway:
    """The gateway's state, shared by the handlers."""

    def __init__(self, config: HttpConfig, backend: Backend | None = None) -> None:
        self.config = config
        curve = (CurveConfig.from_files(config.curve_secret, config.broker_key)
                 if config.curve_secret and config.broker_key else None)
        self.backend = backend or Backend(config.brokers, timeout_s=config.timeout_s,
                                          curve=curve, link_floor=config.link_floor)
        self.poller = Poller(self.backend, config.brokers)
        self.registry = CollectorRegistry()
        self.registry.register(FleetCollector(lambda: self.poller.latest))
        self.registry.register(ConnectionCollector(lambda: self.guard))
        self.metrics = GatewayMetrics(self.registry)
        signer = Signer.from_files(config.sign_keys, config.sign_salts)
        self.images = ImageServer(config, self.backend, signer, self.registry,
                                  self.renderer_version, self.metrics.observe)
        self.api = Api(self.backend, self.metrics, signer,
                       config.max_concurrency, config.max_body_bytes, config.body_timeout_s,
                       self.known_services, self.service_info, self.images.budget)
        self.stopping = asyncio.Event()
        self.guard: ConnectionGuard | None = None  # the listening socket's, once serving
        self.event_streams = 0
        self._state_json: tuple[object, str] | None = None  # (the poll it is of, its JSON)
        self._versions: dict[str, tuple[object, str]] = {}  # service -> (poll, versions)

    def known_services(self) -> set[str]:
        return self.poller.services()

    def service_info(self, service: str) -> ServiceInfo | None:
        return self.poller.info(service, max(self.config.poll_interval_s, INFO_MAX_AGE_S))

    async def renderer_version(self, service: str) -> str:
        """The output versions of the workers of ``service`` (their code versions where a
        worker or broker does not tell one): part of every image request's key, so new
        renderer code or imaging libraries give new results, while an upgrade of the rest
        keeps the cache. Never waits for a poll but the first; worked out once per poll."""
        if self.poller.age() > 1e9:
            await self.poller.fresh(self.config.poll_interval_s)
        self.poller.refresh_behind(self.config.poll_interval_s)
        latest = self.poller.latest
        known = self._versions.get(service)
        if known is not None and known[0] is latest:
            return known[1]
        version = ",".join(sorted({worker.output or worker.version
                                   for entry in self.poller.entries(service)
                                   for worker in entry.workers}))
        self._versions[service] = (latest, version)
        return version

    def connection_stats(self) -> dict[str, int] | None:
        guard = self.guard
        if guard is None:  # not listening (an application under test)
            return None
        return {"open": guard.open_connections(), "max": guard.limit,
                "evicted": guard.evicted, "refused": guard.refused,
                "send_timeouts": guard.stalled, "send_too_slow": guard.too_slow}

    async def state(self) -> dict[str, Any]:
        await self.poller.fresh(self.config.poll_interval_s)
        state = fleet_state(self.poller.previous, self.poller.latest, time.time())
        state["gateway"] = {"version": code_version(), "backend": self.backend.kind,
                            "in_flight": self.api.in_flight,
                            "images": self.images.stats(),
                            "connections": self.connection_stats()}
        return state

    # --- handlers --------------------------------------------------------------------

    async def index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def fleet(self, request: web.Request) -> web.Response:
        return web.json_response(await self.state())

    async def events(self, request: web.Request) -> web.StreamResponse:
        connections = self.guard.limit if self.guard else self.config.max_connections
        most = max(1, connections // EVENT_STREAM_SHARE)  # of the limit as fitted
        if self.event_streams >= most:
            return web.json_response(error_map(Busy(
                f"the gateway has {most} live event streams already; poll /api/fleet")),
                status=503, headers={"Retry-After": "5"})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-cache",
                                               "X-Accel-Buffering": "no"})
        self.event_streams += 1
        try:
            await response.prepare(request)
            await response.write(b"retry: 2000\n\n")
            while not self.stopping.is_set():
                await response.write(f"data: {await self.state_json()}\n\n".encode())
                try:  # pace the stream; a shutdown ends the wait at once
                    await asyncio.wait_for(self.stopping.wait(), self.config.poll_interval_s)
                except TimeoutError:
                    pass
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            self.event_streams -= 1
        return response

    async def state_json(self) -> str:
        """The fleet's state as JSON, worked out once per poll for every stream."""
        await self.poller.fresh(self.config.poll_interval_s)
        latest, known = self.poller.latest, self._state_json
        if known is not None and known[0] is latest:
            return known[1]
        data = json.dumps(await self.state(), separators=(",", ":"))
        self._state_json = (self.poller.latest, data)
        return data

    async def prometheus(self, request: web.Request) -> web.Response:
        await self.poller.fresh(self.config.poll_interval_s)
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(self, request: web.Request) -> web.Response:
        views = await self.poller.fresh(self.config.poll_interval_s)
        up = [v.endpoint for v in views if v.up]
        body = {"status": "ok" if up else "no broker answers", "brokers_up": up,
                "brokers_down": [v.endpoint for v in views if not v.up]}
        return web.json_response(body, status=200 if up else 503)


@web.middleware
async def json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """HTTP errors raised by aiohttp itself (404, 405, 413 ...) as JSON error maps, and a
    bug in a handler as the ``internal`` error map (its traceback goes to the log)."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: NotFound.code, 413: TooLarge.code}.get(exc.status, BadRequest.code)
        return web.json_response({"error": {"code": code, "message": exc.reason}},
                                 status=exc.status, headers={"Allow": exc.headers["Allow"]}
                                 if "Allow" in exc.headers else None)
    except TimeoutError:  # a handler's own wait ran out: the gateway timed out, as aiohttp says
        return web.json_response(error_map(Timeout("the gateway timed out")), status=504)
    except Exception as exc:  # a peer may find a way to repeat it: at most ten a second
        _BUGS(time.monotonic(), "%s %r failed in the gateway:\n%s", request.method,
              request.path[:200], "".join(traceback.format_exception(exc)).rstrip())
        return web.json_response(error_map(MDPError("the gateway failed; its log says why")),
                                 status=500)


def create_app(config: HttpConfig, backend: Backend | None = None) -> web.Application:
    gateway = Gateway(config, backend)
    app = web.Application(client_max_size=config.max_body_bytes, middlewares=[json_errors])
    app["gateway"] = gateway
    app.add_routes([
        web.get("/", gateway.index),
        web.get("/api/fleet", gateway.fleet),
        web.get("/api/events", gateway.events),
        web.get("/metrics", gateway.prometheus),
        web.get("/healthz", gateway.healthz),
        *gateway.api.routes(),
        web.static("/static", STATIC),
        *gateway.images.routes(),  # last: image URLs take the rest of the URL space
    ])

    async def on_shutdown(app: web.Application) -> None:
        gateway.stopping.set()

    async def on_cleanup(app: web.Application) -> None:
        await gateway.images.close()
        await gateway.backend.close()

    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    return app


async def serve(config: HttpConfig) -> int:
    fitted = fdlimit.fit(config.max_connections)
    connections = fitted.available
    shortfall = fitted.shortfall(f"{config.max_connections} connections (--max-connections)")
    if connections < MIN_CONNECTIONS:
        raise ConfigError(f"{shortfall}: fewer than {MIN_CONNECTIONS} connections would fit")
    if shortfall:
        log.warning("%s: at most %d connections", shortfall, connections)
    app = create_app(config)
    # keepalive_timeout bounds how long a request's head may take: aiohttp closes a
    # connection that has not sent a whole head this long after it opened or after its
    # previous reply (a header trickled a byte at a time, or an idle keep-alive)
    runner = web.AppRunner(app, access_log=None,
                           shutdown_timeout=config.timeout_s + DRAIN_MARGIN_S,
                           keepalive_timeout=config.header_timeout_s)
    await runner.setup()
    assert runner.server is not None  # made by setup()
    guard = ConnectionGuard(runner.server, connections, config.send_timeout_s,
                            min_send_rate=config.min_send_rate)
    app["gateway"].guard = guard
    host, port = config.host_port
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(loop_errors())
    try:  # the door's own site, so that its protocol factory is the guard
        listener = await loop.create_server(guard, host or None, port, backlog=BACKLOG)
    except OSError as exc:
        log.error("cannot listen on %s: %s", config.listen, exc)
        await runner.cleanup()
        return 1
    for sock in listener.sockets:
        address = sock.getsockname()
        log.info("mdp-http listening on http://%s:%d/ (brokers: %s)", address[0], address[1],
                 ", ".join(config.brokers))
    done = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, done.set)
    sweeps = asyncio.create_task(_sweep(guard, done))
    await done.wait()
    await sweeps
    log.info("mdp-http stopping")
    listener.close()
    await runner.cleanup()
    return 0


async def _sweep(guard: ConnectionGuard, done: asyncio.Event) -> None:
    """The connections' send timeout, checked once a second until the door stops."""
    while not done.is_set():
        try:
            await asyncio.wait_for(done.wait(), SWEEP_S)
        except TimeoutError:
            guard.sweep()


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    logging.basicConfig(level=config.log_level.upper(), format=LOG_FORMAT)
    serverlog.install()  # malformed requests: a bounded number of lines, not eleven each
    try:
        factory, loop_name = loop_factory(config.event_loop, "dips[http]")
        log.info("event loop: %s", loop_name)
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(serve(config))
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
