"""The options of the programs mdpctl runs, declared once for ``up`` and ``config``.

Each :class:`Flag` is one option: its help, its default (what a cluster gets when it is
left out), how its text is read and checked, and the ``DIPS_*`` variable that says the
same thing to the programs (``up`` refuses the two together).  argparse gets
``default=None`` for every one, so that a command can tell an option given from one left
out (``up`` compares the given ones with a running cluster's); :func:`value` is the
option's value with its default filled in.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mdp.rates import format_rate, link_floor_arg, link_floor_help
from mdpctl import capacity, images, numbers
from mdpctl.endpoints import OFF, listen_or_off_arg, tcp_endpoint_arg
from mdpctl.hostconf import (
    BROKER_START_RETRIES,
    DEFAULT_LOG_LEVEL,
    DEFAULT_TIME_LIMIT_S,
    GEARMAN_LISTEN,
    HTTP_LISTEN,
    START_RETRIES,
)


@dataclass(frozen=True)
class Flag:
    """One command-line option shared by ``up`` and ``config``."""

    name: str  # "--time-limit"
    help: str
    shown: str  # the default as the help says it
    default: Any = None  # the value when the option is not given
    type: Callable[[str], Any] | None = None
    metavar: str | None = None
    repeat: bool = False
    choices: tuple[str, ...] | None = None
    const: str | None = None  # the value of the option given alone
    env: str | None = None  # the DIPS_* variable that says the same to the programs
    typed: Callable[[Any], str] | None = None  # a value as it is typed again (else str)

    @property
    def dest(self) -> str:
        return self.name.lstrip("-").replace("-", "_")

    def add_to(self, parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
        kwargs: dict[str, Any] = {"dest": self.dest, "default": None, "metavar": self.metavar,
                                  "help": f"{self.help} (default: {self.shown})"}
        if self.repeat:
            kwargs["action"] = "append"
        if self.type is not None:
            kwargs["type"] = self.type
        if self.choices is not None:
            kwargs["choices"] = self.choices
        if self.const is not None:
            kwargs.update(nargs="?", const=self.const)
        parser.add_argument(self.name, **kwargs)


_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

FLAGS: tuple[Flag, ...] = (
    Flag("--broker", "a broker endpoint, tcp://HOST:PORT (repeat): the ones the local cluster "
         "runs, or every broker of the fleet for a worker host to connect to",
         "tcp://127.0.0.1:5555 and tcp://127.0.0.1:5556 on the local cluster",
         type=tcp_endpoint_arg, metavar="ENDPOINT", repeat=True),
    Flag("--service", "a service to run workers for, with N workers (repeat)",
         "echo and every service of the dips.services entry points, --workers (or --cpus) "
         "each", metavar="NAME[=N]", repeat=True),
    Flag("--workers", "workers per service on the local cluster",
         f"the cores it may use, here {capacity.usable_cores()}", type=numbers.positive,
         metavar="N"),
    Flag("--spare", "extra stopped slots per service for `mdpctl scale`", "as many as workers",
         type=numbers.count, metavar="N"),
    Flag("--http", "where mdp-http serves the API, images by URL, the dashboard and /metrics "
         "(off: no HTTP door)", f"{HTTP_LISTEN} on the local cluster, none on a host",
         type=listen_or_off_arg, metavar="HOST:PORT|off"),
    Flag("--gearman", "where mdp-gearman takes Gearman clients (off: no Gearman door)",
         f"{GEARMAN_LISTEN} on the local cluster, none on a host", type=listen_or_off_arg,
         metavar="HOST:PORT|off"),
    Flag("--time-limit", "longest a request may run", f"{DEFAULT_TIME_LIMIT_S:g}",
         DEFAULT_TIME_LIMIT_S, type=numbers.seconds, metavar="SECONDS"),
    Flag("--heartbeat-interval", "broker and worker heartbeat", "the programs' own, 1 s",
         type=numbers.seconds, metavar="SECONDS"),
    Flag("--link-floor", link_floor_help("given to the brokers, workers and doors alike "
         "(docs/OPERATIONS.md, 'Slow links')"),
         "the programs' own, 10MB/s", type=link_floor_arg, metavar="RATE",
         env="DIPS_HTTP_LINK_FLOOR", typed=format_rate),
    Flag("--max-requests", "workers restart after N requests", "0, never", 0,
         type=numbers.count, metavar="N"),
    Flag("--log-level", "log level of the brokers, workers and doors", DEFAULT_LOG_LEVEL,
         DEFAULT_LOG_LEVEL, type=str.upper, metavar="LEVEL", choices=_LEVELS),
    Flag("--start-retries", "how many times supervisord starts a program again that exited "
         "within its first second, each try a second later than the one before, before it "
         "gives up on it (FATAL: `mdpctl up` or `reload` starts it again)",
         f"{START_RETRIES}, {BROKER_START_RETRIES} for brokers", type=numbers.count,
         metavar="N"),
    Flag("--pythonpath", "where the programs import mdp and renderers from (their PYTHONPATH)",
         "up: where mdpctl imports them from, unless that is site-packages; config: none",
         metavar="DIR"),
    Flag("--redis", "run redis-server at HOST:PORT for the HTTP door's shared cache of "
         "rendered images (the option alone: " + images.REDIS_LISTEN + "; nothing persisted; "
         "off: none)", "off", type=listen_or_off_arg, metavar="HOST:PORT|off",
         const=images.REDIS_LISTEN, env=images.DOOR_REDIS_ENV),
    Flag("--redis-max-memory", "the Redis's memory; least recently used images go first",
         images.REDIS_MAX_MEMORY, images.REDIS_MAX_MEMORY, type=images.redis_size,
         metavar="SIZE"),
    Flag("--redis-url", "a Redis elsewhere that the HTTP door shares its cache in "
         "(redis://HOST:PORT/DB)", "none; the one --redis runs", type=images.redis_url,
         metavar="URL", env=images.DOOR_REDIS_ENV),
    Flag("--sign-key", "a hex key file: the HTTP door then requires signed requests (repeat "
         "for rotation, one --sign-salt each; `mdpctl imgproxy key` makes them)",
         "none, unsigned", metavar="FILE", repeat=True, env="DIPS_HTTP_SIGN_KEY"),
    Flag("--sign-salt", "a hex salt file, paired with --sign-key", "none", metavar="FILE",
         repeat=True, env="DIPS_HTTP_SIGN_SALT"),
    Flag("--sources-root", "a directory the image workers serve local:///PATH from (repeat; "
         "looked up in order)", "none", metavar="DIR", repeat=True,
         env=images.SOURCES_ROOTS_ENV),
    Flag("--sources-allow", "an origin the image workers may fetch http(s) sources from, "
         "e.g. https://img.example.com or https://*.example.com (repeat)", "none",
         metavar="ORIGIN", repeat=True, env=images.SOURCES_ALLOW_ENV),
)
BY_DEST = {flag.dest: flag for flag in FLAGS}


def add(parser: argparse.ArgumentParser) -> None:
    """Every shared option, in one group of the command's help."""
    group = parser.add_argument_group("the programs' options (the same for `mdpctl up` "
                                      "and `mdpctl config`)")
    for flag in FLAGS:
        flag.add_to(group)


def value(args: argparse.Namespace, dest: str) -> Any:
    """The option's value, its default when it was not given."""
    given = getattr(args, dest)
    return BY_DEST[dest].default if given is None else given


def given(args: argparse.Namespace) -> list[str]:
    """The shared options given on this command line (their ``dest``)."""
    return [flag.dest for flag in FLAGS if getattr(args, flag.dest) is not None]


def command_line(args: argparse.Namespace) -> list[str]:
    """The shared options given, as they would be typed again."""
    argv: list[str] = []
    for flag in FLAGS:
        found = getattr(args, flag.dest)
        for item in (found if flag.repeat else [found]) if found is not None else ():
            if flag.typed is not None:
                text = flag.typed(item)
            else:
                text = f"{item:g}" if isinstance(item, float) else str(item)
            argv += [flag.name, text]
    return argv


def env_conflicts(args: argparse.Namespace, environ: dict[str, str]) -> list[str]:
    """Options given that a DIPS_* variable of ``environ`` also sets, as
    ``--redis-url and $DIPS_HTTP_REDIS``."""
    return [f"{flag.name} and ${flag.env}" for flag in FLAGS
            if flag.env and getattr(args, flag.dest) not in (None, OFF)
            and environ.get(flag.env)]
