"""Test kit for the image server: an origin server on loopback that counts what it serves,
test photos, image workers, a real redis-server, and signed imgproxy URLs."""

from __future__ import annotations

import http.server
import io
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from clusterkit import Cluster, Proc
from mdp_http import imgurl
from mdp_http.signing import Signer
from testkit import broker_status, free_port, wait_for, worker_pids
from testkit.waiting import SERVER_POLL_S

HERE = Path(__file__).resolve().parent
IMGWORKER = HERE / "imgworker.py"
REDIS_SERVER = shutil.which("redis-server")
KEY, SALT = b"test-key-0123456789", b"test-salt"
SIGNER = Signer(((KEY, SALT),))


def make_photos(root: Path) -> dict[str, tuple[int, int]]:
    """Test photos (name -> size): JPEGs of a few sizes and a PNG with alpha."""
    root.mkdir(parents=True, exist_ok=True)
    sizes = {"a.jpg": (640, 480), "b.jpg": (800, 600), "c.jpg": (480, 640),
             "d.jpg": (1024, 768), "alpha.png": (300, 200)}
    for name, size in sizes.items():
        image = Image.radial_gradient("L").resize(size).convert(
            "RGBA" if name.endswith(".png") else "RGB")
        if name.endswith(".png"):
            image.putalpha(128)
        out = io.BytesIO()
        image.save(out, format="PNG" if name.endswith(".png") else "JPEG", quality=85)
        (root / name).write_bytes(out.getvalue())
    (root / "not-an-image.jpg").write_bytes(b"<html>this is no image</html>" * 20)
    (root / "big.jpg").write_bytes(b"\xff\xd8\xff" + b"\0" * (3 * 1024 * 1024))
    return sizes


@dataclass
class Origin:
    """A loopback HTTP server of test photos; counts the requests for each path."""

    root: Path
    hits: Counter[str] = field(default_factory=Counter)
    trickle_s: float = 0.2
    server: http.server.ThreadingHTTPServer | None = None
    stopping: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> Origin:
        origin = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args: object, **kwargs: object) -> None:
                super().__init__(*args, directory=str(origin.root), **kwargs)  # type: ignore[arg-type]

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                origin.hits[self.path] += 1
                if self.path.startswith("/trickle"):
                    self._trickle()
                elif self.path.startswith("/stall"):
                    origin.stopping.wait(60)  # accepted, read, never answered
                elif self.path.startswith("/redirect"):
                    target = self.path.partition("?to=")[2]
                    self.send_response(302)
                    self.send_header("Location", target)
                    self.end_headers()
                else:
                    super().do_GET()

            def _trickle(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", "100000")
                self.end_headers()
                try:
                    for _ in range(200):
                        self.wfile.write(b"\xff")
                        self.wfile.flush()
                        time.sleep(origin.trickle_s)
                except OSError:
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(SERVER_POLL_S,),
                         daemon=True).start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def signed(options: Sequence[str], source: str, extension: str = "", *,
           encoded: bool = False, signer: Signer | None = SIGNER) -> str:
    """A signed imgproxy URL path (``unsafe`` as the signature without a signer)."""
    build = imgurl.encoded_path if encoded else imgurl.plain_path
    path = build(list(options), source, extension)
    return f"/{signer.sign(path) if signer else 'unsafe'}{path}"


def write_keys(tmp_path: Path) -> list[str]:
    """mdp-http flags for the test key and salt."""
    (tmp_path / "key.hex").write_text(KEY.hex())
    (tmp_path / "salt.hex").write_text(SALT.hex())
    return ["--sign-key", str(tmp_path / "key.hex"), "--sign-salt", str(tmp_path / "salt.hex")]


def image_workers(cluster: Cluster, brokers: Sequence[Proc], n: int, *, allow: str,
                  roots: Path | None = None, service: str = "imgproxy",
                  env: dict[str, str] | None = None, stand_in: bool = False) -> list[Proc]:
    """``n`` workers of ``service`` (the renderers', or with ``stand_in`` the tests' own
    imgworker.py) that may fetch from ``allow`` (a loopback origin)."""
    settings = {"DIPS_SOURCES_ALLOW": allow, "DIPS_SOURCES_INTERNAL": allow,
                "DIPS_SOURCE_TIMEOUT": "2", "DIPS_SOURCE_MAX_BYTES": str(2 * 1024 * 1024),
                **({"DIPS_SOURCES_ROOTS": str(roots)} if roots else {}), **(env or {})}
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        workers = []
        for _ in range(n):
            args = [str(IMGWORKER)] if stand_in else ["-m", "mdp.worker"]
            for broker in brokers:
                args += ["--broker", broker.endpoint]
            workers.append(cluster._spawn([*args, "--service", service,
                                           "--heartbeat-interval", "0.2"], service))
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    for worker in workers:
        for broker in brokers:
            wait_for(lambda b=broker, w=worker: _lists(b.endpoint, service, w.pid), 15,
                     f"{service} worker {worker.pid} on {broker.endpoint}")
    return workers


def _lists(endpoint: str, service: str, pid: int) -> bool:
    return pid in worker_pids(endpoint, service)


def served(brokers: Sequence[Proc], service: str = "imgproxy") -> int:
    """Requests of ``service`` its workers served, summed over brokers (mmi.status)."""
    total = 0
    for broker in brokers:
        status = broker_status(broker.endpoint)
        total += sum(w.served for w in status.workers(service)) if status else 0
    return total


@dataclass
class Redis:
    """A real redis-server on a loopback port, without persistence."""

    tmp_path: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> Redis:
        assert REDIS_SERVER is not None
        self.port = self.port or free_port()
        log = (self.tmp_path / f"redis-{self.port}.log").open("ab")
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.tmp_path)], stdout=log, stderr=log)
        wait_for(self._answers, 10, f"redis-server on {self.port}")
        return self

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def keys(self) -> int:
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall(b"DBSIZE\r\n")
            return int(sock.recv(64).strip().lstrip(b":"))


@contextmanager
def redis_server(tmp_path: Path) -> Iterator[Redis]:
    redis = Redis(tmp_path).start()
    try:
        yield redis
    finally:
        redis.kill()
