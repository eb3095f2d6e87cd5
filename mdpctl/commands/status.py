"""Show the fleet: brokers, hosts, services and every worker, with its code version.

usage: mdpctl status [--json] [--host NAME ...] [--timeout S]

Brokers are asked for mmi.status and every host's supervisord for its processes; the two
are joined by pid.  Each worker row shows its supervisord state, pid and uptime, the
requests it has served (all brokers together), its state at each broker and the code
version it reports; the DOORS table shows each front door (mdp-http, mdp-gearman) with
its address, state and whether it accepts connections.  --json prints the same as one
JSON document for scripts.

With no cluster running it says so in one line (where it looked, what answers on the
broker ports) and exits 3.  Exits 0 when every broker, supervisord and door answered, 3
when one did not.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from mdpctl import doors, numbers
from mdpctl.context import Context
from mdpctl.errors import EXIT_UNREACHABLE
from mdpctl.fleet import snapshot
from mdpctl.report import build_report, render_text
from mdpctl.table import format_duration, format_table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--host", action="append", metavar="NAME",
                        help="only these hosts (repeat; default: every host)")
    parser.add_argument(
        "--timeout",
        type=numbers.seconds,
        default=2.0,
        metavar="SECONDS",
        help="how long to wait for each broker's answer (default 2)",
    )


def run(args: argparse.Namespace, ctx: Context) -> int:
    ctx.require_running()
    cluster = ctx.cluster()
    hosts = cluster.select(args.host)
    fleet = snapshot(cluster, hosts, timeout_s=args.timeout)
    report = build_report(fleet)
    report["doors"] = [door_report(d) for d in doors.read_doors(cluster, hosts)]
    if args.json:
        ctx.say(json.dumps(report, indent=2, sort_keys=True))
    else:
        text = render_text(report)
        if report["doors"]:
            text += "\n" + doors_table(report["doors"]) + "\n"
        ctx.out.write(text)
        ctx.out.flush()
    down = [b for b in report["brokers"] if not b["up"]] + [
        h for h in report["hosts"] if not h["up"]
    ] + [d for d in report["doors"] if not d["serving"]]
    if down and ctx.is_local and not any(h["up"] for h in report["hosts"]):
        sys.stderr.write(f"mdpctl: no cluster is running in {ctx.run_dir}\n")
    return EXIT_UNREACHABLE if down else 0


def door_report(door: doors.Door) -> dict[str, Any]:
    up = door.process.state == "RUNNING"
    return {
        "host": door.host,
        "door": door.kind,
        "process": door.process.fullname,
        "listen": door.listen,
        "state": door.process.state,
        "pid": door.process.pid or None,
        "uptime_s": door.process.uptime_s if up else None,
        "serving": up and doors.accepts(door.listen),
    }


def doors_table(rows: list[dict[str, Any]]) -> str:
    table = [
        [d["host"], d["door"], d["listen"], d["state"], d["pid"],
         format_duration(d["uptime_s"]), "yes" if d["serving"] else "NO"]
        for d in rows
    ]
    headers = ["HOST", "DOOR", "LISTEN", "STATE", "PID", "UPTIME", "ACCEPTS"]
    return format_table(headers, table)
