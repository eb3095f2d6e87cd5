"""Run N worker processes of a service on each chosen host, leaving the others alone.

usage: mdpctl scale SERVICE N [--host NAME ...] [--timeout S]

N is per host: every host with worker slots for SERVICE (or only those named with
--host) ends up with N of them running.  Scaling up starts stopped slots and returns
once the new workers are registered with every broker; scaling down stops the
highest-numbered workers with SIGTERM, so each finishes the request in hand.  No
group is restarted and no numprocs changes.  The number of slots per service is set in
the host's supervisord configuration (workers + spare).

The choice lasts: it is first recorded with the host's mdp-scale program, which writes
it to RUN_DIR/scale.json and applies it again whenever supervisord starts (a restart, a
reboot).  `mdpctl status` shows where the running count differs from the chosen one.

examples:
  mdpctl scale ecard 4
  mdpctl --cluster prod.toml scale thumbnail 2 --host img3
"""

from __future__ import annotations

import argparse
import time

from mdpctl import local, numbers
from mdpctl.context import Context
from mdpctl.errors import Unreachable, UsageError
from mdpctl.fleet import snapshot
from mdpctl.scaling import GROW_HOST, apply_scale, plan_scale, record_choice


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("service", help="service name")
    parser.add_argument("count", type=numbers.count, metavar="N", help="workers per host")
    parser.add_argument("--host", action="append", metavar="NAME",
                        help="only these hosts (repeat; default: every host)")
    parser.add_argument(
        "--timeout",
        type=numbers.seconds,
        default=60.0,
        metavar="SECONDS",
        help="how long to wait for new workers to register (default 60)",
    )


def run(args: argparse.Namespace, ctx: Context) -> int:
    with ctx.exclusive("scale"):
        ctx.require_running()
        return _scale(args, ctx)


def _scale(args: argparse.Namespace, ctx: Context) -> int:
    cluster = ctx.cluster()
    hosts = cluster.select(args.host)
    started = time.monotonic()
    fleet = snapshot(cluster, hosts)
    unreachable = [v for v in fleet.brokers if v.status is None]
    changes = plan_scale(fleet, args.service, args.count, _how_to_grow(args, ctx))
    if args.host:
        missing = set(args.host) - {c.host for c in changes}
        if missing:
            raise UsageError(f"{', '.join(sorted(missing))} has no slots for {args.service}")
    if unreachable and any(c.start for c in changes):
        raise Unreachable(
            f"broker {unreachable[0].endpoint} does not answer ({unreachable[0].error}); "
            "new workers could not be seen registering with it, so nothing was started"
        )
    for change in changes:
        host = next(h for h in fleet.hosts if h.name == change.host)
        warning = record_choice(cluster, host, args.service, args.count)
        if warning:
            ctx.say(f"warning: {warning}")
    apply_scale(cluster, changes, args.timeout, lambda line: ctx.say(f"{args.service} {line}"))
    ctx.say(f"done in {time.monotonic() - started:.1f} s")
    return 0


def _how_to_grow(args: argparse.Namespace, ctx: Context) -> str:
    """More slots than a host has: a fleet host's configuration is rendered again; the
    local cluster is started again with more spare slots."""
    if not ctx.is_local:
        return GROW_HOST
    services = (local.recorded_options(ctx.run_dir) or {}).get("services", {})
    workers = services.get(args.service, [0])[0]
    spare = max(args.count - int(workers), 0)
    return (f"the local cluster gets more with `mdpctl down`, then `mdpctl up` with its "
            f"options and --spare {spare}")
