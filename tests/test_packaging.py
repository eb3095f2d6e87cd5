"""The core installs alone: a web application that only calls DIPS needs pyzmq and msgpack.

``mdp`` (protocol, broker, worker, clients, cores) must not import the doors', renderers' or
operations' dependencies; and ``pip install .`` (no extras), as the README documents it,
must give a working ``MDPClient`` and ``AsyncMDPClient`` in a fresh virtual environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from clusterkit import Cluster

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("aiohttp", "prometheus_client", "PIL", "supervisor", "tqdm", "redis", "renderers",
         "mdp_http", "mdp_gearman", "mdpctl")

_LIST_HEAVY = f"""
import sys
import mdp, mdp.protocol, mdp.client, mdp.aio, mdp.worker, mdp.broker, mdp.clientcore
import mdp.workercore, mdp.dispatch, mdp.status, mdp.statusfetch, mdp.errors, mdp.options, mdp.keys
heavy = {HEAVY!r}
print(sorted(m for m in sys.modules if m.split(".")[0] in heavy))
"""


def test_a_broker_or_worker_without_curve_does_not_load_asyncio() -> None:
    """Only the asyncio client and CURVE's ZAP thread need it: every broker and worker
    process of a fleet would otherwise carry it (about 20 ms of start-up, 2 MB each)."""
    code = "import sys, mdp.broker, mdp.worker; print('asyncio' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_importing_the_core_pulls_in_no_door_renderer_or_ops_dependency() -> None:
    done = subprocess.run([sys.executable, "-c", _LIST_HEAVY], capture_output=True, text=True,
                          timeout=60, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


_CALL_ECHO = """
import asyncio, json, sys
from mdp.aio import AsyncMDPClient
from mdp.client import MDPClient

broker = sys.argv[1]
with MDPClient([broker], timeout=10.0) as client:
    sync_reply = client.send("echo", {"via": "MDPClient"})

async def main():
    async with AsyncMDPClient([broker], timeout=10.0) as client:
        return await client.send("echo", {"via": "AsyncMDPClient"})

async_reply = asyncio.run(main())
heavy = %r
print(json.dumps({"sync": sync_reply, "async": async_reply,
                  "heavy": sorted(m for m in sys.modules if m.split(".")[0] in heavy)}))
""".replace("%r", repr(HEAVY))


@pytest.mark.slow
def test_a_client_only_install_in_a_fresh_venv_calls_a_real_cluster(
        tmp_path: Path, cluster: Cluster) -> None:
    env_dir = tmp_path / "venv"
    # no pip of its own (ensurepip costs 5-10 s): this process's pip installs into it
    venv.EnvBuilder(with_pip=False, clear=True).create(env_dir)
    python = env_dir / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    # exactly what README documents for a web application: the repository, no extras
    install = subprocess.run([*pip, "install", "--quiet", str(REPO)],
                             capture_output=True, text=True, timeout=600,
                             env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert install.returncode == 0, install.stdout + install.stderr
    listed = subprocess.run([*pip, "list", "--format", "json"],
                            capture_output=True, text=True, timeout=120, check=True,
                            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    installed = {entry["name"].lower() for entry in json.loads(listed.stdout)}
    assert {"pyzmq", "msgpack"} <= installed
    assert not installed & {"aiohttp", "prometheus-client", "pillow", "supervisor", "tqdm"}

    broker = cluster.broker()
    cluster.worker([broker], "echo")
    called = subprocess.run([str(python), "-c", _CALL_ECHO, broker.endpoint],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path,
                            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert called.returncode == 0, called.stderr
    result = json.loads(called.stdout)
    assert result == {"sync": {"via": "MDPClient"}, "async": {"via": "AsyncMDPClient"},
                      "heavy": []}
