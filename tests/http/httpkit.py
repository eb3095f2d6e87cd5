"""Test kit for mdp-http: start the gateway as a real process, and speak HTTP to it."""

from __future__ import annotations

import json
import re
import socket
import urllib.error
import urllib.request
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

from clusterkit import Cluster, Proc
from testkit import Load, wait_for

LISTENING = re.compile(r"mdp-http listening on (http://127\.0\.0\.1:\d+)/")


@dataclass
class Gateway:
    proc: Proc
    url: str

    def call(self, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None, timeout: float = 20.0
             ) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body) of one request; error statuses are returned, not raised."""
        request = urllib.request.Request(self.url + path, data=body, method=method,
                                         headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def post_json(self, service: str, request: Any, timeout: float = 20.0
                  ) -> tuple[int, dict[str, str], bytes]:
        return self.call("POST", f"/v1/{service}", json.dumps(request).encode(),
                         {"Content-Type": "application/json"}, timeout)

    def metric(self, name: str) -> float:
        """The door's ``/metrics`` sample ``name``: the sum over its labels for a bare name,
        the one sample for a name spelled with its labels; 0 when there is none."""
        _, _, body = self.call("GET", "/metrics")
        total = 0.0
        for line in body.decode().splitlines():
            sample, _, value = line.rpartition(" ")
            if not line.startswith("#") and name in (sample, sample.partition("{")[0]):
                total += float(value)
        return total

    def get_json(self, path: str) -> Any:
        status, _, body = self.call("GET", path)
        assert status == 200, (status, body[:300])
        return json.loads(body)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def raw_socket(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        return sock


def start_gateway(cluster: Cluster, brokers: list[str], *extra: str) -> Gateway:
    """mdp-http on a port of its own choosing (read back from its log) for ``brokers``."""
    args = ["-m", "mdp_http", "--listen", "127.0.0.1:0", "--poll-interval", "0.5"]
    for broker in brokers:
        args += ["--broker", broker]
    proc = cluster._spawn([*args, *extra], "http")

    def listening() -> str | None:
        if proc.popen.poll() is not None:
            raise AssertionError(f"mdp-http exited:\n{proc.output()}")
        match = LISTENING.search(proc.output())
        return match.group(1) if match else None

    url = wait_for(listening, 15, "mdp-http to listen")
    return Gateway(proc, url)


def error_code(body: bytes) -> str:
    return str(json.loads(body)["error"]["code"])


class HttpLoad(Load):
    """Threads that keep posting to ``service`` (echo by default) and check every reply."""

    def __init__(self, gateway: Gateway, threads: int = 6, service: str = "echo",
                 request: dict[str, Any] | None = None) -> None:
        super().__init__(threads)
        self.gateway = gateway
        self.service = service
        self.template = request or {}

    def connect(self) -> AbstractContextManager[Gateway]:
        return nullcontext(self.gateway)

    def exchange(self, gateway: Gateway, thread: int, i: int) -> str | None:
        echo = self.service == "echo"
        request = {**self.template, "t": thread, "i": i} if echo else self.template
        status, _, body = gateway.post_json(self.service, request, timeout=30)
        if status == 200 and (not echo or json.loads(body) == request):
            return None
        return f"{status}: {body[:200]!r}"


def ask_for_blob(port: int, size: int, rcvbuf: int = 16384) -> socket.socket:
    """A request to ``/v1/slow`` for a reply of ``size`` bytes, on a connection receiving
    into ``rcvbuf`` (a small buffer keeps most of the reply in the door until it is read)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(30)
    sock.connect(("127.0.0.1", port))
    body = json.dumps({"reply_bytes": size}).encode()
    sock.sendall(b"POST /v1/slow HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Accept: application/msgpack\r\nContent-Length: %d\r\n\r\n%s"
                 % (len(body), body))
    return sock
