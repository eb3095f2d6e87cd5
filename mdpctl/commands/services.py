"""List the services the fleet offers, with their fields, as the workers describe them.

usage: mdpctl services [SERVICE] [--json] [--broker ENDPOINT ...] [--timeout S]

Every broker is asked for mmi.status; a service is listed when some broker has a worker
ready for it, with the workers at each broker, the content type of its replies and its
request fields (* marks the required ones).  Naming a SERVICE shows each field's kind
and meaning and an `mdpctl call` line to start from.  The descriptions come from the
workers themselves (their READY), so they are those of the code that runs; a standard
7/MDP worker gives none.  `mdpctl call --list` prints the same list.

examples:
  mdpctl services
  mdpctl services thumbnail
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from mdpctl import catalog, numbers
from mdpctl.catalog import Offer
from mdpctl.context import Context
from mdpctl.endpoints import endpoint_arg
from mdpctl.errors import UsageError
from mdpctl.table import format_table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("service", nargs="?", help="show this service in detail")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    add_broker_options(parser)


def add_broker_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", action="append", metavar="ENDPOINT", type=endpoint_arg,
                        help="brokers to ask (repeat; default: the cluster's)")
    parser.add_argument("--timeout", type=numbers.seconds, default=2.0, metavar="SECONDS",
                        help="how long to wait for each broker (default 2)")


def run(args: argparse.Namespace, ctx: Context) -> int:
    show(ctx, args.broker, args.timeout, args.service, args.json)
    return 0


def show(ctx: Context, brokers: list[str] | None, timeout_s: float, name: str | None,
         as_json: bool) -> None:
    cluster = ctx.cluster()
    endpoints = list(brokers or cluster.brokers)
    offered, silent = catalog.catalog(endpoints, timeout_s, cluster.curve)
    services = [s for s in offered if name in (None, s.name)]
    if not services and name is not None:
        names = ", ".join(s.name for s in offered) or "none"
        raise UsageError(f"no worker offers {name!r}; the fleet offers: {names}")
    if as_json:
        ctx.say(json.dumps([_jsonable(s) for s in services], indent=2, sort_keys=True))
    elif name is not None:
        ctx.say(detail(services[0], endpoints))
    else:
        ctx.say(listing(services, endpoints))
    for view in silent:
        ctx.say(f"(broker {view.endpoint}: {view.error}; its workers are not counted)")


def _jsonable(service: Offer) -> dict[str, Any]:
    info = service.info
    return {
        "name": service.name,
        "workers": service.workers,
        "content_type": info.content_type if info else None,
        "doc": info.doc if info else "",
        "fields": [{"name": f.name, "kind": f.kind, "required": f.required, "doc": f.doc}
                   for f in service.fields],
        "call": service.example(),  # the line `mdpctl services NAME` suggests
    }


def _fields(service: Offer) -> str:
    if service.info is None:
        return "(not described by its workers)"
    if not service.fields:
        return "(any map)"
    return ", ".join(f.name + ("*" if f.required else "") for f in service.fields)


def listing(services: list[Offer], endpoints: list[str]) -> str:
    rows = [[s.name, " ".join(str(s.workers.get(e, 0)) for e in endpoints), s.reply,
             _fields(s)] for s in services]
    table = format_table(["SERVICE", "WORKERS", "REPLY", "FIELDS (* required)"], rows)
    return (table + f"\n(WORKERS: ready at each broker, in the order {', '.join(endpoints)})"
            "\n`mdpctl services NAME` describes a service's fields")


def detail(service: Offer, endpoints: list[str]) -> str:
    doc = service.info.doc if service.info else ""
    lines = [f"{service.name}: {doc}" if doc else service.name]
    lines.append("  workers  " + ", ".join(
        f"{service.workers.get(e, 0)} at {e}" for e in endpoints))
    lines.append(f"  reply    {service.reply}")
    if service.fields:
        rows = [[f.name, f.kind, "yes" if f.required else "", f.doc]
                for f in service.fields]
        table = format_table(["FIELD", "KIND", "REQUIRED", "MEANING"], rows)
        lines.append("  fields")
        lines.extend("    " + line for line in table.splitlines())
    elif service.info is None:
        lines.append("  fields   not described by its workers")
    lines.append(f"  call     {service.example()}")
    return "\n".join(lines)
