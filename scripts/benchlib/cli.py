"""``scripts/bench``: the command line."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from benchlib import (
    failover,
    gateway_gearman,
    gateway_http,
    gearman,
    guide,
    imageserver,
    realjob,
    rolecpu,
    roundtrip,
    scale,
)
from benchlib.plan import SECTIONS, Plan
from benchlib.procs import REPO_ROOT, BenchError, Children
from benchlib.report import Results, as_json, render
from benchlib.roundtrip import note

DOC = REPO_ROOT / "docs" / "BENCHMARKS.md"
ROUNDTRIPS = {"floor", "dips", "gearman"}
KEEP_MARKER = "<!-- Below this line is written by hand; scripts/bench keeps it. -->"

USAGE = """\
Sections: floor (raw pyzmq), dips (through one broker), gearman (gearmand with the Python gear
client and a C client), realjob (matrix cards through 2 brokers beside rendering
in-process, and where each card's CPU goes), roles (CPU per echo request by role, pipelined
and sync, beside the raw pyzmq floor), scale (1 to 1,000 workers, idle cost, memory,
dispatch cost), failover (broker killed, broker hung, worker killed), imageserver (images
by URL through mdp-http beside thumbor 7.8, which the run installs into its own virtual
environment once; needs Debian's wrk; --quick runs it only with --only). A full run takes a
few minutes and writes docs/BENCHMARKS.md; --quick runs a small subset in well under a
minute and writes nothing unless --write is given.

examples:
  scripts/bench                          # everything; prints the table, writes the doc
  scripts/bench --quick --no-gearman     # the smoke subset (what the test suite runs)
  scripts/bench --only floor,dips --profile /tmp/prof   # with py-spy profiles
  scripts/bench --only realjob,roles --no-write         # the real job and CPU by role
"""


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench", description="The DIPS benchmark suite: DIPS beside a raw pyzmq "
        "floor and gearmand, scale and failover cost.", epilog=USAGE,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="a small subset with short windows (a smoke test)")
    parser.add_argument("--only", metavar="SECTIONS",
                        help=f"comma-separated sections to run, of: {','.join(SECTIONS)}")
    parser.add_argument("--skip", metavar="SECTIONS", default="",
                        help="comma-separated sections to leave out")
    parser.add_argument("--no-gearman", action="store_true",
                        help="leave gearmand out (same as --skip gearman)")
    parser.add_argument("--no-gearman-c", action="store_true",
                        help="no C client for gearmand (no libgearman-dev, no gcc)")
    write = parser.add_mutually_exclusive_group()
    write.add_argument("--write", action="store_true",
                       help=f"write {DOC.relative_to(REPO_ROOT)} (the default for full runs)")
    write.add_argument("--no-write", action="store_true",
                       help=f"do not write {DOC.relative_to(REPO_ROOT)}")
    parser.add_argument("--zguide", metavar="DIR",
                        help="a zguide checkout to take the ZeroMQ guide's Python Majordomo "
                        "stack from (default $DIPS_ZGUIDE, else GitHub at a pinned commit; "
                        "--quick runs it only when given one)")
    parser.add_argument("--no-guide", action="store_true",
                        help="leave the ZeroMQ guide's Python Majordomo stack out")
    parser.add_argument("--profile", metavar="DIR", type=Path,
                        help="record py-spy profiles of broker, worker and client in DIR "
                        "during the DIPS 1/1 runs")
    parser.add_argument("--json", metavar="PATH", type=Path,
                        help="also write every figure as JSON to PATH")
    parser.add_argument("--keep-logs", action="store_true",
                        help="keep the temporary directory with every process's log")
    return parser.parse_args(argv)


def choose_sections(args: argparse.Namespace) -> list[str]:
    wanted = args.only.split(",") if args.only else list(SECTIONS)
    skipped = [s for s in args.skip.split(",") if s] + (["gearman"] if args.no_gearman else [])
    unknown = [s for s in wanted + skipped if s not in SECTIONS]
    if unknown:
        raise SystemExit(f"scripts/bench: unknown section(s) {', '.join(unknown)}; "
                         f"sections are {', '.join(SECTIONS)}")
    return [s for s in SECTIONS if s in wanted and s not in skipped]


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_sections(plan: Plan, args: argparse.Namespace, kids: Children, results: Results,
                 tmp: Path) -> None:
    """Each section in turn; a failing section is reported and the others still run."""
    steps: list[tuple[str, Callable[[], None]]] = [
        ("round trips", lambda: _roundtrips(plan, args, kids, results, tmp)),
        ("realjob", lambda: setattr(results, "realjob", realjob.run(kids, plan))),
        ("roles", lambda: results.roles.extend(rolecpu.run(
            kids, plan, _guide_files(plan, args, results, tmp)))),
        ("scale", lambda: setattr(results, "scale", scale.run(kids, plan))),
        ("failover", lambda: results.faults.extend(failover.run(kids, plan))),
        ("gateway", lambda: results.extra.extend(gateway_gearman.bench(
            200 if plan.quick else 2000, with_gearmand=not args.no_gearman))),
        ("http", lambda: results.http.extend(gateway_http.run(kids, plan))),
        ("imageserver", lambda: results.extra.extend(
            ["## Image server: DIPS beside thumbor", "", *imageserver.run(kids, plan, tmp),
             ""])),
    ]
    for name, step in steps:
        wanted = ROUNDTRIPS & set(plan.sections) if name == "round trips" else (
            name in plan.sections and (name != "failover" or plan.faults)
            and (name not in ("gateway", "imageserver") or not plan.quick or bool(args.only)))
        if not wanted:
            continue
        note(f"{name}:")
        started = time.monotonic()
        try:
            step()
        except BenchError as exc:
            results.failures.append(f"section {name} failed: {exc}")
            note(f"  FAILED: {exc}")
        except Exception as exc:  # a bug in one section must not lose the others' figures
            results.failures.append(f"section {name} failed: {exc!r}")
            note(f"  FAILED:\n{traceback.format_exc()}")
        finally:
            kids.kill_all()
        note(f"  ({time.monotonic() - started:.0f} s)")


def _roundtrips(plan: Plan, args: argparse.Namespace, kids: Children, results: Results,
                tmp: Path) -> None:
    systems: list[roundtrip.System] = []
    if "floor" in plan.sections:
        systems.append(roundtrip.Floor(kids, plan))
    if "dips" in plan.sections:
        systems.append(roundtrip.Dips(kids, plan))
        files = _guide_files(plan, args, results, tmp)
        if files is not None:
            systems.append(guide.Guide(kids, plan, files))
    if "gearman" in plan.sections:
        results.gearman = gearman.prepare(tmp, plan.gear_c)
        systems += gearman.systems(kids, plan, results.gearman)
    results.figures.extend(roundtrip.run(kids, plan, systems, args.profile))


def _guide_files(plan: Plan, args: argparse.Namespace, results: Results, tmp: Path
                 ) -> Path | None:
    """The ZeroMQ guide's files, fetched once a run (None, with a note, if they cannot be
    had or are not wanted; --quick runs them only when given a checkout)."""
    if args.no_guide or (plan.quick and not (args.zguide or os.environ.get("DIPS_ZGUIDE"))):
        return None
    into = tmp / "zguide"
    if (into / guide.FILES[-1]).exists():
        return into
    files, why = guide.fetch(into, args.zguide)
    if files is None and why not in results.notes:
        results.notes.append(why)
    return files


def write_doc(markdown: str) -> None:
    """Write the generated report, keeping the hand-written part after KEEP_MARKER."""
    kept = ""
    if DOC.exists():
        _, marker, rest = DOC.read_text().partition(KEEP_MARKER)
        kept = marker + rest if marker else ""
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(markdown.rstrip("\n") + "\n\n" + (kept or KEEP_MARKER + "\n"))
    note(f"wrote {DOC}")


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    sections = choose_sections(args)
    plan = Plan.smoke(sections) if args.quick else Plan.full(sections)
    if args.no_gearman_c:
        plan.gear_c = False
    command = shlex.join(["scripts/bench", *(sys.argv[1:] if argv is None else argv)])
    results = Results(command=command, quick=args.quick)
    tmp = Path(tempfile.mkdtemp(prefix="dips-bench-"))
    kids = Children(tmp)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started ignoring it
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    interrupted = False
    started = time.monotonic()
    try:
        run_sections(plan, args, kids, results, tmp)
    except KeyboardInterrupt:
        interrupted = True
        note("interrupted; stopping every process")
    finally:
        kids.kill_all()
    markdown = render(results)
    print(markdown)
    note(f"done in {time.monotonic() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(as_json(results), indent=1, default=str))
    complete = not interrupted and not results.failures
    if args.write or (not args.quick and not args.no_write and complete):
        write_doc(markdown)
    if complete and not args.keep_logs:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        note(f"process logs kept in {tmp}")
    return 130 if interrupted else (0 if complete else 1)
