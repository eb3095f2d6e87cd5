"""A typed client for supervisord's XML-RPC interface.

supervisord is reached over a unix socket (``unix:///path/supervisor.sock``, the local
cluster) or over HTTP with basic authentication (``http://host:port``, remote hosts).
Only :mod:`xmlrpc.client` is used; the unix-socket transport is defined here.
"""

from __future__ import annotations

import http.client
import logging
import socket
import time
import xmlrpc.client
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

from mdpctl.errors import AuthError, CtlError, SupervisorFault, Unreachable

log = logging.getLogger(__name__)

T = TypeVar("T")

# supervisord fault codes (supervisor/xmlrpc.py, class Faults) that callers handle.
FAULT_BAD_NAME = 10
FAULT_ALREADY_STARTED = 60
FAULT_NOT_RUNNING = 70
FAULT_SPAWN_ERROR = 50
FAULT_ABNORMAL_TERMINATION = 40

RUNNING_STATES = frozenset({"STARTING", "RUNNING", "BACKOFF"})
DOWN_STATES = frozenset({"STOPPED", "EXITED", "FATAL", "UNKNOWN"})
MIN_CALL_S = 0.2  # the shortest call timeout a deadline leaves (a last look at it)


@dataclass(frozen=True)
class SupervisorEndpoint:
    """Where a supervisord listens and how to log in to it."""

    url: str
    username: str | None = None
    password: str | None = None

    @property
    def is_unix(self) -> bool:
        return self.url.startswith("unix://")

    @property
    def socket_path(self) -> str:
        return self.url[len("unix://") :]

    def display(self) -> str:
        """The URL without credentials, for messages."""
        return self.url


@dataclass(frozen=True)
class ProcessInfo:
    """One process as supervisord's ``getProcessInfo`` describes it."""

    group: str
    name: str
    state: str
    pid: int
    start: int
    now: int
    exitstatus: int
    spawnerr: str
    description: str

    @property
    def fullname(self) -> str:
        return f"{self.group}:{self.name}"

    @property
    def is_up(self) -> bool:
        return self.state in RUNNING_STATES

    @property
    def uptime_s(self) -> float:
        return float(self.now - self.start) if self.state == "RUNNING" else 0.0

    @classmethod
    def from_rpc(cls, info: dict[str, Any]) -> ProcessInfo:
        return cls(
            group=str(info["group"]),
            name=str(info["name"]),
            state=str(info["statename"]),
            pid=int(info["pid"]),
            start=int(info["start"]),
            now=int(info["now"]),
            exitstatus=int(info["exitstatus"]),
            spawnerr=str(info.get("spawnerr", "")),
            description=str(info.get("description", "")),
        )


@dataclass(frozen=True)
class ProcessConfig:
    """The configuration of one process, from ``getAllConfigInfo``."""

    group: str
    name: str
    command: str
    autostart: bool
    startsecs: int
    stopwaitsecs: int

    @property
    def fullname(self) -> str:
        return f"{self.group}:{self.name}"

    @classmethod
    def from_rpc(cls, info: dict[str, Any]) -> ProcessConfig:
        return cls(
            group=str(info["group"]),
            name=str(info["name"]),
            command=str(info["command"]),
            autostart=bool(info["autostart"]),
            startsecs=int(info["startsecs"]),
            stopwaitsecs=int(info["stopwaitsecs"]),
        )


class _UnixHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection carried over a unix stream socket."""

    def __init__(self, path: str, timeout_s: float) -> None:
        super().__init__("localhost", timeout=timeout_s)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class UnixTransport(xmlrpc.client.Transport):
    """XML-RPC over a unix socket, one connection per call."""

    def __init__(self, path: str, timeout_s: float) -> None:
        super().__init__()
        self._path = path
        self._timeout_s = timeout_s

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        return _UnixHTTPConnection(self._path, self._timeout_s)


class TimeoutTransport(xmlrpc.client.Transport):
    """XML-RPC over HTTP with a socket timeout, one connection per call."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__()
        self._timeout_s = timeout_s

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        # get_host_info moves "user:password@" out of the host into a basic-auth header.
        chost, self._extra_headers, _x509 = self.get_host_info(host)
        return http.client.HTTPConnection(chost, timeout=self._timeout_s)


def make_proxy(endpoint: SupervisorEndpoint, timeout_s: float) -> xmlrpc.client.ServerProxy:
    """A ServerProxy for ``endpoint``; credentials travel as HTTP basic auth."""
    if endpoint.is_unix:
        transport: xmlrpc.client.Transport = UnixTransport(endpoint.socket_path, timeout_s)
        return xmlrpc.client.ServerProxy("http://localhost/RPC2", transport=transport)
    parts = urlsplit(endpoint.url)
    if parts.scheme != "http" or not parts.hostname:
        raise CtlError(f"unsupported supervisord URL {endpoint.url!r}: use unix:// or http://")
    netloc = parts.netloc
    if endpoint.username is not None:
        creds = quote(endpoint.username, safe="")
        if endpoint.password is not None:
            creds += ":" + quote(endpoint.password, safe="")
        netloc = f"{creds}@{parts.netloc}"
    path = parts.path if parts.path not in ("", "/") else "/RPC2"
    return xmlrpc.client.ServerProxy(
        f"http://{netloc}{path}", transport=TimeoutTransport(timeout_s)
    )


class Supervisor:
    """The calls mdpctl makes on one supervisord, with errors turned into CtlErrors."""

    def __init__(self, endpoint: SupervisorEndpoint, timeout_s: float = 10.0) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s

    def _call(self, what: str, fn: Callable[[Any], T]) -> T:
        proxy = make_proxy(self.endpoint, self.timeout_s)
        where = self.endpoint.display()
        try:
            return fn(proxy.supervisor)
        except xmlrpc.client.Fault as exc:
            raise SupervisorFault(
                f"supervisord at {where} refused {what}: {exc.faultString}", exc.faultCode
            ) from exc
        except xmlrpc.client.ProtocolError as exc:
            if exc.errcode == 401:
                raise AuthError(
                    f"supervisord at {where} refused the credentials (HTTP 401)"
                ) from exc
            raise Unreachable(
                f"supervisord at {where} answered HTTP {exc.errcode} {exc.errmsg}"
            ) from exc
        except (OSError, http.client.HTTPException) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise Unreachable(f"supervisord at {where} is not reachable: {reason}") from exc

    def state(self) -> str:
        return self._call("getState", lambda s: str(s.getState()["statename"]))

    def pid(self) -> int:
        return self._call("getPID", lambda s: int(s.getPID()))

    def processes(self) -> list[ProcessInfo]:
        infos = self._call("getAllProcessInfo", lambda s: s.getAllProcessInfo())
        return [ProcessInfo.from_rpc(info) for info in infos]

    def process(self, fullname: str) -> ProcessInfo:
        info = self._call(f"getProcessInfo({fullname})", lambda s: s.getProcessInfo(fullname))
        return ProcessInfo.from_rpc(info)

    def configs(self) -> list[ProcessConfig]:
        infos = self._call("getAllConfigInfo", lambda s: s.getAllConfigInfo())
        return [ProcessConfig.from_rpc(info) for info in infos]

    def start(self, fullname: str) -> None:
        """Ask supervisord to start a process; do not wait for it."""
        try:
            self._call(f"startProcess({fullname})", lambda s: s.startProcess(fullname, False))
        except SupervisorFault as exc:
            if exc.fault_code != FAULT_ALREADY_STARTED:
                raise

    def stop(self, fullname: str) -> None:
        """Send a process its stop signal; do not wait for it to exit."""
        try:
            self._call(f"stopProcess({fullname})", lambda s: s.stopProcess(fullname, False))
        except SupervisorFault as exc:
            if exc.fault_code != FAULT_NOT_RUNNING:
                raise

    def send_stdin(self, fullname: str, text: str) -> None:
        """Write ``text`` to a running process's stdin."""
        self._call(f"sendProcessStdin({fullname})", lambda s: s.sendProcessStdin(fullname, text))

    def clear_log(self, fullname: str) -> None:
        self._call(f"clearProcessLogs({fullname})", lambda s: s.clearProcessLogs(fullname))

    def log_tail(self, fullname: str, nbytes: int = 2048) -> str:
        """The last ``nbytes`` of a process's stdout log ("" when it has none)."""
        try:
            return str(
                self._call(
                    f"readProcessStdoutLog({fullname})",
                    lambda s: s.readProcessStdoutLog(fullname, -nbytes, 0),
                )
            )
        except SupervisorFault:
            return ""

    def shutdown(self) -> None:
        self._call("shutdown", lambda s: s.shutdown())

    def wait_running(self, deadline: float) -> None:
        """Block until supervisord answers and is RUNNING, or raise Unreachable. No call
        outlasts the deadline (each waits ``timeout_s`` at most): one that does not answer
        (stopped, say) is given up then, not a whole call timeout later."""
        longest = self.timeout_s
        try:
            while True:
                self.timeout_s = max(MIN_CALL_S, min(longest, deadline - time.monotonic()))
                try:
                    if self.state() == "RUNNING":
                        return
                except Unreachable:
                    if time.monotonic() >= deadline:
                        raise
                if time.monotonic() >= deadline:
                    raise Unreachable(
                        f"supervisord at {self.endpoint.display()} did not get ready")
                time.sleep(0.05)
        finally:
            self.timeout_s = longest
