"""Write a supervisord configuration for the local cluster, a broker host or a worker host.

usage: mdpctl config local       [--broker ENDPOINT ...] [--service NAME[=N] ...] [--workers N]
       mdpctl config broker-host [--bind ENDPOINT] [--rpc-listen HOST:PORT] [--rpc-user NAME]
                                 [--curve-secret FILE --client-keys DIR --worker-keys DIR]
       mdpctl config worker-host --broker ENDPOINT ... --cpus N [--service NAME[=N] ...]
                                 [--rpc-listen HOST:PORT] [--rpc-user NAME]
                                 [--curve-secret FILE --broker-key FILE]
       (all: [--http HOST:PORT|off] [--gearman HOST:PORT|off] [--door-secret FILE]
             [--spare N] [--python PATH] [--run-dir DIR] [--pythonpath DIR] [--time-limit S]
             [--heartbeat-interval S] [--link-floor RATE] [--max-requests N]
             [--log-level LEVEL] [--start-retries N] [--redis [HOST:PORT|off]]
             [--redis-max-memory SIZE] [--redis-url URL]
             [--sign-key FILE --sign-salt FILE ...] [--sources-root DIR ...]
             [--sources-allow ORIGIN ...] [-o FILE [--force]])

local: two brokers, per service as many workers as --workers (default: the cores), and
the two front doors as `mdpctl up` runs them (mdp-http at 127.0.0.1:8080, mdp-gearman at
127.0.0.1:4730; --http off, --gearman off for none).  broker-host: one broker.
worker-host: --cpus worker processes per service, the share of the host's CPUs given to
image work (the original gave 4 of an 8-core server, 2 of a 4-core one), connected to
every --broker.  A host runs a door only when --http or --gearman says where.  Each
service also gets --spare stopped slots (default: as many as its workers) that
`mdpctl scale` can start.

Paths are written as given, so supervisord's %(here)s (the directory of the file) can
be used: --run-dir defaults to %(here)s/run.  The HTTP control server (hosts only,
--rpc-listen, default 127.0.0.1:9001) requires a login: the password is read from
$DIPS_SUPERVISOR_PASSWORD and written as its SHA-1; without it the file gets a
placeholder that matches no password.  Keep that server off the open network (loopback
plus an SSH tunnel, or a firewalled management network).

Images by URL: --sources-root and --sources-allow tell the host's workers where sources
come from, --sign-key/--sign-salt make its door require signed URLs (paths on the host,
absolute).  --redis HOST:PORT runs a redis-server on the host for the doors' shared cache
(nothing persisted; its memory bounded by --redis-max-memory); beyond loopback it needs a
password: set $DIPS_REDIS_PASSWORD, the file gets only its SHA-256.  A door uses the
host's own --redis, or --redis-url URL for one elsewhere; with $DIPS_REDIS_PASSWORD set
here, its URL takes the password from supervisord's environment when it starts
(%(ENV_DIPS_REDIS_PASSWORD)s), so supervisord on that host must be started with it.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import sys
from pathlib import Path
from urllib.parse import urlsplit

from mdpctl import capacity, flags, hostconf, images, numbers
from mdpctl.cluster import DEFAULT_BROKERS
from mdpctl.context import Context
from mdpctl.endpoints import OFF, listen_arg, tcp_endpoint_arg
from mdpctl.errors import UsageError
from mdpctl.services import default_services, parse_service_counts

PASSWORD_ENV = "DIPS_SUPERVISOR_PASSWORD"
NO_PASSWORD = "{SHA}" + "0" * 40
PROFILES = ("local", "broker-host", "worker-host")
DEFAULT_BIND = ("tcp://0.0.0.0:5555",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("profile", choices=PROFILES,
                        help="which supervisord file: " + ", ".join(PROFILES))
    parser.add_argument(
        "--bind", action="append", metavar="ENDPOINT", type=tcp_endpoint_arg,
        help="broker-host: where its broker listens (default tcp://0.0.0.0:5555; repeat "
        "for more than one broker on the host)",
    )
    parser.add_argument("--cpus", type=numbers.positive, metavar="N",
                        help="worker-host: CPUs given to image work = workers per service "
                        "(required, no default)")
    parser.add_argument(
        "--python", default=sys.executable, metavar="PATH",
        help="interpreter for brokers, workers and doors (default: this one)",
    )
    parser.add_argument(
        "--run-dir", default="%(here)s/run", metavar="DIR",
        help="socket, pid file and logs (default %%(here)s/run: beside the file)",
    )
    parser.add_argument(
        "--rpc-listen", metavar="HOST:PORT", type=listen_arg,
        help="hosts: supervisord's HTTP control server (default 127.0.0.1:9001; local: "
        "none, the unix socket only)",
    )
    parser.add_argument("--rpc-user", default="dips", metavar="NAME",
                        help="user name of the HTTP control server (default dips)")
    parser.add_argument("-o", "--output", metavar="FILE",
                        help="write the file here, mode 0600 when it holds a password "
                        "(default: standard output)")
    parser.add_argument("--force", action="store_true",
                        help="overwrite the -o FILE that exists (default: refuse)")
    flags.add(parser)
    curve = parser.add_argument_group("CURVE (docs/SECURITY.md); hosts only")
    curve.add_argument("--curve-secret", metavar="FILE",
                       help="this host's key pair (default: none, plaintext)")
    curve.add_argument("--client-keys", metavar="DIR",
                       help="broker-host: allowed clients' public keys (required with "
                       "--curve-secret; no default)")
    curve.add_argument("--worker-keys", metavar="DIR",
                       help="broker-host: allowed workers' public keys (required with "
                       "--curve-secret; no default)")
    curve.add_argument("--broker-key", metavar="FILE",
                       help="the brokers' public key, for workers and front doors "
                       "(required with --curve-secret there; no default)")
    curve.add_argument("--door-secret", metavar="FILE",
                       help="a client key pair for --gearman and --http (brokers refuse "
                       "requests signed with a worker's key; no default)")


def run(args: argparse.Namespace, ctx: Context) -> int:
    config = host_config(args)
    text = hostconf.render(config)
    if args.output:
        secret = _holds_password(args.redis_url)
        write_output(Path(args.output), text, args.force, secret)
        ctx.say(f"wrote {args.output}" + (" (mode 0600: it holds a password)" if secret else ""))
    else:
        ctx.out.write(text)
    return 0


def _holds_password(redis_url: str | None) -> bool:
    """True when the door's Redis URL carries a password (written into the file as is)."""
    return bool(redis_url) and urlsplit(str(redis_url)).password is not None


def write_output(path: Path, text: str, force: bool, secret: bool) -> None:
    """Write -o FILE: an existing file only with --force; mode 0600 when ``secret``."""
    how = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        descriptor = os.open(path, how, 0o600 if secret else 0o666)
    except FileExistsError:
        raise UsageError(f"-o {path}: the file exists; --force overwrites it") from None
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        if secret:
            os.fchmod(descriptor, 0o600)  # an existing file keeps its mode otherwise
        out.write(text)


def generated_by(args: argparse.Namespace) -> str:
    """The command that writes this file again (without -o)."""
    argv: list[str] = ["mdpctl", "config", args.profile]
    for flag, value in (
        ("--cpus", args.cpus),
        ("--python", args.python),
        ("--run-dir", args.run_dir),
        ("--rpc-listen", args.rpc_listen),
        ("--rpc-user", args.rpc_user if args.profile != "local" else None),
        ("--curve-secret", args.curve_secret),
        ("--client-keys", args.client_keys),
        ("--worker-keys", args.worker_keys),
        ("--broker-key", args.broker_key),
        ("--door-secret", args.door_secret),
    ):
        if value is not None:
            argv += [flag, str(value)]
    for bind in args.bind or ():
        argv += ["--bind", bind]
    return shlex.join(argv + flags.command_line(args))


def _pools(args: argparse.Namespace, per_service: int) -> tuple[hostconf.WorkerPool, ...]:
    counts = parse_service_counts(args.service) if args.service else {}
    names = list(counts) or default_services()
    spare = args.spare if args.spare is not None else per_service
    return tuple(
        hostconf.WorkerPool(n, per_service if counts.get(n) is None else int(counts[n] or 0), spare)
        for n in names
    )


def _rpc(args: argparse.Namespace) -> hostconf.RpcListen | None:
    if args.profile == "local" and not args.rpc_listen:
        return None
    password = os.environ.get(PASSWORD_ENV)
    if password:
        hashed = "{SHA}" + hashlib.sha1(password.encode()).hexdigest()
    else:
        sys.stderr.write(
            f"mdpctl: ${PASSWORD_ENV} is not set: the control server's password is a "
            "placeholder that matches nothing; replace it before use\n"
        )
        hashed = NO_PASSWORD
    return hostconf.RpcListen(args.rpc_listen or "127.0.0.1:9001", args.rpc_user, hashed)


_ONLY = {"bind": "broker-host", "workers": "local", "cpus": "worker-host",
         "client_keys": "broker-host", "worker_keys": "broker-host"}
_NEED_HTTP = ("redis_url", "sign_key", "sign_salt")
_NEED_WORKERS = ("sources_root", "sources_allow")


def _curve(args: argparse.Namespace) -> hostconf.CurveFiles | None:
    if args.curve_secret is None:
        if args.client_keys or args.worker_keys or args.broker_key or args.door_secret:
            raise UsageError("the key options need --curve-secret, this host's key pair")
        return None
    if args.profile == "local":
        raise UsageError("the local cluster runs on loopback in plaintext; CURVE is for hosts")
    return hostconf.CurveFiles(args.curve_secret, args.client_keys, args.worker_keys,
                             args.broker_key, args.door_secret)


def host_config(args: argparse.Namespace) -> hostconf.HostConfig:
    """The HostConfig the options describe."""
    for option, profile in _ONLY.items():
        if getattr(args, option) is not None and args.profile != profile:
            flag = option.replace("_", "-")
            raise UsageError(f"--{flag} applies to `mdpctl config {profile}` only")
    if args.profile == "broker-host" and (args.service or args.broker or args.spare
                                          or any(getattr(args, o) for o in _NEED_WORKERS)):
        raise UsageError("a broker host runs no workers: drop --service, --broker, --spare, "
                         "--sources-root, --sources-allow")
    if args.profile == "local":
        brokers = tuple(args.broker or DEFAULT_BROKERS)
        workers = args.workers if args.workers is not None else capacity.usable_cores()
        return _config(
            args,
            f"DIPS local cluster: {len(brokers)} brokers and {workers} workers per service "
            "(one per core), on one machine",
            "dips-local",
            broker_binds=brokers,
            brokers=brokers,
            pools=_pools(args, workers),
        )
    if args.profile == "broker-host":
        return _config(
            args,
            "DIPS broker host: a Majordomo broker",
            "dips-broker",
            broker_binds=tuple(args.bind or DEFAULT_BIND),
        )
    if not args.broker or not args.cpus:
        raise UsageError("worker-host needs --broker (every broker, repeated) and --cpus N")
    return _config(
        args,
        f"DIPS worker host: {args.cpus} CPUs for image work",
        "dips-worker",
        brokers=tuple(args.broker),
        pools=_pools(args, args.cpus),
    )


def _config(
    args: argparse.Namespace,
    title: str,
    identifier: str,
    broker_binds: tuple[str, ...] = (),
    brokers: tuple[str, ...] = (),
    pools: tuple[hostconf.WorkerPool, ...] = (),
) -> hostconf.HostConfig:
    http = _door(args.http, args.profile, hostconf.HTTP_LISTEN)
    return hostconf.HostConfig(
        title=title,
        generated_by=generated_by(args),
        python=args.python,
        run_dir=args.run_dir,
        pythonpath=args.pythonpath,
        broker_binds=broker_binds,
        brokers=brokers,
        pools=pools,
        time_limit_s=flags.value(args, "time_limit"),
        heartbeat_interval_s=args.heartbeat_interval,
        link_floor=args.link_floor,
        max_requests=flags.value(args, "max_requests"),
        log_level=flags.value(args, "log_level"),
        start_retries=args.start_retries,
        identifier=identifier,
        rpc=_rpc(args),
        curve=_curve(args),
        gearman_listen=_door(args.gearman, args.profile, hostconf.GEARMAN_LISTEN),
        http_listen=http,
        images=_images(args, http is not None),
    )


def _images(args: argparse.Namespace, http: bool) -> images.ImageServing:
    """Paths are the host's (absolute, not checked here); a Redis beyond loopback needs
    $DIPS_REDIS_PASSWORD, of which the file gets only the SHA-256."""
    if not http and any(getattr(args, option) for option in _NEED_HTTP):
        raise UsageError("--redis-url, --sign-key and --sign-salt are for the HTTP door: "
                         "add --http HOST:PORT")
    redis = None
    password = images.password_sha256(os.environ)
    if args.redis not in (None, OFF):
        redis = images.RedisProgram(args.redis, flags.value(args, "redis_max_memory"),
                                    password_sha256=password)
    elif args.redis_max_memory is not None:
        raise UsageError("--redis-max-memory is for the Redis that --redis runs")
    url = None if args.redis_url in (None, OFF) else args.redis_url
    return images.ImageServing(
        sign_keys=_host_paths(args, "sign_key"),
        sign_salts=_host_paths(args, "sign_salt"),
        sources_roots=_host_paths(args, "sources_root"),
        sources_allow=tuple(args.sources_allow or ()),
        redis=redis,
        redis_url=url,
        redis_password=url is not None and password is not None,
    )


def _host_paths(args: argparse.Namespace, dest: str) -> tuple[str, ...]:
    return images.host_paths(getattr(args, dest), flags.BY_DEST[dest].name)


def _door(value: str | None, profile: str, local_default: str) -> str | None:
    """A door's address: as given; the local profile runs both doors unless told off."""
    if value is None:
        return local_default if profile == "local" else None
    return None if value == OFF else value
