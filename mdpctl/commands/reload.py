"""Roll new worker (or, with --brokers, broker) code out one process at a time.

usage: mdpctl reload [SERVICE] [--host NAME ...] [--batch K] [--timeout S]
                     [--version V] [--force] [--no-doors] [--dry-run]
       mdpctl reload --brokers [--timeout S] [--version V] [--force] [--dry-run]

For each host, the version probe (the mdp-version program of its supervisord) tells the
code version a worker started now would run.  Then, one worker process at a time (or K
at a time with --batch), mdpctl stops it with SIGTERM (it finishes the request in hand
and leaves every broker), starts it again, and moves on only once the new process is
registered with every broker and reports that version.  Workers that already report it
are skipped, unless --force.  If a new process does not come up, the rollout stops
there, says why and exits 5; the workers not yet restarted go on serving the old code.
Workers that failed earlier (FATAL) are restarted first.

Then, unless a SERVICE is named or --no-doors is given, the front doors (mdp-http,
mdp-gearman) are restarted one at a time, each waited for until its port accepts
connections again; a door that was down (its port taken at `up`, say) is started.  A
door cannot be restarted without a gap: for about a second its port refuses
connections (clients of the HTTP door retry, or go to another door).  The doors' Redis
is left alone: it is a cache, and runs none of the code being rolled out.

With --brokers, the brokers are restarted instead, one at a time, each from the code now
on its host.  Before the next broker is touched, the restarted one must answer
mmi.status from a new process (with the version the probe computed, when the host has
one), have every running worker registered with it again, and serve a client through it
alone (mmi.service for every service, and an echo).  It refuses to start while any
broker is down.  A new broker that exits at start or does not serve within --timeout
stops the upgrade with exit status 5 and the reason; the brokers not yet restarted were
not touched and keep serving.  Brokers already reporting the target version are skipped,
unless --force.

examples:
  mdpctl reload
  mdpctl reload ecard --batch 2
  mdpctl --cluster prod.toml reload --host img1 --dry-run
  mdpctl reload --brokers
"""

from __future__ import annotations

import argparse
import time

from mdpctl import brokerroll, doors, numbers, rollout
from mdpctl.cluster import Cluster
from mdpctl.context import Context
from mdpctl.errors import UsageError
from mdpctl.fleet import snapshot


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("service", nargs="?", help="only this service's workers")
    parser.add_argument(
        "--brokers", action="store_true", help="restart the brokers one at a time instead"
    )
    parser.add_argument("--host", action="append", metavar="NAME",
                        help="only these hosts (repeat; default: every host)")
    parser.add_argument(
        "--batch", type=numbers.positive, default=1, metavar="K",
        help="workers restarted together (default 1)",
    )
    parser.add_argument(
        "--timeout",
        type=numbers.seconds,
        default=60.0,
        metavar="SECONDS",
        help="how long a new worker may take to register, or a new broker to serve "
        "(default 60)",
    )
    parser.add_argument(
        "--version",
        metavar="V",
        help="the version every worker must end up with (default: the probe's)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="restart workers (brokers) that already run the target version too",
    )
    parser.add_argument("--no-doors", action="store_true",
                        help="leave the front doors (mdp-http, mdp-gearman) running as they are")
    parser.add_argument("--dry-run", action="store_true", help="show the plan, restart nothing")


def run(args: argparse.Namespace, ctx: Context) -> int:
    if args.batch < 1:
        raise UsageError("--batch must be at least 1")
    with ctx.exclusive("reload"):
        ctx.require_running()
        return _reload(args, ctx)


def _reload(args: argparse.Namespace, ctx: Context) -> int:
    if args.brokers:
        return _reload_brokers(args, ctx)
    if args.batch < 1:
        raise UsageError("--batch must be at least 1")
    cluster = ctx.cluster()
    started = time.monotonic()
    fleet = snapshot(cluster, cluster.select(args.host))
    rollout.check_preconditions(fleet)
    if args.service and not fleet.slots(args.service):
        raise UsageError(f"no host has workers for service {args.service!r}")
    plan = rollout.make_plan(cluster, fleet, args.service, args.version, args.force)
    chosen_doors = [] if args.service or args.no_doors else [
        door for door in doors.read_doors(cluster, cluster.select(args.host))
        if door.runs_our_code]
    for host, version in plan.targets.items():
        ctx.say(f"{host}: target version {version}")
    for slot in plan.up_to_date:
        ctx.say(f"  {slot.label} already runs it")
    if not plan.steps:
        ctx.say("no worker to restart: every worker runs the target version")
    else:
        ctx.say(f"restarting {len(plan.steps)} worker(s), {args.batch} at a time")
    if args.dry_run:
        for slot in plan.steps:
            ctx.say(
                f"  would restart {slot.label} (pid {slot.process.pid or '-'}, "
                f"{slot.process.state})"
            )
        for door in chosen_doors:
            ctx.say(f"  would restart {door.label} ({door.listen}, {door.process.state})")
        return 0
    if plan.steps:
        rollout.run(cluster, plan, args.batch, args.timeout, lambda line: ctx.say("  " + line))
    _restart_doors(cluster, chosen_doors, args.timeout, ctx)
    ctx.say(
        f"reload done in {time.monotonic() - started:.1f} s: {len(plan.steps)} worker(s) "
        f"and {len(chosen_doors)} door(s) restarted"
    )
    return 0


def _restart_doors(cluster: Cluster, chosen: list[doors.Door], timeout_s: float,
                   ctx: Context) -> None:
    """One door at a time, down ones first; each must accept connections again."""
    ordered = sorted(chosen, key=lambda d: d.process.state == "RUNNING")
    for n, door in enumerate(ordered, 1):
        took = doors.restart(cluster, door, timeout_s)
        ctx.say(f"  [door {n}/{len(ordered)}] {door.label} ({door.listen}) serves again "
                f"after {took:.1f} s")


def _reload_brokers(args: argparse.Namespace, ctx: Context) -> int:
    if args.service or args.host or args.batch != 1:
        raise UsageError("--brokers restarts every broker one at a time: no SERVICE, "
                         "--host or --batch")
    cluster = ctx.cluster()
    started = time.monotonic()
    fleet = snapshot(cluster)
    brokerroll.check_preconditions(fleet)
    plan = brokerroll.make_plan(cluster, fleet, args.version, args.force)
    for host, version in plan.targets.items():
        ctx.say(f"{host}: target broker version {version or 'not known (no probe)'}")
    for slot in plan.up_to_date:
        ctx.say(f"  {slot.label} already runs it")
    if not plan.steps:
        ctx.say("nothing to reload: every broker runs the target version")
        return 0
    ctx.say(f"restarting {len(plan.steps)} broker(s), one at a time")
    if args.dry_run:
        for slot in plan.steps:
            ctx.say(f"  would restart {slot.label} (pid {slot.process.pid}, {slot.version})")
        return 0
    brokerroll.run(cluster, plan, args.timeout, lambda line: ctx.say("  " + line))
    ctx.say(
        f"broker upgrade done in {time.monotonic() - started:.1f} s: "
        f"{len(plan.steps)} broker(s) restarted"
    )
    return 0
