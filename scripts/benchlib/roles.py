"""What the suite's children run: ``python -m benchlib.roles ROLE [options]``.

Load clients speak a line protocol with the suite. After connecting and warming up they
print ``READY``; then, for each ``GO START STOP`` line (``time.time()`` values) they wait for
START, run until STOP, and print ``RESULT {json}``; end of input ends them. Servers and
workers print ``READY [endpoint]`` once serving and exit when their input closes (the suite
also kills them outright). Only loopback addresses are used.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import zmq

from mdp import handlers
from mdp import protocol as p
from mdp.client import MDPClient
from mdp.worker import Worker, WorkerConfig
from testkit import gear_call, gear_client, gear_result, gear_worker

_MAX_ERRORS = 50
_RECV_TIMEOUT_MS = 10_000
Result = dict[str, Any]


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def exit_when_input_closes() -> None:
    """A daemon thread that ends the process when the suite closes our stdin or dies."""

    def watch() -> None:
        for _ in sys.stdin:
            pass
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def serve_runs(run: Callable[[float, float], Result]) -> int:
    """READY, then one RESULT per ``GO START STOP`` line, until input ends."""
    say("READY")
    for line in sys.stdin:
        words = line.split()
        if words and words[0] == "GO" and len(words) == 3:
            offset = time.time() - time.perf_counter()
            start, stop = float(words[1]) - offset, float(words[2]) - offset
            time.sleep(max(0.0, start - time.perf_counter()))
            say("RESULT " + json.dumps(run(start, stop)))
    return 0


def run_sync(call: Callable[[], None], start: float, stop: float) -> Result:
    """Call until ``stop`` (perf_counter), one at a time; every latency in microseconds."""
    perf = time.perf_counter
    latencies: list[float] = []
    errors = 0
    then = perf()
    while then < stop:
        try:
            call()
        except Exception as exc:  # counted and reported; a run with errors is flagged
            errors += 1
            print(f"error: {exc!r}", file=sys.stderr)
            if errors >= _MAX_ERRORS:
                break
        now = perf()
        latencies.append(now - then)
        then = now
    return {"count": len(latencies) - errors, "elapsed": then - start, "errors": errors,
            "lat_us": [round(x * 1e6) for x in latencies]}


def run_batches(batch: Callable[[], int], start: float, stop: float) -> Result:
    """Run pipelined batches until ``stop``; no per-request latency."""
    count = errors = 0
    while time.perf_counter() < stop:
        try:
            count += batch()
        except Exception as exc:
            errors += 1
            print(f"error: {exc!r}", file=sys.stderr)
            if errors >= _MAX_ERRORS:
                break
    return {"count": count, "elapsed": time.perf_counter() - start, "errors": errors,
            "lat_us": []}


def warm_up(call: Callable[[], Any], seconds: float) -> None:
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        call()


# --- the floor: raw pyzmq ------------------------------------------------------------------


def floor_server(args: argparse.Namespace) -> int:
    """A ROUTER that sends every message straight back."""
    ctx: zmq.Context = zmq.Context.instance()
    sock: zmq.Socket = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 1000)
    sock.bind("tcp://127.0.0.1:*")
    exit_when_input_closes()
    say("READY " + sock.getsockopt_string(zmq.LAST_ENDPOINT))
    while True:
        try:
            frames = sock.recv_multipart()
        except zmq.Again:
            continue
        sock.send_multipart(frames)


class FloorClient:
    """A DEALER connected to every floor server (round robin), raw bytes both ways."""

    def __init__(self, endpoints: list[str], size: int, window: int) -> None:
        self.sock: zmq.Socket = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVTIMEO, _RECV_TIMEOUT_MS)
        for address in endpoints:
            self.sock.connect(address)
        self.payload = b"x" * size
        self.window = window

    def once(self) -> None:
        self.sock.send(self.payload)
        if len(self.sock.recv()) != len(self.payload):
            raise ValueError("wrong reply size")

    def batch(self) -> int:
        """``window`` in flight, 64 windows' worth of replies, then drain."""
        sock, payload = self.sock, self.payload
        for _ in range(self.window):
            sock.send(payload)
        total = 64 * self.window
        for _ in range(total - self.window):
            sock.recv()
            sock.send(payload)
        for _ in range(self.window):
            sock.recv()
        return total


# --- DIPS ---------------------------------------------------------------------------------


class DipsClient:
    """An MDPClient sending ``{"d": <size bytes>}`` to a service."""

    def __init__(self, endpoints: list[str], size: int, window: int, batch: int,
                 service: str) -> None:
        # transport "auto": $DIPS_CLIENT_TRANSPORT=plain|zmq chooses, as for any sync client
        self.client = MDPClient(endpoints, timeout=30.0, retries=0, shuffle=False)
        self.size = size
        self.request = {"d": b"x" * size}
        self.window = window
        self.requests = [self.request] * batch
        self.service = service

    def once(self) -> None:
        reply = self.client.send(self.service, self.request)
        if len(reply["d"]) != self.size:
            raise ValueError("wrong reply")

    def batch(self) -> int:
        replies = self.client.send_many(self.service, self.requests, window=self.window)
        if len(replies[-1]["d"]) != self.size:
            raise ValueError("wrong reply")
        return len(replies)


# --- gearmand through the `gear` package -------------------------------------------------


class GearClient:
    """Sync foreground jobs through gearmand with the ``gear`` package (the kit's client)."""

    def __init__(self, port: int, size: int) -> None:
        self.client = gear_client([port], f"bench-client-{os.getpid()}")
        self.payload = b"x" * size

    def once(self) -> None:
        job = gear_call(self.client, "echo", self.payload, timeout_s=10)
        if gear_result(job) != self.payload:
            raise ValueError("gearman job failed or wrong reply")


def gear_echo_worker(args: argparse.Namespace) -> int:
    worker = gear_worker([args.port], ["echo"], f"bench-worker-{os.getpid()}", wait_s=10)
    exit_when_input_closes()
    say("READY")
    while True:
        job = worker.getJob()
        job.sendWorkComplete(job.arguments)


# --- load clients --------------------------------------------------------------------------


def client(args: argparse.Namespace) -> int:
    driver: Any
    if args.kind == "floor":
        driver = FloorClient(args.endpoint, args.size, args.window)
    elif args.kind == "dips":
        driver = DipsClient(args.endpoint, args.size, args.window, args.batch, args.service)
    else:
        driver = GearClient(args.port, args.size)
    warm_up(driver.once, args.warmup)
    if args.mode == "sync":
        return serve_runs(lambda start, stop: run_sync(driver.once, start, stop))
    return serve_runs(lambda start, stop: run_batches(driver.batch, start, stop))


def fault_client(args: argparse.Namespace) -> int:
    """Sync requests with default client settings; each one's start, latency and outcome."""
    mdp = MDPClient(args.broker, shuffle=False)  # all start at the first broker
    counter = iter(range(10**9))

    def run(start: float, stop: float) -> Result:
        records: list[tuple[float, float, int]] = []
        perf = time.perf_counter
        while (then := perf()) < stop:
            request = {"i": next(counter), "token": os.urandom(8), "sleep": args.sleep_s}
            try:
                reply = mdp.send(args.service, request)
                ok = int(reply.get("i") == request["i"] and reply.get("token") == request["token"])
            except Exception as exc:  # a lost request: recorded as -1
                print(f"error: {exc!r}", file=sys.stderr)
                ok = -1
            records.append((round(then - start, 6), round(perf() - then, 6), ok))
        return {"records": records}

    warm_up(lambda: mdp.send(args.service, {"sleep": 0}), args.warmup)
    return serve_runs(run)


# --- workers hosted as threads, and a flood of queued requests ----------------------------


def thread_workers(args: argparse.Namespace) -> int:
    """``--count`` real DIPS workers as threads of one process."""
    hold = threading.Event()

    def sleeper(request: dict[str, Any]) -> Any:
        delay = request.get("sleep", args.sleep_s)
        time.sleep(float(delay) if isinstance(delay, int | float) else args.sleep_s)
        return request

    def blocker(request: dict[str, Any]) -> Any:
        hold.wait(3600)
        return request

    workers = []
    for _ in range(args.count):
        config = WorkerConfig(brokers=args.broker, service=args.service, time_limit_s=3600.0,
                              busy_after_s=args.busy_after)
        # both wait with the GIL released (time.sleep, Event.wait) and do little else: a
        # user's handler like them may declare it, and gets auto's plain link
        handler = handlers.plain(args.service, blocker if args.block else sleeper,
                                 yields_gil=True)
        workers.append(Worker(config, handler))
    for worker in workers:
        threading.Thread(target=worker.run, daemon=True).start()
    exit_when_input_closes()
    say("READY")
    while True:
        time.sleep(3600)


def flood(args: argparse.Namespace) -> int:
    """Queue ``--count`` DIPS requests (long deadlines) at a broker, then hold still."""
    sock: zmq.Socket = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.connect(args.broker)
    body = [p.pack({"i": 0, "pad": b"x" * 16})]
    service = args.service.encode()
    for rid in range(1, args.count + 1):
        sock.send_multipart(p.client_submit(service, rid, 3_600_000, body))
    exit_when_input_closes()
    say("READY")
    while True:
        time.sleep(3600)


# --- command line -------------------------------------------------------------------------


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchlib.roles")
    roles = parser.add_subparsers(dest="role", required=True)
    roles.add_parser("floor-server")
    c = roles.add_parser("client")
    c.add_argument("--kind", choices=["floor", "dips", "gear"], required=True)
    c.add_argument("--mode", choices=["sync", "pipe"], required=True)
    c.add_argument("--size", type=int, required=True)
    c.add_argument("--endpoint", action="append", default=[])
    c.add_argument("--port", type=int, default=0)
    c.add_argument("--service", default="echo")
    c.add_argument("--window", type=int, default=64)
    c.add_argument("--batch", type=int, default=1024)
    c.add_argument("--warmup", type=float, default=0.3)
    f = roles.add_parser("fault-client")
    f.add_argument("--broker", action="append", required=True)
    f.add_argument("--service", default="echo")
    f.add_argument("--sleep-s", type=float, default=0.01)
    f.add_argument("--warmup", type=float, default=0.3)
    g = roles.add_parser("gear-worker")
    g.add_argument("--port", type=int, required=True)
    t = roles.add_parser("thread-workers")
    t.add_argument("--broker", action="append", required=True)
    t.add_argument("--service", required=True)
    t.add_argument("--count", type=int, required=True)
    t.add_argument("--sleep-s", type=float, default=0.02)
    t.add_argument("--block", action="store_true")
    t.add_argument("--busy-after", type=float, default=WorkerConfig.busy_after_s)
    fl = roles.add_parser("flood")
    fl.add_argument("--broker", required=True)
    fl.add_argument("--service", required=True)
    fl.add_argument("--count", type=int, required=True)
    return parser.parse_args(argv)


ROLES: dict[str, Callable[[argparse.Namespace], int]] = {
    "floor-server": floor_server,
    "client": client,
    "fault-client": fault_client,
    "gear-worker": gear_echo_worker,
    "thread-workers": thread_workers,
    "flood": flood,
}


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    return ROLES[args.role](args)


if __name__ == "__main__":
    raise SystemExit(main())
