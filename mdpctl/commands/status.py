"""Show the fleet: brokers, hosts, services and every worker, with its code version.

usage: mdpctl status [--json] [--host NAME ...] [--timeout S]

Brokers are asked for mmi.status and every host's supervisord for its processes; the two
are joined by pid.  Each worker row shows its supervisord state, pid and uptime, the
requests it has served (all brokers together), its state at each broker and the code
version it reports.  --json prints the same as one JSON document for scripts.

Exits 0 when every broker and supervisord answered, 3 when one did not.
"""

from __future__ import annotations

import argparse
import json
import sys

from mdpctl.context import Context
from mdpctl.errors import EXIT_UNREACHABLE
from mdpctl.fleet import snapshot
from mdpctl.report import build_report, render_text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--host", action="append", metavar="NAME", help="only these hosts")
    parser.add_argument(
        "--timeout",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="how long to wait for each broker's answer (default 2)",
    )


def run(args: argparse.Namespace, ctx: Context) -> int:
    cluster = ctx.cluster()
    fleet = snapshot(cluster, cluster.select(args.host), timeout_s=args.timeout)
    report = build_report(fleet)
    if args.json:
        ctx.say(json.dumps(report, indent=2, sort_keys=True))
    else:
        ctx.out.write(render_text(report))
        ctx.out.flush()
    down = [b for b in report["brokers"] if not b["up"]] + [
        h for h in report["hosts"] if not h["up"]
    ]
    if down and ctx.is_local and not any(h["up"] for h in report["hosts"]):
        sys.stderr.write(
            f"mdpctl: no cluster is running in {ctx.run_dir} (`mdpctl up` starts one)\n"
        )
    return EXIT_UNREACHABLE if down else 0
