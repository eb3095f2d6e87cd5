"""Test kit for mdp-gearman: gateway processes and a raw Gearman connection (the ``gear``
client is the shared ``testkit``'s)."""

from __future__ import annotations

import json
import re
import shutil
import socket
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clusterkit import Cluster, Proc, needs
from mdp_gearman import packets as g
from testkit import wait_for

HERE = Path(__file__).resolve().parent
_LISTENING = re.compile(r"mdp-gearman listening on [0-9.]+:(\d+)")

def _php_gearman() -> bool:
    if shutil.which("php") is None:
        return False
    return b"gearman" in subprocess.run(["php", "-m"], capture_output=True).stdout


need_php = needs(_php_gearman(), "php-cli and php-gearman")
need_tools = needs(shutil.which("gearman") is not None and shutil.which("gearadmin") is not None,
                   "gearman-tools (gearman, gearadmin)")


def start_gateway(cluster: Cluster, brokers: list[Proc], *extra: str,
                  port: int = 0, state_dir: Path | None = None,
                  worker_functions: str | None = "*") -> Proc:
    """``python -m mdp_gearman`` on 127.0.0.1 (a free port by default); waits for its log.
    ``worker_functions``: what Gearman workers may offer (None: the door's default, none)."""
    args = ["-m", "mdp_gearman", "--listen", f"127.0.0.1:{port}"]
    if worker_functions is not None:
        args += ["--worker-functions", worker_functions]
    for broker in brokers:
        args += ["--broker", broker.endpoint]
    if state_dir is not None:
        args += ["--state-dir", str(state_dir)]
    proc = cluster._spawn([*args, *extra], "gateway")
    match = wait_for(lambda: proc.popen.poll() is not None or _LISTENING.search(proc.output()),
                     20, "the gateway's listening line")
    if proc.popen.poll() is not None:
        raise AssertionError(f"the gateway exited:\n{proc.output()}")
    proc.endpoint = f"127.0.0.1:{match.group(1)}"
    return proc


def port_of(gateway: Proc) -> int:
    return int(gateway.endpoint.rpartition(":")[2])


@dataclass
class Door:
    cluster: Cluster
    brokers: list[Proc]
    gateway: Proc
    state_dir: Path

    @property
    def port(self) -> int:
        return port_of(self.gateway)

    @property
    def endpoints(self) -> list[str]:
        return [b.endpoint for b in self.brokers]


class Raw:
    """A Gearman connection by hand: packets out, packets in, every read with a timeout."""

    def __init__(self, port: int, timeout: float = 15.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    @classmethod
    def over(cls, sock: socket.socket) -> Raw:
        """A Raw on a connection already open."""
        raw = cls.__new__(cls)
        raw.sock, raw.buffer = sock, b""
        return raw

    def send(self, packet_type: int, *args: bytes) -> None:
        self.sock.sendall(g.build_request(packet_type, *args))

    def _fill(self, size: int) -> None:
        while len(self.buffer) < size:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError(f"closed by the gateway; had {self.buffer[:200]!r}")
            self.buffer += chunk

    def recv(self) -> tuple[int, list[bytes]]:
        self._fill(12)
        magic, kind, size = struct.unpack(">4sII", self.buffer[:12])
        assert magic == g.RES, self.buffer[:40]
        self._fill(12 + size)
        body, self.buffer = self.buffer[12:12 + size], self.buffer[12 + size:]
        counts = {g.T.JOB_CREATED: 1, g.T.WORK_COMPLETE: 2, g.T.WORK_FAIL: 1,
                  g.T.WORK_EXCEPTION: 2, g.T.STATUS_RES: 5, g.T.ERROR: 2, g.T.ECHO_RES: 1,
                  g.T.OPTION_RES: 1, g.T.STATUS_RES_UNIQUE: 6}
        return kind, body.split(b"\0", counts.get(kind, 1) - 1)

    def line(self, text: str) -> str:
        """An admin command; the whole answer (up to the '.' line for lists)."""
        self.sock.sendall(text.encode() + b"\r\n")
        while True:
            if b"\n" in self.buffer:
                first = self.buffer.split(b"\n", 1)[0]
                if first.startswith((b"OK", b"ERR")):
                    end = len(first) + 1
                elif first == b".":
                    end = 2
                elif b"\n.\n" in self.buffer:
                    end = self.buffer.index(b"\n.\n") + 3
                else:
                    end = 0
                if end:
                    answer, self.buffer = self.buffer[:end], self.buffer[end:]
                    return answer.decode()
            self._fill(len(self.buffer) + 1)

    def call(self, function: bytes, workload: bytes, unique: bytes = b"",
             kind: int = g.T.SUBMIT_JOB) -> tuple[int, list[bytes]]:
        """Submit one foreground job and return its final packet."""
        self.send(kind, function, unique, workload)
        created = self.recv()
        if created[0] != g.T.JOB_CREATED:
            return created
        return self.recv()

    def close(self) -> None:
        self.sock.close()


def run_php(code: str, tmp_path: Path, timeout: float = 60.0) -> subprocess.CompletedProcess[bytes]:
    script = tmp_path / f"client-{abs(hash(code)) % 10**8}.php"
    script.write_text(code)
    return subprocess.run(["php", str(script)], capture_output=True, timeout=timeout)


def json_body(data: bytes) -> Any:
    return json.loads(data)


PYTHON = sys.executable
