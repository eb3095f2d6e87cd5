"""Start the local cluster; return once every worker is registered with every broker.

usage: mdpctl up [--broker ENDPOINT ...] [--service NAME[=N] ...] [--workers N] [--spare N]
                 [--http HOST:PORT|off] [--gearman HOST:PORT|off] [--time-limit S]
                 [--heartbeat-interval S] [--link-floor RATE] [--max-requests N]
                 [--log-level LEVEL] [--start-retries N] [--pythonpath DIR]
                 [--redis [HOST:PORT|off]] [--redis-max-memory SIZE] [--redis-url URL]
                 [--sign-key FILE --sign-salt FILE ...]
                 [--sources-root DIR ...] [--sources-allow ORIGIN ...] [--max-workers N]
                 [--new] [--timeout S]

No configuration file is needed: the packaged supervisord configuration is rendered
into the run directory (supervisord.conf, with cluster.toml for the other commands and
up.json, the options) and supervisord is started there; the programs get every DIPS_*
variable of up's environment (the renderers' limits: docs/RENDERERS.md; the HTTP door's
DIPS_HTTP_*: docs/HTTP.md).  Two brokers, at tcp://127.0.0.1:5555 and :5556 unless
--broker says otherwise; for each service as many workers as the cores up may use; the
HTTP door (mdp-http: API, images by URL, dashboard, /metrics) at 127.0.0.1:8080 and the
Gearman door (mdp-gearman) at 127.0.0.1:4730 unless --http and --gearman move them or
turn them off.

Images by URL: --sources-root DIR lets the workers serve local:///PATH from DIR,
--sources-allow ORIGIN fetch http(s) sources from ORIGIN; --sign-key and --sign-salt
(`mdpctl imgproxy key` makes them) make the door require signed URLs.  --redis runs a
redis-server on loopback (127.0.0.1:6379 unless given) that the door keeps rendered
images in besides its memory; nothing of it is written to disk, `down` stops it and
`reload` leaves it alone.  --redis-url points the door at a Redis that runs elsewhere.

Every port is checked first, as the programs bind it: a port that is taken stops up at
once with one line naming it and the process that holds it, and nothing is started.
up returns once the brokers run, every worker is registered with every broker and each
door (and the Redis) accepts connections; a process that cannot start is named with the
end of its log, up exits 1 and leaves the cluster up for inspection.  Logs go to
RUN_DIR/log; the control socket RUN_DIR/supervisor.sock is for its owner only.

If the cluster is already running, up starts any door that is down, and waits until it
serves (--new: refuses instead); options that differ from the running cluster's are
refused (`mdpctl down` first; `mdpctl scale` changes the number of workers).  A scale
chosen earlier with `mdpctl scale` (RUN_DIR/scale.json) is applied again before up
returns.

examples:
  mdpctl up
  mdpctl up --service echo=1 --service ecard=4 --spare 4
  mdpctl up --http 127.0.0.1:8081 --gearman off
  mdpctl up --sources-root photos --redis
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from mdp import handlers
from mdp.errors import ConfigError
from mdpctl import capacity, daemon, doors, flags, hostconf, images, local, locate, numbers
from mdpctl.cluster import DEFAULT_BROKERS
from mdpctl.context import Context
from mdpctl.endpoints import OFF, split_listen
from mdpctl.errors import ProcessFailed, UsageError, WaitTimeout
from mdpctl.fleet import snapshot
from mdpctl.readiness import SlotKey, wait_serving, wait_until
from mdpctl.services import default_services, parse_service_counts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    flags.add(parser)
    parser.add_argument(
        "--new", action="store_true",
        help="refuse (exit 2) when a cluster already runs in the run directory, rather than "
        "wait for it to serve: for a script that stops the cluster it starts",
    )
    parser.add_argument(
        "--max-workers", type=numbers.positive, metavar="N",
        help="the most worker processes up starts, all services together (default: "
        f"{capacity.PER_CORE} per core it may use, here "
        f"{capacity.PER_CORE * capacity.usable_cores()})",
    )
    parser.add_argument(
        "--timeout", type=numbers.seconds, default=60.0, metavar="SECONDS",
        help="how long to wait for every worker to register and every door to serve "
        "(default 60)",
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def run(args: argparse.Namespace, ctx: Context) -> int:
    ctx.require_local("up")
    started = time.monotonic()
    conflicts = flags.env_conflicts(args, dict(os.environ))
    if conflicts:
        raise UsageError(f"{conflicts[0]} both say it: give one of them")
    local.check_run_dir(ctx.run_dir)
    daemon.check_answers(ctx.run_dir)  # one that runs but does not answer: said at once
    if ctx.search().run_dir is not None:  # it runs: join it (no lock: a `reload` or `scale`
        _join_running(args, ctx)          # may hold it, and joining changes nothing they do)
        return _wait_serving(args, ctx, started)
    # Every refusal comes before anything is made: even the run directory.
    spec = _new_spec(args, ctx)
    _make_run_dir(ctx)  # the lock lives in it
    # Two `up` at once would both find no cluster and start one each: the second is refused.
    with ctx.exclusive("up", f"`mdpctl up` is starting the cluster in {ctx.run_dir}"):
        daemon.check_answers(ctx.run_dir)
        if ctx.search(again=True).run_dir is not None:  # perhaps started since by another up
            _join_running(args, ctx)
        else:
            _start(spec, ctx)
        return _wait_serving(args, ctx, started)


def _make_run_dir(ctx: Context) -> None:
    try:
        ctx.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{ctx.run_dir_source()} {ctx.run_dir}: cannot create the run "
                         f"directory: {exc.strerror or exc}") from None


def _new_spec(args: argparse.Namespace, ctx: Context) -> local.LocalSpec:
    """The cluster to start, every value checked (nothing looked at or started yet)."""
    spec = _spec(args, ctx, {})
    spec.host_config()
    capacity.check_workers(spec.pools, args.max_workers)
    _check_services_known(args, spec)
    local.check_door_modules(spec)
    local.check_door_settings(spec)
    return spec


def _join_running(args: argparse.Namespace, ctx: Context) -> None:
    """The cluster runs: options must agree; any door that is down is started."""
    if args.new:
        raise UsageError(f"a cluster is already running in {ctx.run_dir} and --new starts "
                         "none beside it: `mdpctl down` stops it, or --run-dir DIR (with "
                         "other ports) starts one elsewhere")
    _check_same_options(args, ctx)
    ctx.say(f"cluster already running in {ctx.run_dir}; waiting until it serves")
    changed = local.settings_changed(ctx.run_dir, local.settings_from(dict(os.environ)))
    if changed:
        ctx.say(f"  note: it runs with other {', '.join('$' + k for k in changed)} than "
                "set here; `mdpctl down` and `mdpctl up` to change them")
    doors.start_failed(ctx.cluster(), ctx.say)


def _start(spec: local.LocalSpec, ctx: Context) -> None:
    local.check_ports_free(spec)
    local.write_files(spec)
    locate.note_last(ctx.run_dir)
    workers = sum(pool.workers for pool in spec.pools)
    doors_asked = sum(1 for listen in (spec.http_listen, spec.gearman_listen) if listen)
    redis = " and a Redis" if spec.images.redis is not None else ""
    ctx.say(f"starting {_count(len(spec.brokers), 'broker')}, {_count(workers, 'worker')}, "
            f"{_count(doors_asked, 'door')}{redis} under supervisord in {ctx.run_dir} ...")
    local.start_supervisord(ctx.run_dir)


def _wait_serving(args: argparse.Namespace, ctx: Context, started: float) -> int:
    """Wait until every worker is registered and every door serves; say what runs."""
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
            ctx.say(f"  http     {door.url} (API under /v1/, images by URL, dashboard, "
                    "/metrics)")
        elif door.kind == "redis":
            ctx.say(f"  redis    {door.listen} (the HTTP door's shared cache of images)")
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
        workers = args.workers if args.workers is not None else capacity.usable_cores()
        spare = args.spare if args.spare is not None else workers
        counts = parse_service_counts(args.service) if args.service else {}
        names = list(counts) or list(services) or default_services()
        pools = tuple(
            hostconf.WorkerPool(n, workers if counts.get(n) is None else int(counts[n] or 0),
                              spare)
            for n in names
        )
    else:
        pools = tuple(hostconf.WorkerPool(n, int(w), int(s)) for n, (w, s) in services.items())
    pythonpath = args.pythonpath or base.get("pythonpath") or local.code_dir()

    def pick(dest: str, key: str, default: Any = None) -> Any:
        given = getattr(args, dest)
        if given is not None:
            return given
        return base.get(key, flags.BY_DEST[dest].default if default is None else default)

    http = pick("http", "http", hostconf.HTTP_LISTEN)
    gearman = pick("gearman", "gearman", hostconf.GEARMAN_LISTEN)
    return local.LocalSpec(
        run_dir=ctx.run_dir,
        brokers=tuple(args.broker or base.get("brokers") or DEFAULT_BROKERS),
        pools=pools,
        pythonpath=os.path.abspath(pythonpath) if pythonpath else None,
        time_limit_s=pick("time_limit", "time_limit_s"),
        heartbeat_interval_s=pick("heartbeat_interval", "heartbeat_interval_s"),
        link_floor=pick("link_floor", "link_floor"),
        max_requests=pick("max_requests", "max_requests"),
        log_level=pick("log_level", "log_level"),
        start_retries=pick("start_retries", "start_retries"),
        http_listen=None if http == "off" else http,
        gearman_listen=None if gearman == "off" else gearman,
        settings=local.settings_from(dict(os.environ)),
        images=_images(args, base, http != "off"),
    )


def _images(args: argparse.Namespace, base: dict[str, Any], http: bool) -> images.ImageServing:
    """The image server's settings: given paths made absolute and checked (the programs run
    in the run directory)."""
    def paths(dest: str, key: str, check: Any) -> tuple[str, ...]:
        given = getattr(args, dest)
        if given is None:
            return tuple(base.get(key, ()))
        return tuple(check(given, flags.BY_DEST[dest].name))

    url = args.redis_url if args.redis_url is not None else base.get("redis_url")
    serving = images.ImageServing(
        sign_keys=paths("sign_key", "sign_keys", images.readable_files),
        sign_salts=paths("sign_salt", "sign_salts", images.readable_files),
        sources_roots=paths("sources_root", "sources_roots", images.absolute_dirs),
        sources_allow=tuple(args.sources_allow or base.get("sources_allow", ())),
        redis=_redis(args, base),
        redis_url=None if url == OFF else url,
    )
    if not http and (serving.redis or serving.redis_url or serving.sign_keys):
        raise UsageError("--redis, --redis-url and --sign-key are the HTTP door's: not with "
                         "--http off")
    return serving


def _redis(args: argparse.Namespace, base: dict[str, Any]) -> images.RedisProgram | None:
    """The Redis that --redis asks for: on loopback only (it has no password here)."""
    listen = args.redis if args.redis is not None else base.get("redis", OFF)
    if listen == OFF:
        if args.redis_max_memory is not None:
            raise UsageError("--redis-max-memory is for the Redis that --redis runs")
        return None
    if not images.is_loopback(split_listen(listen)[0]):
        raise UsageError(f"--redis {listen}: the local cluster's Redis listens on loopback "
                         "only (it has no password); for a fleet, see `mdpctl config --redis`")
    memory = args.redis_max_memory or base.get("redis_max_memory") or images.REDIS_MAX_MEMORY
    return images.RedisProgram(listen, memory, images.find_redis_server())


def _check_same_options(args: argparse.Namespace, ctx: Context) -> None:
    """Refuse options that differ from those the running cluster was started with."""
    if not flags.given(args):
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
