"""Calls one request costs the broker, core alone and whole (shell, plain ROUTER, ZMTP).

Run it against two trees to compare them (a change must add no call per request):

    PYTHONPATH=TREE python tests/helpers/broker_hotpath.py

* core, lone: a SUBMIT that came alone, given at once to an idle DIPS worker, and that
  worker's REPLY (as ``hotpath_count.py`` counts it);
* core, pipelined: a batched SUBMIT of ``BATCH`` requests to ``BATCH`` busy-then-idle
  workers and their ``BATCH`` lone REPLYs, handled as one pass (``more``) and flushed; per
  request;
* whole broker, lone: ``Broker.run_once`` over a real plain ROUTER on an ipc socket, a
  DIPS client's SUBMIT in, the TASK out, the worker's REPLY in, the RESULT out (the peers
  are raw ZMTP connections in this process, not counted);
* whole broker, pipelined: the same with ``BATCH`` workers and a batched SUBMIT of
  ``BATCH`` requests, their REPLYs read together; per request.

Counted with ``sys.settrace`` (Python calls) and ``sys.setprofile`` (C calls), after
warm-up rounds.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from typing import TypeVar

from mdp import protocol as p
from mdp.broker import Broker
from mdp.brokercore import BrokerCore
from mdp.config import BrokerConfig
from mdp.workercore import ready_meta
from mdp.zmtp import ZmtpConnection
from tests.helpers.hotpath_count import REPLY, counting

T = TypeVar("T")
BATCH = 16
BODY = b"\x81\xa1d\xc4\x05xxxxx"


def core_pipelined_rounds() -> Callable[[], None]:
    core = BrokerCore(BrokerConfig(bind=["inproc://x"]), 0.0, instance="one")
    workers = [b"W%d" % n for n in range(BATCH)]
    for n, identity in enumerate(workers):
        core.receive([identity, *p.ready(b"echo", ready_meta({"pid": n}, 16, True))], "", 0.0)
    core.receive([b"C", *p.client_hello(batch=True, progress=True)], "", 0.0)
    core.take_actions()
    rids = iter(range(1, 1 << 30))

    def round_() -> None:
        now = 0.1
        core.receive([b"C", *p.client_submit_batch(b"echo", [next(rids) for _ in workers],
                                                   30000, [BODY] * BATCH)], "", now)
        core.flush(now)
        core.take_actions()
        replies = [[w.identity, *p.reply(next(iter(w.tasks)), [REPLY])]
                   for w in core.dispatcher.busy.values()]
        for frames in replies:
            core.receive(frames, "", now, True)
        core.flush(now)
        core.take_actions()
    return round_


def untraced(run: Callable[[], T]) -> T:
    """``run()`` with the counting off (a peer's own work is not the broker's)."""
    trace, profile = sys.gettrace(), sys.getprofile()
    sys.setprofile(None)
    sys.settrace(None)
    try:
        return run()
    finally:
        sys.settrace(trace)
        sys.setprofile(profile)


class _Peer:
    """A raw ZMTP DEALER connected to the broker, blocking reads with a timeout."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(5.0)
        self.sock.connect(path)
        self.zmtp = ZmtpConnection(1 << 20)
        self.got: list[list[bytes]] = []

    def send(self, frames: list[bytes]) -> None:
        self.zmtp.send_message(frames)
        self.sock.sendall(b"".join(self.zmtp.data_to_send()))

    def pump(self) -> None:
        if self.zmtp.wants_write:
            self.sock.sendall(b"".join(self.zmtp.data_to_send()))

    def look(self) -> None:
        """Take what came, without waiting."""
        self.sock.setblocking(False)
        try:
            self.got += self.zmtp.receive_data(self.sock.recv(65536))
        except BlockingIOError:
            pass
        finally:
            self.sock.settimeout(5.0)
        self.pump()

    def expect(self) -> list[bytes]:
        while not self.got:
            self.got += self.zmtp.receive_data(self.sock.recv(65536))
            self.pump()
        return self.got.pop(0)


def whole_lone_rounds() -> tuple[Callable[[], None], Callable[[], None]]:
    path = os.path.join(tempfile.mkdtemp(prefix="hotpath-"), "b.ipc")
    broker = Broker(BrokerConfig(bind=[f"ipc://{path}"], transport="plain"))
    worker, client = _Peer(path), _Peer(path)

    def run_until(check: Callable[[], bool]) -> None:
        for _ in range(200):
            if check():
                return
            broker.run_once(10)
            worker.look()
            client.look()
        raise RuntimeError("the broker did not get there")

    def check() -> bool:
        return len(broker.dispatcher.workers) == 1 and bool(client.got)

    worker.send(p.ready(b"echo", ready_meta({"pid": 1}, 0, True)))
    client.send(p.client_hello(batch=True, progress=True))
    run_until(check)
    worker.got.clear()
    client.got.clear()
    rids = iter(range(1, 1 << 30))

    def round_() -> None:
        untraced(lambda: client.send(p.client_submit(b"echo", next(rids), 30000, [BODY])))
        broker.run_once(1000)
        task = untraced(worker.expect)
        untraced(lambda: worker.send(p.reply(task[3], [REPLY])))
        broker.run_once(1000)
        result = untraced(client.expect)
        if result[2] != p.RESULT:
            raise RuntimeError(f"not a RESULT: {result}")

    def close() -> None:
        broker.close()
        for peer in (worker, client):
            peer.sock.close()
    return round_, close


def whole_pipelined_rounds() -> tuple[Callable[[], None], Callable[[], None]]:
    """BATCH DIPS workers and a batching client: a SUBMIT of BATCH requests in, a task out
    to each worker, their BATCH REPLYs in together, the RESULT(s) out."""
    path = os.path.join(tempfile.mkdtemp(prefix="hotpath-"), "b.ipc")
    broker = Broker(BrokerConfig(bind=[f"ipc://{path}"], transport="plain"))
    workers = [_Peer(path) for _ in range(BATCH)]
    client = _Peer(path)

    def everyone() -> list[_Peer]:
        return [*workers, client]

    for n, worker in enumerate(workers):
        worker.send(p.ready(b"echo", ready_meta({"pid": n}, 0, True)))
    client.send(p.client_hello(batch=True, progress=True))
    for _ in range(200):
        broker.run_once(10)
        for peer in everyone():
            peer.look()
        if len(broker.dispatcher.workers) == BATCH and client.got \
                and all(w.got for w in workers):
            break
    else:
        raise RuntimeError("the broker did not get there")
    for peer in everyone():
        peer.got.clear()
    rids = iter(range(1, 1 << 30))

    def run_broker() -> None:
        while broker.run_once(0):
            pass

    def answer() -> None:
        for worker in workers:
            task = worker.expect()
            worker.send(p.reply(task[3], [REPLY]))

    def results() -> None:
        got = 0
        while got < BATCH:
            message = client.expect()
            meta = p.unpack_meta(message[4], "RESULT")
            got += len(meta["ids"]) if "ids" in meta else 1

    def round_() -> None:
        untraced(lambda: client.send(p.client_submit_batch(
            b"echo", [next(rids) for _ in workers], 30000, [BODY] * BATCH)))
        run_broker()
        untraced(answer)
        run_broker()
        untraced(results)

    def close() -> None:
        broker.close()
        for peer in everyone():
            peer.sock.close()
    return round_, close


def main() -> int:
    traced: list[tuple[str, Callable[[], None], int]] = [
        ("core, pipelined (batched SUBMIT + lone REPLYs), per request",
         core_pipelined_rounds(), BATCH)]
    for name, round_, per in traced:
        round_()
        calls, ops = counting(round_)
        print(f"{name}: {sum(calls.values()) / per:g} calls, {ops / per:g} opcodes")
        print("   ", ", ".join(f"{k} {v / per:g}" for k, v in sorted(calls.items())))
    whole, close = whole_lone_rounds()
    _report_whole("whole broker, lone (SUBMIT + REPLY)", whole, close, 1)
    piped, close = whole_pipelined_rounds()
    _report_whole(f"whole broker, pipelined (a SUBMIT of {BATCH}, {BATCH} lone REPLYs), "
                  "per request", piped, close, BATCH)
    return 0


def _report_whole(name: str, round_: Callable[[], None], close: Callable[[], None],
                  per: int) -> None:
    """Count the broker's own calls over one round of the whole broker (after 3 to warm it),
    per request, then close its sockets."""
    try:
        for _ in range(3):
            round_()
        calls, ops = counting(round_)
        broker_calls = Counter({k: v for k, v in calls.items() if _brokers(k)})
        print(f"{name}: {sum(broker_calls.values()) / per:g} calls, {ops / per:g} opcodes")
        print("   ", ", ".join(f"{k} {v / per:g}" for k, v in sorted(broker_calls.items())))
    finally:
        close()


def _brokers(name: str) -> bool:
    """Not the counting's own calls, nor the round's (the peers' work is not counted)."""
    return name not in ("C:settrace", "C:setprofile", "C:getprofile", "C:gettrace") \
        and not name.startswith(("untraced", "whole_lone_rounds.", "whole_pipelined_rounds."))


if __name__ == "__main__":
    sys.exit(main())
