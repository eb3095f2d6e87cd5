"""Stop the local cluster and wait until none of its processes is left.

usage: mdpctl down [--timeout S] [--force]

The workers, the doors and the helper programs get SIGTERM all at once (each worker
finishes the request in hand and leaves the brokers), then the brokers, then
supervisord exits.  down returns once every one of those processes has exited.  Run
from anywhere, it finds the cluster as every command does (see `mdpctl --help`); when
none is running it says where it looked and exits 0.  Beside a `reload`, `scale` or `up`
in progress (they hold the run directory's lock) down stops nothing and says which one
runs; stop it (Ctrl-C) or wait for it.  When the cluster's supervisord is
gone (killed) and its programs run on, down stops them the same way (SIGKILL for what
has not exited by --timeout, default 45 s).

A supervisord that runs but does not answer (stopped with SIGSTOP, or overloaded) is
not gone: down stops nothing behind its back (it would start its programs again), says
so and exits 6.  `kill -CONT PID` resumes a stopped one; --force kills it (SIGKILL) and
then stops its programs as those of a supervisord gone.
"""

from __future__ import annotations

import argparse
import time

from mdpctl import daemon, leftovers, local, numbers
from mdpctl.context import Context
from mdpctl.errors import NotRunning, Unresponsive

LEFTOVER_TIMEOUT_S = 45.0  # the longest stop timeout of a configuration (--time-limit + 10 s) + 5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout",
        type=numbers.seconds,
        metavar="SECONDS",
        help="how long to wait for every process to exit (default: the longest stop "
        "timeout in the configuration plus 15 s)",
    )
    parser.add_argument(
        "--force", action="store_true",
        help="when supervisord runs but does not answer (stopped, overloaded): kill it "
        "(SIGKILL), then stop its programs (default: stop nothing and say so)",
    )


def run(args: argparse.Namespace, ctx: Context) -> int:
    ctx.require_local("down")
    # stopping the fleet under a `reload` or `scale` would leave it half done, failing on a
    # worker it did not stop: down waits its turn as they do (refused at once, naming them)
    with ctx.exclusive("down", f"`mdpctl down` is stopping the cluster in {ctx.run_dir}"):
        return _down(args, ctx)


def _down(args: argparse.Namespace, ctx: Context) -> int:
    started = time.monotonic()
    try:
        ctx.require_running()
        report = local.stop(ctx.run_dir, args.timeout)
    except Unresponsive as exc:
        if not args.force:
            raise Unresponsive(f"down stopped nothing: {exc}", exc.pid, exc.run_dir) from None
        return _force(exc, args.timeout or LEFTOVER_TIMEOUT_S, ctx, started)
    except NotRunning as exc:
        orphaned = leftovers.find_in(ctx.search().looked_in)
        if orphaned is None:
            ctx.say(str(exc))
            return 0
        run_dir, found = orphaned
        leftovers.stop(found, args.timeout or LEFTOVER_TIMEOUT_S)
        ctx.say(f"the supervisord of the cluster in {run_dir} was gone; its {len(found)} "
                f"leftover processes have exited ({time.monotonic() - started:.1f} s)")
        return 0
    ctx.say(
        f"cluster in {ctx.run_dir} stopped in {time.monotonic() - started:.1f} s: "
        f"supervisord pid {report.supervisord_pid} and its {report.processes} processes "
        "have exited"
    )
    return 0


def _force(exc: Unresponsive, timeout_s: float, ctx: Context, started: float) -> int:
    """Kill the supervisord that does not answer, then stop what it left behind."""
    found = daemon.find(exc.run_dir)
    if found is not None:
        daemon.kill(found)
    left = leftovers.find(exc.run_dir)
    leftovers.stop(left, timeout_s)
    ctx.say(f"supervisord (pid {exc.pid}) of the cluster in {exc.run_dir} did not answer and "
            f"was killed (SIGKILL); its {len(left)} processes have exited "
            f"({time.monotonic() - started:.1f} s)")
    return 0
