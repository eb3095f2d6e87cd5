"""Where the local cluster lives, wherever mdpctl is run from.

``mdpctl up`` puts the cluster in a per-user run directory, ``$XDG_STATE_HOME/dips/run``
(``~/.local/state/dips/run`` by default), unless ``--run-dir`` or ``$DIPS_RUN_DIR`` names
another, and notes the run directory it used in ``$XDG_STATE_HOME/dips/last-run-dir``.
The other commands, when no run directory is named, look for a running cluster in
this order: the default run directory and the one noted last.  A cluster elsewhere is not
taken for the user's, even when its broker holds a default port (it may be another
user's, or another test's, and `down` would stop it): "no cluster" says where mdpctl looked
and what answers on the default broker ports, with the run directory of a DIPS broker found
there (every program of a cluster runs in its run directory) and the --run-dir that
reaches it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mdpctl import ports
from mdpctl.cluster import DEFAULT_BROKERS, SOCKET_NAME
from mdpctl.endpoints import tcp_host_port

log = logging.getLogger(__name__)

RUN_DIR_ENV = "DIPS_RUN_DIR"
STATE_ENV = "XDG_STATE_HOME"
LAST_NAME = "last-run-dir"


def state_dir() -> Path:
    """``$XDG_STATE_HOME/dips``, or ``~/.local/state/dips``."""
    base = os.environ.get(STATE_ENV) or str(Path.home() / ".local" / "state")
    return Path(base) / "dips"


def default_run_dir() -> Path:
    return state_dir() / "run"


def note_last(run_dir: Path) -> None:
    """Remember ``run_dir`` as the last one ``up`` used (best effort)."""
    try:
        state_dir().mkdir(parents=True, exist_ok=True)
        tmp = state_dir() / f".{LAST_NAME}.{os.getpid()}"
        tmp.write_text(str(run_dir) + "\n", encoding="utf-8")
        tmp.replace(state_dir() / LAST_NAME)
    except OSError as exc:
        log.info("cannot note the run directory in %s: %s", state_dir(), exc)


def last_run_dir() -> Path | None:
    try:
        text = (state_dir() / LAST_NAME).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return Path(text) if text else None


def supervisord_answers(run_dir: Path) -> bool:
    """True when a supervisord listens on the run directory's control socket."""
    import socket

    path = run_dir / SOCKET_NAME
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


@dataclass
class Search:
    """The result of looking for the local cluster."""

    run_dir: Path | None
    looked_in: list[Path] = field(default_factory=list)
    on_ports: list[str] = field(default_factory=list)  # what holds each default port
    how: str = ""

    def not_found(self) -> str:
        """One line: no cluster, where we looked, what answers on the ports."""
        places = ", ".join(str(p) for p in dict.fromkeys(self.looked_in))
        ports_text = "; ".join(self.on_ports)
        return (f"no cluster is running in {places} ({ports_text}); "
                "`mdpctl up` starts one, --run-dir names another run directory")


def _describe_port(endpoint: str, found: Search) -> None:
    """Note in ``found`` what holds ``endpoint``'s port (a DIPS broker: its run directory)."""
    host, port = tcp_host_port(endpoint)
    holder = ports.holder(port)
    if holder is None:
        found.on_ports.append(f"nothing listens on {endpoint}")
    elif holder.cwd and "mdp.broker" in holder.command and supervisord_answers(Path(holder.cwd)):
        found.on_ports.append(f"{endpoint}: a DIPS broker of the cluster in {holder.cwd}, "
                              f"which `mdpctl --run-dir {holder.cwd}` reaches")
    else:
        found.on_ports.append(f"{endpoint} is held by {holder.describe()}")


def find_cluster() -> Search:
    """Find the user's running local cluster without a run directory named on the command
    line; when there is none, note what answers on the default broker ports."""
    found = Search(None)
    candidates = [default_run_dir()]
    last = last_run_dir()
    if last is not None:
        candidates.append(last)
    for run_dir in candidates:
        found.looked_in.append(run_dir)
        if supervisord_answers(run_dir):
            found.run_dir = run_dir
            found.how = "default" if run_dir == candidates[0] else f"noted in {state_dir()}"
            return found
    describe_ports(found, DEFAULT_BROKERS)  # described, never adopted: it may be anyone's
    return found


def describe_ports(found: Search, endpoints: Sequence[str]) -> None:
    """Note in ``found`` what listens on each of ``endpoints``."""
    for endpoint in endpoints:
        _describe_port(endpoint, found)
