"""One Gearman connection of the door: an ``asyncio.Protocol`` around the sans-I/O
:class:`~mdp_gearman.packets.Decoder`. Bytes in become events for the
:class:`~mdp_gearman.server.Gateway`; bytes out are bounded (a peer that does not read its
replies is dropped) and reading pauses while the peer has too many jobs in flight. A packet
in progress holds a share of the door's in-flight budget and must arrive by its deadline
(:mod:`mdp_gearman.inflight`). Apart from the gateway because this is the transport's side:
framing, buffers, the admin line queue, what the log shows of each packet.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import TYPE_CHECKING, cast

from mdp.rates import format_rate
from mdp_gearman import packets as g
from mdp_gearman.inflight import packet_deadline
from mdp_gearman.jobs import Job
from mdp_gearman.workers import GearmanWorker

if TYPE_CHECKING:
    from mdp_gearman.server import Gateway

log = logging.getLogger("mdp_gearman.server")  # (one logger name for the door's lines)


class Connection(asyncio.Protocol):
    """One client connection: bytes in, events to the gateway, bounded bytes out."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.config = gateway.config
        self.decoder = g.Decoder(self.config.max_packet_bytes)
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.fd = -1
        self.client_id = ""
        self.exceptions = False
        self.jobs = 0  # foreground jobs this client waits for
        self._write_paused = False
        self._read_paused = False
        self._admin: asyncio.Queue[str] | None = None
        self._admin_task: asyncio.Task[None] | None = None
        self.waiting: set[Job] = set()  # the foreground jobs this client waits for
        self.worker: GearmanWorker | None = None  # made by its first worker packet
        self._trace = log.isEnabledFor(logging.DEBUG)  # every packet in the log
        # the packet in progress: its share of the in-flight budget (held, or waited for)
        # and the timer of its deadline (running while the door reads the connection)
        self._packet: g.InProgress | None = None
        self._held = False  # its share is taken
        self._budget_wait = False  # its share is waited for
        self._stall: asyncio.TimerHandle | None = None

    # --- asyncio callbacks ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (a uvloop transport is not an asyncio.Transport subclass; it has the same methods)
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.fd = sock.fileno()
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.transport.set_write_buffer_limits(high=self.config.write_buffer_bytes)
        if len(self.gateway.connections) >= self.config.max_connections:
            self.gateway.warn_peer("refused", "refused %s: %d connections already",
                                   self.peer, len(self.gateway.connections))
            self.fatal("too_many_connections", "the gateway has too many connections")
            return
        self.gateway.connections.add(self)

    def data_received(self, data: bytes) -> None:
        decoder = self.decoder
        decoder.feed(data)
        while self.transport is not None and not self.transport.is_closing():
            try:
                event = decoder.next_event()
            except g.WireError as exc:
                self.gateway.warn_peer("framing", "closing %s: %s", self.peer, exc)
                self.fatal("bad_packet", str(exc))
                return
            if event is None:
                self._watch_packet()
                return
            if self._trace:
                log.debug("from %s: %s", self.peer, _describe(event))
            try:
                self.gateway.on_event(self, event)
            except Exception as exc:  # one bad event must not take the connection's others
                self.gateway.report_bug(exc, f"on a {type(event).__name__} from {self.peer}")
                self.send(g.error("internal", "the gateway failed on this request"))
            if self._packet is None and decoder.empty():
                return  # (the usual read, one whole packet: no packet is under way)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._end_packet()
        self.decoder.clear()  # what it held goes now, not when a collection finds the cycle
        if self._admin_task is not None:
            self._admin_task.cancel()
        if self.worker is not None:
            self.worker.close()
        self.gateway.forget(self)

    def pause_writing(self) -> None:
        self._write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._update_reading()

    # --- used by the gateway ----------------------------------------------------------

    def send(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self._trace:
            log.debug("to %s: %s", self.peer, _describe_out(data))
        transport.write(data)
        if transport.get_write_buffer_size() > self.config.max_write_buffer_bytes:
            self.gateway.warn_peer("slow_reader", "closing %s: it does not read its "
                                   "replies (%d bytes waiting)", self.peer,
                                   transport.get_write_buffer_size())
            transport.abort()

    def fatal(self, code: str, text: str) -> None:
        """Say why, then close: the stream cannot be read any further."""
        if self.transport is not None:
            self.transport.write(g.error(code, text))
            self.transport.close()

    def worker_side(self) -> GearmanWorker:
        if self.worker is None:
            self.worker = self.gateway.new_worker(self)
            self._update_reading()  # a worker's connection is read at any job count
        return self.worker

    @property
    def jobs_full(self) -> bool:
        """It waits for --max-jobs-per-connection foreground jobs."""
        return self.jobs >= self.config.max_jobs_per_connection

    def job_added(self) -> None:
        self.jobs += 1
        self._update_reading()

    def job_done(self, job: Job) -> None:
        self.waiting.discard(job)
        self.jobs -= 1
        self._update_reading()

    def admin_line(self, line: str) -> None:
        if self._admin is None:
            self._admin = asyncio.Queue(maxsize=64)
            self._admin_task = asyncio.get_running_loop().create_task(
                self._admin_loop(self._admin))
        if self._admin.full():
            self.fatal("too_many_commands", "too many admin commands waiting")
            return
        self._admin.put_nowait(line)

    async def _admin_loop(self, queue: asyncio.Queue[str]) -> None:
        while self.transport is not None:
            line = await queue.get()
            self.send(await self.gateway.admin_answer(line))

    def _update_reading(self) -> None:
        if (self._packet is None and not (self._read_paused or self._write_paused
                                          or self._budget_wait)
                and (self.worker is not None
                     or self.jobs < self.config.max_jobs_per_connection)):
            return  # read on, as it is (each job's path: no packet under way, no pause)
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        # at its job limit a client is not read (it can submit no more), but a worker's
        # connection is: its answers (to its own jobs, it may be) come in on it, and its
        # submissions past the limit are refused (Gateway.submit)
        full = self.worker is None and self.jobs_full
        packet = self._packet
        if packet is not None:
            if full:  # the door's own pause: the packet holds no share of the budget meanwhile
                self._let_go()
            elif not self._held and not self._budget_wait:
                self._admit(packet)
        ours = full or self._budget_wait
        hold = self._write_paused or ours
        if hold and not self._read_paused:
            transport.pause_reading()
        elif not hold and self._read_paused:
            transport.resume_reading()
        self._read_paused = hold
        # a packet's deadline runs while it holds its share: while the door reads it, or
        # while the peer does not read its replies (its doing; the deadline allows for what
        # the door has buffered for it at the link floor); a pause of the door's making
        # starts it afresh
        if ours and self._stall is not None:
            self._stall.cancel()
            self._stall = None
        elif not ours and self._stall is None and packet is not None and self._held:
            loop = asyncio.get_running_loop()
            owed = packet.size + transport.get_write_buffer_size()
            self._stall = loop.call_at(
                packet_deadline(loop.time(), owed, self.config.link_floor,
                                self.config.packet_grace_s),
                self._stalled, loop.time())

    # --- packets in progress (mdp_gearman.inflight) -----------------------------------

    def _watch_packet(self) -> None:
        """After the events of a read: end the share of a packet that is whole, and take
        (or wait for) one for a packet now under way."""
        pending = self.decoder.in_progress()
        if self._packet is not None and (pending is None or
                                         pending.offset != self._packet.offset):
            self._end_packet()
        if pending is None or self._packet is not None:
            return
        self._packet = pending
        self._update_reading()  # takes its share (or waits for it) and starts its deadline

    def _admit(self, packet: g.InProgress) -> None:
        """Take the packet's share of the budget, or wait for it (the caller then pauses)."""
        budget = self.gateway.inflight
        if budget.take(packet.size):
            self._held = True
            return
        self.gateway.warn_peer("budget", "%s waits for the in-flight budget: a "
                               "packet of %d bytes; packets in progress hold %d of %d bytes "
                               "(--max-inflight-bytes)", self.peer, packet.size, budget.used,
                               budget.limit)
        self._budget_wait = True
        budget.wait(packet.size, self._budget_granted)

    def _budget_granted(self) -> None:
        self._budget_wait = False
        self._held = True
        self._update_reading()

    def _let_go(self) -> None:
        """Give the packet's share back (or stop waiting for it); it is taken again later."""
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None
        if self._budget_wait:
            self._budget_wait = False
            self.gateway.inflight.cancel(self._budget_granted)
        elif self._held:
            self._held = False
            if self._packet is not None:
                self.gateway.inflight.release(self._packet.size)

    def _end_packet(self) -> None:
        """The packet in progress arrived, or its connection went: its share goes back."""
        self._let_go()
        self._packet = None

    def _stalled(self, since: float) -> None:
        self._stall = None
        packet = self.decoder.in_progress()
        if packet is None or self.transport is None:
            return
        waited = asyncio.get_running_loop().time() - since
        text = (f"{g.type_name(packet.type)} of {packet.size} bytes stalled: {packet.received} "
                f"arrived in {waited:.1f} s; a packet must arrive within "
                f"{self.config.packet_grace_s:g} s (--packet-grace) plus "
                f"its size at {format_rate(self.config.link_floor)} (the link floor)")
        self.gateway.warn_peer("stalled", "closing %s: %s", self.peer, text)
        self.fatal("packet_stalled", text)


def _describe(event: g.Event) -> str:
    """A packet or line for the log (arguments cut short)."""
    if isinstance(event, g.Packet):
        return f"{g.type_name(event.type)} {[a[:48] for a in event.args]}"
    return repr(event)[:120]


def _describe_out(data: bytes) -> str:
    """What the door sends, for the log: each packet's type and first argument."""
    out, at = [], 0
    while at + g.HEADER_BYTES <= len(data):
        _, kind, size = g.HEADER.unpack_from(data, at)
        body = data[at + g.HEADER_BYTES:at + g.HEADER_BYTES + size]
        first = body.split(b"\0", 1)[0][:48]
        out.append(f"{g.type_name(kind)} {first!r}")
        at += g.HEADER_BYTES + size
    return ", ".join(out) if out else repr(data[:60])
