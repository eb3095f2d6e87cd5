"""Start the local cluster; return once every worker is registered with every broker.

usage: mdpctl up [--broker ENDPOINT ...] [--service NAME[=N] ...] [--workers N]
                 [--spare N] [--time-limit S] [--heartbeat-interval S] [--timeout S]

No configuration file is needed: the packaged supervisord configuration is rendered
into the run directory (supervisord.conf, with cluster.toml for the other commands) and
supervisord is started there.  Two brokers, at tcp://127.0.0.1:5555 and :5556 unless
--broker says otherwise, and for each service as many workers as the machine has cores.
Logs go to RUN_DIR/log; the control socket RUN_DIR/supervisor.sock is for its owner only.
If the cluster is already running, up only waits until it serves.  A scale chosen
earlier with `mdpctl scale` (RUN_DIR/scale.json) is applied again before up returns.

examples:
  mdpctl up
  mdpctl up --service echo=1 --service ecard=4 --spare 4
"""

from __future__ import annotations

import argparse
import os
import time

from mdpctl import local, render
from mdpctl.cluster import DEFAULT_BROKERS
from mdpctl.context import Context
from mdpctl.errors import ProcessFailed, WaitTimeout
from mdpctl.fleet import snapshot
from mdpctl.readiness import SlotKey, wait_serving, wait_until
from mdpctl.services import default_services, parse_service_counts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--broker",
        action="append",
        metavar="ENDPOINT",
        help="a broker to run, tcp://127.0.0.1:PORT (repeat; default :5555 and :5556)",
    )
    parser.add_argument(
        "--service",
        action="append",
        metavar="NAME[=N]",
        help="a service to run workers for, with N workers (repeat; default echo and the "
        "renderers' services)",
    )
    parser.add_argument(
        "--workers", type=int, metavar="N", help="workers per service (default: CPU cores)"
    )
    parser.add_argument(
        "--spare",
        type=int,
        metavar="N",
        help="extra stopped slots per service for `mdpctl scale` (default: as many as workers)",
    )
    parser.add_argument(
        "--pythonpath",
        metavar="DIR",
        help="where workers import mdp and renderers from (default: where mdpctl imports "
        "them from, unless that is site-packages)",
    )
    parser.add_argument(
        "--time-limit",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="longest a request may run (default 30)",
    )
    parser.add_argument(
        "--heartbeat-interval",
        type=float,
        metavar="SECONDS",
        help="broker and worker heartbeat (default: theirs)",
    )
    parser.add_argument(
        "--max-requests",
        type=int,
        default=0,
        metavar="N",
        help="workers restart after N requests (default: never)",
    )
    parser.add_argument("--log-level", default="INFO", help="brokers' and workers' log level")
    parser.add_argument("--http", default="127.0.0.1:8080", metavar="HOST:PORT",
                        help="where mdp-http serves the dashboard, /metrics and the API "
                        "(default 127.0.0.1:8080; 'off' for none)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long to wait for every worker to register (default 60)",
    )


def run(args: argparse.Namespace, ctx: Context) -> int:
    ctx.require_local("up")
    started = time.monotonic()
    if local.is_running(ctx.run_dir):
        ctx.say(f"cluster already running in {ctx.run_dir}; waiting until it serves")
    else:
        spec = _spec(args, ctx)
        local.check_ports_free(spec.brokers)
        local.write_files(spec)
        local.start_supervisord(ctx.run_dir)
    cluster = ctx.cluster()
    try:
        _wait_brokers_running(ctx, args.timeout)
        _wait_scale_applied(ctx, args.timeout)
        fleet = snapshot(cluster, with_brokers=False)
        # With a scale keeper, what runs now is the chosen scale; else the configured one.
        kept = any(h.keeper is not None for h in fleet.hosts)
        keys = [
            SlotKey.of(s)
            for s in fleet.slots()
            if s.process.is_up or (s.autostart and not kept)
        ]
        fleet = wait_serving(cluster, keys, args.timeout)
    except (ProcessFailed, WaitTimeout) as exc:
        note = "the cluster is left running for inspection; `mdpctl down` stops it"
        raise type(exc)(f"{exc} ({note})") from exc
    host = fleet.hosts[0]
    counts = ", ".join(
        f"{svc} x{sum(s.process.is_up for s in host.service_slots(svc))}" for svc in host.services()
    )
    ctx.say(
        f"cluster up in {time.monotonic() - started:.1f} s: supervisord pid "
        f"{host.supervisord_pid}, run directory {ctx.run_dir}"
    )
    ctx.say(f"  brokers  {', '.join(cluster.brokers)}")
    ctx.say(f"  workers  {counts or 'none'}, each registered with every broker")
    if args.http != "off":
        ctx.say(f"  http     dashboard and API at http://{args.http}/")
    ctx.say("`mdpctl status` shows the fleet; `mdpctl down` stops it")
    return 0


def _spec(args: argparse.Namespace, ctx: Context) -> local.LocalSpec:
    workers = args.workers if args.workers is not None else (os.cpu_count() or 1)
    spare = args.spare if args.spare is not None else workers
    counts = parse_service_counts(args.service) if args.service else {}
    names = list(counts) or default_services()
    pools = tuple(
        render.WorkerPool(n, workers if counts.get(n) is None else int(counts[n] or 0), spare)
        for n in names
    )
    pythonpath = args.pythonpath or local.code_dir()
    return local.LocalSpec(
        run_dir=ctx.run_dir,
        brokers=tuple(args.broker or DEFAULT_BROKERS),
        pools=pools,
        pythonpath=os.path.abspath(pythonpath) if pythonpath else None,
        time_limit_s=args.time_limit,
        heartbeat_interval_s=args.heartbeat_interval,
        max_requests=args.max_requests,
        log_level=args.log_level,
        http_listen=None if args.http == "off" else args.http,
    )


def _wait_brokers_running(ctx: Context, timeout_s: float) -> None:
    """Brokers must be RUNNING under supervisord before workers can register with them."""
    cluster = ctx.cluster()

    def check() -> str | None:
        host = snapshot(cluster, with_brokers=False).hosts[0]
        if host.error:
            return host.error
        failed = [p for p in host.broker_processes if p.state == "FATAL"]
        if failed:
            raise ProcessFailed(
                f"broker {failed[0].fullname} failed to start: see "
                f"{ctx.run_dir / 'log' / (failed[0].name + '.log')}"
            )
        waiting = [
            f"{p.fullname} is {p.state}" for p in host.broker_processes if p.state != "RUNNING"
        ]
        return "; ".join(waiting) or None

    wait_until(check, timeout_s, "the brokers to start")


def _wait_scale_applied(ctx: Context, timeout_s: float) -> None:
    """The scale keeper applies the chosen scale at start; wait for it before counting."""
    cluster = ctx.cluster()

    def check() -> str | None:
        host = snapshot(cluster, with_brokers=False).hosts[0]
        if host.error:
            return host.error
        if host.keeper is None:
            return None
        if host.keeper.state in ("FATAL", "EXITED", "BACKOFF"):
            raise ProcessFailed(
                f"{host.keeper.fullname} failed to start: see "
                f"{ctx.run_dir / 'log' / (host.keeper.name + '.log')}"
            )
        if host.keeper_state is None or not host.keeper_state.applied:
            return f"{host.keeper.fullname} is {host.keeper.state}, the scale not applied yet"
        return None

    wait_until(check, timeout_s, "the chosen scale to be applied")
