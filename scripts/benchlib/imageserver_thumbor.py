"""thumbor 7.8 for the image-server section: its own virtual environment (it pins
Pillow < 13), a configuration with the file loader, and the server as a child process.

The environment is made once, with pip from PyPI, under ``$DIPS_BENCH_CACHE`` (default
``~/.cache/dips-bench``) and reused by later runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from benchlib.procs import BenchError, Child, Children, wait_for
from testkit import free_port

VERSION = "7.8.0"
CACHE = Path(os.environ.get("DIPS_BENCH_CACHE", Path.home() / ".cache" / "dips-bench"))


def ensure_venv(note: object = print) -> Path:
    """The python of a virtual environment with thumbor installed (made when missing)."""
    venv = CACHE / f"thumbor-{VERSION}"
    python = venv / "bin" / "python"
    if python.exists() and (venv / "bin" / "thumbor").exists():
        return python
    note(f"  installing thumbor {VERSION} into {venv} (once; pip from PyPI)")  # type: ignore[operator]
    venv.parent.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        subprocess.run([str(python), "-m", "pip", "install", "-q", f"thumbor=={VERSION}"],
                       check=True, timeout=900)
    except (subprocess.SubprocessError, OSError) as exc:
        raise BenchError(f"cannot install thumbor {VERSION} into {venv}: {exc}") from exc
    return python


def write_config(path: Path, photos: Path, threads: int, quality: int) -> None:
    """A thumbor.conf: the file loader on ``photos``, no storage, no result storage."""
    path.write_text("\n".join([
        "LOADER = 'thumbor.loaders.file_loader'",
        f"FILE_LOADER_ROOT_PATH = {str(photos)!r}",
        "STORAGE = 'thumbor.storages.no_storage'",
        "RESULT_STORAGE = None",
        f"ENGINE_THREADPOOL_SIZE = {threads}",
        f"QUALITY = {quality}",
        "AUTO_WEBP = False",
        "MAX_WIDTH = 0",
        "MAX_HEIGHT = 0",
        "RESPECT_ORIENTATION = True",
        "",
    ]))


def start(kids: Children, python: Path, photos: Path, tmp: Path, *, processes: int,
          threads: int, quality: int) -> tuple[Child, int]:
    """thumbor listening on a loopback port (answering a health check)."""
    conf = tmp / "thumbor.conf"
    write_config(conf, photos, threads, quality)
    port = free_port()
    server = kids.spawn("thumbor", [str(python.parent / "thumbor"), "--ip", "127.0.0.1",
                                    "--port", str(port), "--conf", str(conf),
                                    "--processes", str(processes), "--log-level", "warning"])

    def healthy() -> bool:
        if not server.alive():
            raise BenchError(f"thumbor exited{server.log_tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthcheck", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    wait_for(healthy, 60, "thumbor to answer /healthcheck")
    return server, port


def stop(server: Child) -> None:
    """Kill thumbor and the processes it forked (``--processes``): its whole process group
    (every bench child starts a session of its own), then reap the parent."""
    try:
        os.killpg(server.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    server.kill()


def url(name: str, width: int, quality: int) -> str:
    """thumbor's unsafe URL for ``name`` scaled to ``width`` wide, JPEG at ``quality``."""
    return f"/unsafe/{width}x0/filters:quality({quality}):format(jpeg)/{name}"
