"""Start the local cluster; return once every worker is registered with every broker.

usage: mdpctl up [--broker ENDPOINT ...] [--service NAME[=N] ...] [--workers N] [--spare N]
                 [--http HOST:PORT|off] [--gearman HOST:PORT|off] [--time-limit S]
                 [--heartbeat-interval S] [--max-requests N] [--log-level LEVEL]
                 [--pythonpath DIR] [--timeout S]

No configuration file is needed: the packaged supervisord configuration is rendered
into the run directory (supervisord.conf, with cluster.toml for the other commands and
up.json, the options) and supervisord is started there; the programs get every DIPS_*
variable of up's environment (the renderers' limits and image sources: docs/RENDERERS.md).
Two brokers, at tcp://127.0.0.1:5555 and :5556 unless --broker says otherwise; for each
service as many workers as the machine has cores; the HTTP door (mdp-http: API,
dashboard, /metrics) at 127.0.0.1:8080 and the Gearman door (mdp-gearman) at
127.0.0.1:4730 unless --http and --gearman move them or turn them off.

Every port is checked first, as the programs bind it: a port that is taken stops up at
once with one line naming it and the process that holds it, and nothing is started.
up returns once the brokers run, every worker is registered with every broker and each
door accepts connections; a process that cannot start (a door included) is named with
the end of its log, up exits 1 and leaves the cluster up for inspection.  Logs go to
RUN_DIR/log; the control socket RUN_DIR/supervisor.sock is for its owner only.

If the cluster is already running, up starts any door that is down, and waits until it
serves; options that differ from the running cluster's are refused (`mdpctl down` first;
`mdpctl scale` changes the number of workers).  A scale chosen earlier with
`mdpctl scale` (RUN_DIR/scale.json) is applied again before up returns.

examples:
  mdpctl up
  mdpctl up --service echo=1 --service ecard=4 --spare 4
  mdpctl up --http 127.0.0.1:8081 --gearman off
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from mdp import handlers
from mdp.errors import ConfigError
from mdpctl import doors, local, locate, numbers, render
from mdpctl.cluster import DEFAULT_BROKERS
from mdpctl.context import Context
from mdpctl.endpoints import listen_or_off_arg, tcp_endpoint_arg
from mdpctl.errors import ProcessFailed, UsageError, WaitTimeout
from mdpctl.fleet import snapshot
from mdpctl.readiness import SlotKey, wait_serving, wait_until
from mdpctl.services import default_services, parse_service_counts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--broker", action="append", metavar="ENDPOINT", type=tcp_endpoint_arg,
        help="a broker to run, tcp://127.0.0.1:PORT (repeat; default tcp://127.0.0.1:5555 "
        "and tcp://127.0.0.1:5556)",
    )
    parser.add_argument(
        "--service", action="append", metavar="NAME[=N]",
        help="a service to run workers for, with N workers (repeat; default: echo and "
        "every renderer's service, --workers each)",
    )
    parser.add_argument(
        "--workers", type=numbers.positive, metavar="N",
        help="workers per service (default: the machine's cores, here "
        f"{os.cpu_count() or 1})",
    )
    parser.add_argument(
        "--spare", type=numbers.count, metavar="N",
        help="extra stopped slots per service for `mdpctl scale` (default: as many as "
        "workers)",
    )
    parser.add_argument(
        "--http", type=listen_or_off_arg, metavar="HOST:PORT|off",
        help=f"where mdp-http serves the API, the dashboard and /metrics (default "
        f"{local.HTTP_LISTEN}; off: no HTTP door)",
    )
    parser.add_argument(
        "--gearman", type=listen_or_off_arg, metavar="HOST:PORT|off",
        help=f"where mdp-gearman takes Gearman clients (default {local.GEARMAN_LISTEN}; "
        "off: no Gearman door)",
    )
    parser.add_argument(
        "--time-limit", type=numbers.seconds, metavar="SECONDS",
        help="longest a request may run (default 30)",
    )
    parser.add_argument(
        "--heartbeat-interval", type=numbers.seconds, metavar="SECONDS",
        help="broker and worker heartbeat (default: the programs' own, 1 s)",
    )
    parser.add_argument(
        "--max-requests", type=numbers.count, metavar="N",
        help="workers restart after N requests (default 0: never)",
    )
    parser.add_argument(
        "--log-level", metavar="LEVEL", type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level of the brokers, workers and doors (default INFO)",
    )
    parser.add_argument(
        "--pythonpath", metavar="DIR",
        help="where the programs import mdp and renderers from (default: where mdpctl "
        "imports them from, unless that is site-packages)",
    )
    parser.add_argument(
        "--timeout", type=numbers.seconds, default=60.0, metavar="SECONDS",
        help="how long to wait for every worker to register and every door to serve "
        "(default 60)",
    )


def run(args: argparse.Namespace, ctx: Context) -> int:
    ctx.require_local("up")
    started = time.monotonic()
    if ctx.search().run_dir is not None:
        _check_same_options(args, ctx)
        ctx.say(f"cluster already running in {ctx.run_dir}; waiting until it serves")
        changed = local.settings_changed(ctx.run_dir, local.settings_from(dict(os.environ)))
        if changed:
            ctx.say(f"  note: it runs with other {', '.join('$' + k for k in changed)} than "
                    "set here; `mdpctl down` and `mdpctl up` to change them")
        doors.start_failed(ctx.cluster(), ctx.say)
    else:
        spec = _spec(args, ctx, {})
        spec.host_config()  # every value checked before anything is looked at or started
        _check_services_known(args, spec)
        local.check_run_dir(ctx.run_dir)
        local.check_door_modules(spec)
        local.check_ports_free(spec)
        local.write_files(spec)
        locate.note_last(ctx.run_dir)
        workers = sum(pool.workers for pool in spec.pools)
        doors_asked = sum(1 for listen in (spec.http_listen, spec.gearman_listen) if listen)
        ctx.say(f"starting {len(spec.brokers)} brokers, {workers} workers and {doors_asked} "
                f"doors under supervisord in {ctx.run_dir} ...")
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
        served = doors.wait_serving(cluster, args.timeout)
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
    for door in served:
        if door.kind == "mdp-http":
            ctx.say(f"  http     {door.url} (API under /v1/, dashboard, /metrics)")
        else:
            ctx.say(f"  gearman  {door.listen} (Gearman clients, gearadmin)")
    ctx.say("`mdpctl status` shows the fleet; `mdpctl down` stops it")
    return 0


def _check_services_known(args: argparse.Namespace, spec: local.LocalSpec) -> None:
    """A service no worker could offer is refused before anything starts (its workers would
    only go FATAL, with the rest of the cluster up).  With --pythonpath the programs import
    from elsewhere, and only they can tell."""
    if args.pythonpath is not None:
        return
    for pool in spec.pools:
        try:
            handlers.resolve(pool.service)
        except ConfigError as exc:
            raise UsageError(f"--service {pool.service}: {exc}") from None


def _spec(args: argparse.Namespace, ctx: Context, base: dict[str, Any]) -> local.LocalSpec:
    """The cluster the options ask for; an option not given takes ``base``'s value (the
    running cluster's), else its default."""
    services = base.get("services", {})
    if args.service or args.workers is not None or args.spare is not None or not services:
        workers = args.workers if args.workers is not None else (os.cpu_count() or 1)
        spare = args.spare if args.spare is not None else workers
        counts = parse_service_counts(args.service) if args.service else {}
        names = list(counts) or list(services) or default_services()
        pools = tuple(
            render.WorkerPool(n, workers if counts.get(n) is None else int(counts[n] or 0),
                              spare)
            for n in names
        )
    else:
        pools = tuple(render.WorkerPool(n, int(w), int(s)) for n, (w, s) in services.items())
    pythonpath = args.pythonpath or base.get("pythonpath") or local.code_dir()

    def pick(value: Any, key: str, default: Any) -> Any:
        return value if value is not None else base.get(key, default)

    http = pick(args.http, "http", local.HTTP_LISTEN)
    gearman = pick(args.gearman, "gearman", local.GEARMAN_LISTEN)
    return local.LocalSpec(
        run_dir=ctx.run_dir,
        brokers=tuple(args.broker or base.get("brokers") or DEFAULT_BROKERS),
        pools=pools,
        pythonpath=os.path.abspath(pythonpath) if pythonpath else None,
        time_limit_s=pick(args.time_limit, "time_limit_s", 30.0),
        heartbeat_interval_s=pick(args.heartbeat_interval, "heartbeat_interval_s", None),
        max_requests=pick(args.max_requests, "max_requests", 0),
        log_level=pick(args.log_level, "log_level", "INFO"),
        http_listen=None if http == "off" else http,
        gearman_listen=None if gearman == "off" else gearman,
        settings=local.settings_from(dict(os.environ)),
    )


_GIVEN = ("broker", "service", "workers", "spare", "http", "gearman", "time_limit",
          "heartbeat_interval", "max_requests", "log_level", "pythonpath")


def _check_same_options(args: argparse.Namespace, ctx: Context) -> None:
    """Refuse options that differ from those the running cluster was started with."""
    given = [name for name in _GIVEN if getattr(args, name) is not None]
    if not given:
        return
    recorded = local.recorded_options(ctx.run_dir)
    if recorded is None:
        raise UsageError(
            f"a cluster is already running in {ctx.run_dir}, not started by `mdpctl up`, "
            "so its options cannot be compared; `mdpctl down` first to start it with options"
        )
    asked = _spec(args, ctx, recorded).options()
    differ = [
        _difference(key, recorded.get(key), asked[key])
        for key in asked
        if asked[key] != recorded.get(key)
    ]
    if differ:
        raise UsageError(
            f"a cluster is already running in {ctx.run_dir} with other options ("
            + "; ".join(differ) + "); `mdpctl down` first to start it with these "
            "(`mdpctl scale SERVICE N` changes the number of workers while it runs)"
        )


def _difference(key: str, running: Any, asked: Any) -> str:
    """``workers: 1 (+1 spare) running, 2 (+2 spare) asked``: what differs, and only that."""
    if key == "services" and isinstance(running, dict) and isinstance(asked, dict):
        return _services_difference(running, asked)
    return f"{key}: {_show(running)} running, {_show(asked)} asked"


def _services_difference(running: dict[str, Any], asked: dict[str, Any]) -> str:
    parts = []
    added, gone = sorted(set(asked) - set(running)), sorted(set(running) - set(asked))
    if added:
        parts.append(f"services {', '.join(added)} not running")
    if gone:
        parts.append(f"services {', '.join(gone)} running, not asked")
    changed = {name: (running[name], asked[name]) for name in running
               if name in asked and running[name] != asked[name]}
    if changed and len(set(map(str, changed.values()))) == 1 and len(changed) == len(running):
        was, now = next(iter(changed.values()))
        parts.append(f"workers: {_show(was)} running, {_show(now)} asked")
    elif changed:
        parts.append("workers: " + ", ".join(
            f"{name} {_show(was)} running, {_show(now)} asked"
            for name, (was, now) in changed.items()
        ))
    return "; ".join(parts)


def _show(value: Any) -> str:
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return f"{value[0]} (+{value[1]} spare)"  # a service's [workers, spare]
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


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
