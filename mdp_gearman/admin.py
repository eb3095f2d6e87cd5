"""The admin text protocol, sans I/O: ``status``, ``workers``, ``version``, ``getpid``.

``status`` comes from every broker's ``mmi.status``: per service, TOTAL is the requests queued
at the brokers, the workers running one and the jobs this gateway holds back (background jobs
not yet sent), RUNNING the workers busy with a request, AVAILABLE_WORKERS the distinct
workers registered (a worker attached to two brokers counts once).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from mdp.status import BrokerStatus, WorkerStatus
from mdp.version import code_version

STATUS, WORKERS, VERSION, GETPID, VERBOSE = "status", "workers", "version", "getpid", "verbose"
NEEDS_BROKERS = frozenset({STATUS, WORKERS})
UNSUPPORTED = {
    "shutdown": "the gateway is stopped by its supervisor (SIGTERM), not from the wire",
    "maxqueue": "queue limits are the brokers' (--max-queue)",
    "cancel": "DIPS requests cannot be cancelled from the gateway",
    "show": "jobs are held by the DIPS brokers; see mdpctl status",
    "create": "functions are DIPS services; start workers for them",
    "drop": "functions are DIPS services; stop their workers",
}


@dataclass(frozen=True)
class ClientInfo:
    """A connection as ``workers`` lists it (a Gearman worker's with its functions)."""

    fd: int
    address: str
    client_id: str
    functions: tuple[str, ...] = ()
    peer: str = ""  # HOST:PORT, the host its Gearman worker side reports to the brokers


def printable(text: str | bytes, limit: int = 64) -> str:
    """Peer-supplied text (a client id, a worker's host, a function) as the admin protocol
    may list it: at most ``limit`` characters, anything but printable non-space characters
    replaced by ``_`` (a newline and ``.`` would end a listing early for gearadmin, and a
    carriage return or an escape would rewrite a terminal's line); ``-`` for nothing."""
    if isinstance(text, bytes):
        text = text[:4 * limit].decode("utf-8", "replace")
    text = text[:limit]
    return "".join(c if c.isprintable() and not c.isspace() else "_" for c in text) or "-"


def command_of(line: str) -> str:
    words = line.split()
    return words[0].lower() if words else ""


def answer(line: str, statuses: list[BrokerStatus | None], clients: Iterable[ClientInfo],
           held: Mapping[str, int], pid: int) -> bytes:
    """The full answer to one admin line (``statuses`` only matter for status/workers)."""
    command = command_of(line)
    if command == STATUS:
        return status_text(statuses, held)
    if command == WORKERS:
        return workers_text(statuses, clients)
    if command == VERSION:
        return f"OK dips-gateway {code_version()}\n".encode()
    if command == GETPID:
        return f"OK {pid}\n".encode()
    if command == VERBOSE:
        return b"OK INFO\n"
    if command in UNSUPPORTED:
        return _err("NOT_SUPPORTED", UNSUPPORTED[command])
    if not command:
        return _err("UNKNOWN_COMMAND", "empty line; commands: status workers version getpid")
    return _err("UNKNOWN_COMMAND", f"unknown command {command[:40]!r}; commands: status "
                "workers version getpid")


def _err(code: str, text: str) -> bytes:
    # gearmand writes the sentence with '+' for spaces; gearadmin prints it as it is
    return f"ERR {code} {text.replace(' ', '+')}\n".encode()


def status_text(statuses: list[BrokerStatus | None], held: Mapping[str, int]) -> bytes:
    rows: dict[str, list[int]] = {}
    workers: dict[str, set[tuple[str, int, str]]] = {}
    busy: dict[str, set[tuple[str, int, str]]] = {}
    for status in statuses:
        for name, service in status.services.items() if status else ():
            if name.startswith("mmi."):
                continue
            row = rows.setdefault(name, [0])
            row[0] += service.queue
            for worker in service.workers:
                who = _who(worker)
                workers.setdefault(name, set()).add(who)
                if worker.state == "busy":
                    busy.setdefault(name, set()).add(who)
    for name, count in held.items():
        rows.setdefault(name, [0])[0] += count
    lines = []
    for name in sorted(rows):
        running = len(busy.get(name, ()))
        total = rows[name][0] + running
        lines.append(f"{printable(name, 100)}\t{total}\t{running}\t"
                     f"{len(workers.get(name, ()))}\n")
    return ("".join(lines) + ".\n").encode()


def workers_text(statuses: list[BrokerStatus | None], clients: Iterable[ClientInfo]) -> bytes:
    lines = [f"{c.fd} {printable(c.address)} {printable(c.client_id)} :"
             f"{''.join(' ' + printable(f, 100) for f in c.functions)}\n" for c in clients]
    offers: dict[tuple[str, int, str], set[str]] = {}
    here = {c.peer for c in clients if c.functions}  # this door's own Gearman workers
    for status in statuses:
        for name, service in status.services.items() if status else ():
            for worker in service.workers:
                if not worker.pid and worker.host in here:
                    continue  # listed above, as gearmand lists it
                offers.setdefault(_who(worker), set()).add(name)
    for (host, pid, _identity), names in sorted(offers.items()):
        services = " ".join(printable(name, 100) for name in sorted(names))
        lines.append(f"- {printable(host) if host else '?'} dips-worker-{pid} : "
                     f"{services}\n")
    return ("".join(lines) + ".\n").encode()


def _who(worker: WorkerStatus) -> tuple[str, int, str]:
    # host and pid name the process across brokers; the identity differs per broker. A
    # Gearman worker through a door has no pid, and its host is its connection's address,
    # which names it across brokers too; only a worker with neither is told by identity
    return (worker.host, worker.pid, "" if worker.pid or worker.host else worker.identity)
