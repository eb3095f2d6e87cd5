"""Roll new worker code out one process at a time, with no failed request.

usage: mdpctl reload [SERVICE] [--host NAME ...] [--batch K] [--timeout S]
                     [--version V] [--force] [--dry-run]

For each host, the version probe (the mdp-version program of its supervisord) tells the
code version a worker started now would run.  Then, one worker process at a time (or K
at a time with --batch), mdpctl stops it with SIGTERM (it finishes the request in hand
and leaves every broker), starts it again, and moves on only once the new process is
registered with every broker and reports that version.  Workers that already report it
are skipped, unless --force.  If a new process does not come up, the rollout stops
there, says why and exits 5; the workers not yet restarted go on serving the old code.
Workers that failed earlier (FATAL) are restarted first.

examples:
  mdpctl reload
  mdpctl reload ecard --batch 2
  mdpctl --cluster prod.toml reload --host img1 --dry-run
"""

from __future__ import annotations

import argparse
import time

from mdpctl import rollout
from mdpctl.context import Context
from mdpctl.errors import UsageError
from mdpctl.fleet import snapshot


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("service", nargs="?", help="only this service's workers")
    parser.add_argument("--host", action="append", metavar="NAME", help="only these hosts")
    parser.add_argument(
        "--batch", type=int, default=1, metavar="K", help="workers restarted together (default 1)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long a new worker may take to register (default 60)",
    )
    parser.add_argument(
        "--version",
        metavar="V",
        help="the version every worker must end up with (default: the probe's)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="restart workers that already run the target version too",
    )
    parser.add_argument("--dry-run", action="store_true", help="show the plan, restart nothing")


def run(args: argparse.Namespace, ctx: Context) -> int:
    with ctx.exclusive("reload"):
        return _reload(args, ctx)


def _reload(args: argparse.Namespace, ctx: Context) -> int:
    if args.batch < 1:
        raise UsageError("--batch must be at least 1")
    cluster = ctx.cluster()
    started = time.monotonic()
    fleet = snapshot(cluster, cluster.select(args.host))
    rollout.check_preconditions(fleet)
    if args.service and not fleet.slots(args.service):
        raise UsageError(f"no host has workers for service {args.service!r}")
    plan = rollout.make_plan(cluster, fleet, args.service, args.version, args.force)
    for host, version in plan.targets.items():
        ctx.say(f"{host}: target version {version}")
    for slot in plan.up_to_date:
        ctx.say(f"  {slot.label} already runs it")
    if not plan.steps:
        ctx.say("nothing to reload: every worker runs the target version")
        return 0
    ctx.say(f"restarting {len(plan.steps)} worker(s), {args.batch} at a time")
    if args.dry_run:
        for slot in plan.steps:
            ctx.say(
                f"  would restart {slot.label} (pid {slot.process.pid or '-'}, "
                f"{slot.process.state})"
            )
        return 0
    rollout.run(cluster, plan, args.batch, args.timeout, lambda line: ctx.say("  " + line))
    ctx.say(
        f"reload done in {time.monotonic() - started:.1f} s: {len(plan.steps)} worker(s) restarted"
    )
    return 0
