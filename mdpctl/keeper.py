"""The scale keeper: ``python -m mdpctl.keeper`` keeps a host's chosen scale across restarts.

supervisord runs it on every worker host as the ``mdp-scale`` program (autostart).  When
it starts, which is whenever supervisord starts (a restart, a host reboot), it reads the
state file and starts or stops worker slots until each service recorded there has its
chosen number of workers (lowest free slots started first, highest stopped first, as
``mdpctl scale`` does).  Then it reads choices from its stdin, where ``mdpctl scale``
sends them through supervisord (``sendProcessStdin``), one JSON line each; every choice
is written to the state file atomically before it is acknowledged.  Each state is
printed as one line (:func:`mdpctl.scalestate.state_line`) that mdpctl reads back from
the program's log.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from mdp.logs import LOG_FORMAT
from mdpctl import scalestate
from mdpctl.cluster import Host
from mdpctl.errors import CtlError
from mdpctl.fleet import Fleet, read_host
from mdpctl.rpc import Supervisor, SupervisorEndpoint
from mdpctl.scalestate import ScaleStateError
from mdpctl.scaling import plan_scale

log = logging.getLogger("mdpctl.keeper")

START_TIMEOUT_S = 60.0


def apply_chosen(sup: Supervisor, chosen: dict[str, int]) -> list[str]:
    """Start or stop slots so that each chosen service runs its count; return notes."""
    host = read_host(Host("here", sup.endpoint), sup.timeout_s)
    if host.error:
        raise CtlError(host.error)
    fleet = Fleet((host,), ())
    notes = []
    for service, wanted in chosen.items():
        slots = host.service_slots(service)
        if not slots:
            notes.append(f"{service}: no worker slots in this configuration")
            continue
        if wanted > len(slots):
            notes.append(f"{service}: {wanted} chosen but only {len(slots)} slots")
        for change in plan_scale(fleet, service, min(wanted, len(slots))):
            for slot in change.start:
                sup.start(slot.fullname)
            for slot in change.stop:
                sup.stop(slot.fullname)
            if change.start or change.stop:
                log.info("%s: %d -> %d workers", service, change.before, change.after)
    return notes


_lines = itertools.count(1)


def say(chosen: dict[str, int], applied: bool, error: str | None = None) -> None:
    line = scalestate.state_line(chosen, os.getpid(), applied, error, next(_lines))
    sys.stdout.write(line)
    sys.stdout.flush()


def start(sup: Supervisor, state_path: Path) -> dict[str, int]:
    """Apply the recorded choices once supervisord is running; return them."""
    sup.wait_running(time.monotonic() + START_TIMEOUT_S)
    try:
        chosen = scalestate.read_state(state_path)
    except (ScaleStateError, OSError) as exc:
        say({}, True, f"cannot use {state_path}: {exc}; the configured counts apply")
        return {}
    try:
        notes = apply_chosen(sup, chosen)
    except CtlError as exc:
        say(chosen, True, f"could not apply the chosen scale: {exc}")
        return chosen
    say(chosen, True, "; ".join(notes) or None)
    return chosen


def serve(state_path: Path, chosen: dict[str, int]) -> None:
    """Record each choice that arrives on stdin, until stdin closes."""
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            service, count = scalestate.parse_choice(line)
            new = scalestate.apply_choice(chosen, service, count)
            scalestate.write_state(state_path, new)
        except (ScaleStateError, OSError) as exc:
            say(chosen, True, f"choice not recorded: {exc}")
            continue
        chosen = new
        log.info("recorded %s = %s", service, count)
        say(chosen, True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mdpctl.keeper", description=__doc__)
    parser.add_argument("--state", type=Path, required=True, help="the state file (JSON)")
    parser.add_argument("--supervisor", required=True, help="unix:///path/supervisor.sock")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    sup = Supervisor(SupervisorEndpoint(args.supervisor), timeout_s=10.0)
    try:
        chosen = start(sup, args.state)
    except CtlError as exc:
        log.error("%s", exc)
        return 1
    serve(args.state, chosen)
    return 0


if __name__ == "__main__":
    sys.exit(main())
