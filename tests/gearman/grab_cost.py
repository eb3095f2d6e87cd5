"""The door's CPU per Gearman job on its worker side, at 1 and at many functions (a program,
not a test: ``python tests/gearman/grab_cost.py --functions 1 64 --rounds 5``).

By default, in process and without sockets (the figure the machine's noise moves least):
a :class:`~mdp_gearman.workers.GearmanWorker` whose :class:`~mdp_gearman.proxycore.ProxyCore`
has a link per function at two brokers, all welcomed, runs jobs as the door does: a TASK
arrives on a link (the driver tells the worker, arms its timer: ``next_deadline``), the
Gearman worker sends GRAB_JOB (JOB_ASSIGN), WORK_COMPLETE, GRAB_JOB (NO_JOB) and PRE_SLEEP,
the timer is armed after each; every broker heartbeats every link once a (simulated)
second. The figure is CPU (``time.process_time``) per job, each tree in a process of its own.

With ``--door``: a broker and a door run as processes; this process is a raw
Gearman worker of N functions (``CAN_DO`` fn0 ... fn{N-1}) that takes each job with
``GRAB_JOB`` and answers ``WORK_COMPLETE`` (``PRE_SLEEP`` when there is none), and one
MDPClient caller that sends ``fn0`` jobs one after another. The figure is the door's CPU
(user + system, from /proc) per job over the jobs after a warm-up: what a job costs the
door's worker side (its link driver, worker core and Gearman worker) at that many
functions, since the links' count grows with them (one per function and broker). Rounds
alternate the function counts and the trees (``--tree``: source trees to measure, this one
by default, so that an older checkout is measured beside it), so that the machine's noise
falls on each alike.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
if "PYTHONPATH" not in os.environ:
    sys.path[:0] = [str(ROOT)]

from mdp.client import MDPClient  # noqa: E402
from mdp_gearman import packets as g  # noqa: E402
from mdp_gearman.packets import T  # noqa: E402
from testkit import count_workers, cpu_seconds, free_port, wait_for  # noqa: E402

_LISTENING = re.compile(r"mdp-gearman listening on [0-9.]+:(\d+)")


class Worker(threading.Thread):
    """The raw Gearman worker: takes and answers jobs until told to stop."""

    def __init__(self, port: int, functions: int) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""
        for n in range(functions):
            self.send(T.CAN_DO, b"fn%d" % n)
        self.stop = False

    def send(self, kind: int, *args: bytes) -> None:
        self.sock.sendall(g.build_request(kind, *args))

    def recv(self) -> tuple[int, bytes]:
        while len(self.buffer) < 12 or len(self.buffer) < 12 + struct.unpack(
                ">I", self.buffer[8:12])[0]:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("the door closed the connection")
            self.buffer += chunk
        _, kind, size = struct.unpack(">4sII", self.buffer[:12])
        body, self.buffer = self.buffer[12:12 + size], self.buffer[12 + size:]
        return kind, body

    def run(self) -> None:
        try:
            self.serve()
        except OSError:  # the door is gone (the run is over)
            pass

    def serve(self) -> None:
        self.send(T.GRAB_JOB)
        while not self.stop:
            kind, body = self.recv()
            if kind == T.JOB_ASSIGN:
                self.send(T.WORK_COMPLETE, body.split(b"\0", 1)[0], b"ok")
                self.send(T.GRAB_JOB)
            elif kind == T.NO_JOB:
                self.send(T.PRE_SLEEP)
            elif kind == T.NOOP:
                self.send(T.GRAB_JOB)


def spawn(tree: Path, args: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(tree), PYTHONUNBUFFERED="1")
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, *args], stdout=out, stderr=out, env=env,
                                cwd=str(tree))


def measure(tree: Path, functions: int, jobs: int, warmup: int, tmp: Path) -> float:
    """One run: the door's CPU microseconds per job."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    procs = [spawn(tree, ["-m", "mdp.broker", "--bind", endpoint], tmp / "broker.log")]
    try:
        door_log = tmp / "door.log"
        door = spawn(tree, ["-m", "mdp_gearman", "--listen", "127.0.0.1:0", "--broker",
                            endpoint, "--worker-functions", "*"], door_log)
        procs.append(door)
        match = wait_for(lambda: _LISTENING.search(door_log.read_text()), 20, "the door")
        worker = Worker(int(match.group(1)), functions)
        worker.start()
        for name in ("fn0", f"fn{functions - 1}"):
            wait_for(lambda n=name: count_workers(endpoint, n) == 1, 20, f"{name} registered")
        with MDPClient([endpoint], timeout=10.0) as client:
            for n in range(warmup):
                client.send("fn0", {"n": n})
            before = cpu_seconds(door.pid)
            for n in range(jobs):
                client.send("fn0", {"n": n})
            spent = cpu_seconds(door.pid) - before
        worker.stop = True
        return spent / jobs * 1e6
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def in_process(functions: int, jobs: int, warmup: int) -> float:
    """CPU microseconds per job of the door's worker side, without sockets (see above)."""
    from mdp import protocol as p
    from mdp.actions import Opened, Received
    from mdp_gearman.proxycore import ProxyCore
    from mdp_gearman.workers import GearmanWorker, WorkerSettings

    brokers = ("tcp://b0", "tcp://b1")
    sent: list[bytes] = []
    handles = iter(range(1, 10**9))
    cores: list[ProxyCore] = []

    class Driver:
        def __init__(self, core: ProxyCore) -> None:
            cores.append(core)

        def start(self) -> None:
            core = cores[-1]
            core.start(0.0)
            for action in core.take_actions():
                core.handle(Opened(action.link), 0.0)  # type: ignore[attr-defined]

        def pump(self) -> None:
            cores[-1].take_actions()

        def drain(self) -> None: ...

        def close(self, abrupt: bool) -> None: ...

    settings = WorkerSettings(brokers, allowed=("*",))
    worker = GearmanWorker(settings, "127.0.0.1:1", sent.append,
                           lambda: b"H:h:%d" % next(handles), lambda c, w: Driver(c))
    for n in range(functions):
        worker.on_packet(g.Packet(T.CAN_DO, (b"fn%d" % n,)), 0.0)
    worker.on_packet(g.Packet(T.PRE_SLEEP, ()), 0.0)
    core = cores[-1]
    welcome = p.worker_welcome(b"id", {"broker": "v", "instance": "x", "batch": True,
                                       "progress": True, "announce": True})[1:]
    heartbeat = p.worker_command(b"id", p.HEARTBEAT)[1:]
    for i in range(len(core.links)):
        core.handle(Received(i, welcome), 0.0)
    body = [p.pack({"image": b"x"})]
    now = 0.0
    started = 0.0

    def arm() -> None:
        core.next_deadline(now)
        worker.next_deadline(now)

    for n in range(warmup + jobs):
        if n == warmup:
            started = time.process_time()
        now += 0.001
        if n % 1000 == 0:  # a second: each broker's heartbeat burst, answered
            for i in range(len(core.links)):
                core.handle(Received(i, heartbeat), now)
            worker.on_input(now)
            core.take_actions()
            arm()
        core.handle(Received(0, p.to_worker(b"id", b"k%d" % n, body, True, 10_000)[1:]), now)
        worker.on_input(now)
        core.take_actions()
        arm()
        worker.on_packet(g.Packet(T.GRAB_JOB, ()), now)
        arm()
        handle = sent[-1][12:].split(b"\0", 1)[0]
        worker.on_packet(g.Packet(T.WORK_COMPLETE, (handle, b"ok")), now)
        arm()
        worker.on_packet(g.Packet(T.GRAB_JOB, ()), now)
        arm()
        worker.on_packet(g.Packet(T.PRE_SLEEP, ()), now)
        arm()
        sent.clear()
    return (time.process_time() - started) / jobs * 1e6


def run_in(tree: Path, functions: int, jobs: int, warmup: int) -> float:
    """``in_process`` in a process of its own on ``tree``'s code."""
    out = subprocess.run([sys.executable, __file__, "--one", str(functions), "--jobs",
                          str(jobs), "--warmup", str(warmup)], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(tree)), cwd=str(tree), check=True)
    return float(out.stdout.split()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--functions", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--tree", type=Path, nargs="+", default=[ROOT],
                        help="source trees to measure, alternated (default: this one)")
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tmp", type=Path, default=Path("/tmp/dips-grab-cost"))
    parser.add_argument("--door", action="store_true",
                        help="measure a real door and broker (processes) instead")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # (a run of in_process)
    args = parser.parse_args()
    if args.one:
        print(in_process(args.one, args.jobs, args.warmup))
        return 0
    args.tmp.mkdir(parents=True, exist_ok=True)
    results: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.rounds):
        for tree in args.tree:
            for functions in args.functions:
                cost = (measure(tree, functions, args.jobs, args.warmup, args.tmp) if args.door
                        else run_in(tree, functions, args.jobs, args.warmup))
                results.setdefault((str(tree), functions), []).append(cost)
                print(f"{tree}  {functions:3d} functions  {cost:6.1f} us/job", flush=True)
    print("median:")
    for (tree, functions), costs in results.items():
        costs.sort()
        print(f"{tree}  {functions:3d} functions  {costs[len(costs) // 2]:6.1f} us/job "
              f"(runs: {' '.join(f'{c:.0f}' for c in costs)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
