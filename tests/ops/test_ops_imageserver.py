"""Images by URL from `mdpctl up`, end to end with real processes: a folder of photos, signed
URLs, and the doors' Redis under supervisord (issue 17).

One `up` line serves `local:///` images from a folder with a signing key and a Redis; a
signed URL is rendered once, then answered from Redis (the door's memory cache is off, so a
hit can only come from there); Redis SIGKILLed, the door still serves (it renders again),
supervisord starts Redis again and the hits come back; `reload` leaves Redis alone and
`down` stops it.  Every wait has a timeout; no fixed sleeps.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import socket
import urllib.error
import urllib.request

import pytest
from PIL import Image

from clusterkit import needs
from testkit import free_ports, processes_under, wait_for

from .opstools import FAST, LocalCluster, mdpctl

pytestmark = pytest.mark.slow

NO_MEMORY_CACHE = {"DIPS_HTTP_CACHE_BYTES": "0"}  # a hit can only come from Redis


def fetch(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as reply:
            return reply.status, dict(reply.headers), reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def renders(http: str) -> float:
    """The door's own count of images it sent to the fleet (its /metrics)."""
    text = fetch(f"http://{http}/metrics")[2].decode()
    found = re.search(r'^dips_http_renders_total\{service="imgproxy"\} (\S+)$', text, re.M)
    return float(found[1]) if found else 0.0


def redis_keys(listen: str) -> int:
    host, _, port = listen.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=2) as sock:
        sock.sendall(b"DBSIZE\r\n")
        return int(sock.recv(64).strip().lstrip(b":"))


def door(cluster: LocalCluster, kind: str) -> dict[str, object]:
    """The door (or Redis) as `status --json` shows it, also while one is down (exit 3)."""
    status = cluster.ctl("status", "--json")
    assert status.returncode in (0, 3), status.stderr
    found: dict[str, object] = next(d for d in json.loads(status.stdout)["doors"]
                                    if d["door"] == kind)
    return found


@needs(shutil.which("redis-server") is not None, "redis-server")
def test_one_up_line_serves_a_folder_signed_and_cached_in_redis_that_may_die(
        local_cluster: LocalCluster) -> None:
    root, code = local_cluster.root, local_cluster.code
    assert mdpctl("samples", str(root), code=code).returncode == 0
    keys = mdpctl("imgproxy", "key", "--dir", str(root / "keys"), code=code)
    assert keys.returncode == 0, keys.stderr
    key, salt = root / "keys" / "images.key.hex", root / "keys" / "images.salt.hex"
    http, redis = (f"127.0.0.1:{p}" for p in free_ports(2))
    brokers = [a for b in local_cluster.brokers for a in ("--broker", b)]
    up = mdpctl("--run-dir", str(local_cluster.run_dir), "up", *brokers, *FAST,
                "--service", "imgproxy=1", "--spare", "0", "--http", http, "--gearman", "off",
                "--sources-root", str(root / "photos"), "--sign-key", str(key),
                "--sign-salt", str(salt), "--redis", redis, code=code, env=NO_MEMORY_CACHE)
    assert up.returncode == 0, up.stdout + up.stderr
    assert f"redis    {redis} (the HTTP door's shared cache of images)" in up.stdout
    assert door(local_cluster, "redis")["serving"]

    signed = mdpctl("imgproxy", "sign", "--key", str(key), "--salt", str(salt), "--options",
                    "rs:fit:200:150", "--source", "local:///p1.jpg", "--ext", "png",
                    "--base", f"http://{http}", code=code)
    assert signed.returncode == 0, signed.stderr
    url = signed.stdout.strip()
    status, headers, body = fetch(url)
    assert (status, headers["X-Cache"]) == (200, "MISS"), body[:200]
    with Image.open(io.BytesIO(body)) as image:
        assert (image.format, image.size) == ("PNG", (200, 150))
    status, headers, again = fetch(url)
    assert (status, headers["X-Cache"], again) == (200, "HIT", body)
    assert renders(http) == 1 and redis_keys(redis) == 1
    unsigned = url.replace(url.split("/")[3], "unsafe", 1)
    assert fetch(unsigned)[0] == 403

    first = door(local_cluster, "redis")["pid"]
    assert isinstance(first, int)
    os.kill(first, signal.SIGKILL)
    status, headers, _ = fetch(url)  # Redis down, or back and empty: rendered again
    assert (status, headers["X-Cache"]) == (200, "MISS")
    assert renders(http) == 2
    wait_for(lambda: door(local_cluster, "redis")["serving"]
             and door(local_cluster, "redis")["pid"] != first, 30,
             "supervisord to start Redis again")
    wait_for(lambda: fetch(url)[1]["X-Cache"] == "HIT", 30, "hits from Redis again")
    back = door(local_cluster, "redis")["pid"]

    reload = local_cluster.ctl("reload")
    assert reload.returncode == 0, reload.stdout + reload.stderr
    assert "1 door(s) restarted" in reload.stdout  # mdp-http only
    assert door(local_cluster, "redis")["pid"] == back
    assert fetch(url)[1]["X-Cache"] == "HIT"  # the new door finds the old results

    run_dir = str(local_cluster.run_dir)
    same = mdpctl("--run-dir", run_dir, "up", "--redis", redis, code=code, env=NO_MEMORY_CACHE)
    assert same.returncode == 0 and "already running" in same.stdout, same.stderr
    other = mdpctl("--run-dir", run_dir, "up", "--sources-root", str(root), code=code,
                   env=NO_MEMORY_CACHE)
    assert other.returncode == 2 and f"sources_roots: {root / 'photos'} running, {root} " \
        "asked" in other.stderr, other.stderr

    text = local_cluster.ctl("status").stdout
    assert re.search(rf"^local\s+redis\s+{re.escape(redis)}\s+RUNNING", text, re.M), text
    recorded = json.loads((local_cluster.run_dir / "up.json").read_text())
    assert recorded["redis"] == redis and recorded["sources_roots"] == [str(root / "photos")]
    down = local_cluster.ctl("down")
    assert down.returncode == 0, down.stderr
    assert processes_under(root) == []
