"""The ZeroMQ guide's Python Majordomo stack (mdbroker, mdwrkapi, mdcliapi) beside DIPS.

The guide's code is not ours and is not in this repository: the suite takes its five files
at run time from the zguide repository at a pinned commit, either from a checkout named by
``--zguide DIR`` or ``$DIPS_ZGUIDE`` (read with ``git show COMMIT:PATH``, or from its
``examples/Python`` directory when it is no git checkout), or else over HTTPS from GitHub at
that commit. When neither works the guide's figures are left out and the report says why.

Its broker and worker run as they are (their classes, bound and connected to our loopback
endpoints); the load client is ``MajorDomoClient.send`` (a REQ socket, Lazy Pirate) in the
suite's own timed loop, sync only, with the same body as DIPS's requests.

    python -m benchlib.guide broker|worker|client --dir DIR [...]   (the suite's children)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

from benchlib.markdown import met
from benchlib.plan import SMALL, Plan
from benchlib.procs import Child, Children
from benchlib.stats import SYNC, Figure, Shape
from testkit import free_port, tcp_endpoint

NAME = "guide (Python)"
COMMIT = "6752d24b215997aa161e6896941bfd6010d4d3f5"  # booksbyus/zguide, 2020-02
FILES = ("MDP.py", "zhelpers.py", "mdbroker.py", "mdwrkapi.py", "mdcliapi.py")
SUBDIR = "examples/Python"
URL = f"https://raw.githubusercontent.com/booksbyus/zguide/{COMMIT}/{SUBDIR}/{{name}}"


def fetch(into: Path, checkout: str | None) -> tuple[Path | None, str]:
    """The guide's files in ``into``; (None, why) when they cannot be had."""
    into.mkdir(parents=True, exist_ok=True)
    source = checkout or os.environ.get("DIPS_ZGUIDE")
    try:
        for name in FILES:
            (into / name).write_bytes(_read(name, Path(source) if source else None))
    except (OSError, subprocess.SubprocessError) as exc:
        where = source or URL.format(name="...")
        return None, f"the ZeroMQ guide's Python Majordomo files could not be read from " \
                     f"{where} ({exc}); give a zguide checkout with --zguide"
    return into, f"zguide {COMMIT[:10]} ({source or 'github'})"


def _read(name: str, checkout: Path | None) -> bytes:
    if checkout is None:
        with urllib.request.urlopen(URL.format(name=name), timeout=20) as answer:  # noqa: S310
            return bytes(answer.read())
    if (checkout / ".git").exists() or (checkout / "HEAD").exists():
        return subprocess.run(["git", "-C", str(checkout), "show", f"{COMMIT}:{SUBDIR}/{name}"],
                              check=True, capture_output=True, timeout=30).stdout
    for folder in (checkout / SUBDIR, checkout):
        if (folder / name).exists():
            return (folder / name).read_bytes()
    raise FileNotFoundError(f"{name} not in {checkout}")


class Guide:
    """The guide's broker and echo workers for a shape; its clients, sync only."""

    name = NAME
    modes: tuple[str, ...] = (SYNC,)

    def __init__(self, kids: Children, plan: Plan, files: Path) -> None:
        self.kids, self.plan, self.files = kids, plan, files
        self.processes: list[Child] = []
        self.address = ""

    def _child(self, name: str, role: str, *args: str) -> Child:
        return self.kids.spawn(name, [sys.executable, "-m", "benchlib.guide", role,
                                      "--dir", str(self.files), *args], talk=True)

    def start(self, shape: Shape) -> None:
        self.address = tcp_endpoint(free_port())
        broker = self._child("guide-broker", "broker", "--endpoint", self.address)
        broker.expect("READY", 30)
        self.processes = [broker]
        for _ in range(shape.workers):
            worker = self._child("guide-worker", "worker", "--endpoint", self.address)
            worker.expect("READY", 30)
            self.processes.append(worker)

    def clients(self, mode: str, size: int, shape: Shape) -> list[Child]:
        return [self._child("guide-client", "client", "--endpoint", self.address,
                            "--size", str(size), "--warmup", str(self.plan.warmup_s))
                for _ in range(shape.clients)]

    def stop(self) -> None:
        self.kids.kill(*self.processes)
        self.processes = []


# --- the report ------------------------------------------------------------------------------

TARGET = 1.3  # DIPS sync, 1 client / 1 worker, at least this many times the guide's stack
FLOOR_TARGET = 0.3  # and at least this share of the raw pyzmq floor


def target_rows(find: Callable[[str, str, int, Shape], Figure | None], dips: str,
                floor: str) -> list[list[str]]:
    """The sync call's targets (issue 15), from figures of the same run."""
    one = Shape(1, 1)
    ours = find(dips, SYNC, SMALL, one)
    if ours is None:
        return []
    rows = []
    guide = find(NAME, SYNC, SMALL, one)
    if guide is not None and guide.rate:
        times = ours.rate / guide.rate
        rows.append([f"sync 5 B, 1/1: ≥ {TARGET:g}× the ZeroMQ guide's Python Majordomo stack",
                     f"{times:.2f}× ({ours.rate:,.0f} vs {guide.rate:,.0f}/s)",
                     met(times >= TARGET)])
    base = find(floor, SYNC, SMALL, one)
    if base is not None and base.rate:
        share = ours.rate / base.rate
        rows.append([f"sync 5 B, 1/1: ≥ {FLOOR_TARGET:g} of the raw pyzmq floor",
                     f"{share:.2f} ({ours.rate:,.0f} vs {base.rate:,.0f}/s)",
                     met(share >= FLOOR_TARGET)])
    return rows


# --- the children -----------------------------------------------------------------------------


def _import(files: str) -> None:
    sys.path.insert(0, files)


def broker(args: argparse.Namespace) -> int:
    _import(args.dir)
    import mdbroker  # the guide's

    from benchlib.roles import exit_when_input_closes, say

    guide_broker = mdbroker.MajorDomoBroker(False)
    guide_broker.bind(args.endpoint)
    exit_when_input_closes()
    say("READY " + args.endpoint)
    guide_broker.mediate()
    return 0


def worker(args: argparse.Namespace) -> int:
    _import(args.dir)
    import mdwrkapi  # the guide's

    from benchlib.roles import exit_when_input_closes, say

    guide_worker = mdwrkapi.MajorDomoWorker(args.endpoint, b"echo", False)
    exit_when_input_closes()
    say("READY")
    reply = None
    while True:
        request = guide_worker.recv(reply)
        if request is None:
            return 0
        reply = request


def client(args: argparse.Namespace) -> int:
    _import(args.dir)
    import mdcliapi  # the guide's

    from benchlib.roles import run_sync, serve_runs, warm_up
    from mdp import protocol as p

    guide_client = mdcliapi.MajorDomoClient(args.endpoint, False)
    body = p.pack({"d": b"x" * args.size})  # the same request as DIPS's

    def once() -> None:
        reply = guide_client.send(b"echo", [body])
        if reply != [body]:
            raise ValueError("the guide's client got no reply or a wrong one")

    warm_up(once, args.warmup)
    return serve_runs(lambda start, stop: run_sync(once, start, stop))


ROLES: dict[str, Callable[[argparse.Namespace], int]] = {
    "broker": broker, "worker": worker, "client": client}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchlib.guide")
    parser.add_argument("role", choices=sorted(ROLES))
    parser.add_argument("--dir", required=True, help="where the guide's files are")
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--size", type=int, default=5)
    parser.add_argument("--warmup", type=float, default=0.3)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    return ROLES[args.role](args)


if __name__ == "__main__":
    raise SystemExit(main())
