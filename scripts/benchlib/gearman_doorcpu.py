"""The Gearman door's own CPU per job, trees alternated: ``python -m benchlib.gearman_doorcpu``.

One broker and two ecard workers (this checkout's code) stay up for the whole run; each
round starts a door from one of the ``--tree`` checkouts (its ``mdp`` and ``mdp_gearman``
come first on its path), warms it up, sends ``--jobs`` PHP-serialized ecard jobs from 4
``gear`` clients (``benchlib.gateway_gearman``'s client role) and reads the door's user +
system CPU time from /proc; then the door is stopped and the next tree's is started. Trees
alternate (A, B, A, B, ...) so that the load of the shared machine falls on both alike.

``--profile DIR`` runs each door under cProfile instead and writes DIR/ROUND.pstats (the
figures are then not comparable with a plain run's; the calls per job are).
``--callgrind DIR`` runs each door under valgrind's callgrind, counting only while the
measured jobs run: the door's user-space instructions per job (``Ir``), a figure that the
other work on a shared machine does not move (the kernel's share is not in it; ~50x
slower, so use a few hundred jobs).

Hold ``flock /tmp/dips-bench.lock`` around a run.
"""

from __future__ import annotations

import argparse
import functools
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib.gateway_gearman import _listening_port, _workers_at_least, collect, run_clients
from benchlib.procs import Child, Children, wait_for
from testkit import LOOPBACK, free_port
from testkit.procfs import CLK_TCK

_DOOR = """
import sys
sys.path.insert(0, {tree!r})
profile = {profile!r}
from mdp_gearman.server import main
if profile:
    import cProfile
    prof = cProfile.Profile()
    prof.enable()
    try:
        main(sys.argv[1:])
    finally:
        prof.disable()
        prof.dump_stats(profile)
else:
    raise SystemExit(main(sys.argv[1:]))
"""


def start_door(procs: Children, tree: str, endpoint: str, profile: str = "",
               callgrind: str = "") -> Child:
    code = _DOOR.format(tree=str(Path(tree).resolve()), profile=profile)
    wrap = (["valgrind", "--tool=callgrind", "--instr-atstart=no",
             f"--callgrind-out-file={callgrind}"] if callgrind else [])
    door = procs.spawn("mdp-gearman", [*wrap, sys.executable, "-c", code, "--listen",
                                       f"{LOOPBACK}:0", "--broker", endpoint])
    return door


def _instructions(out_file: str) -> int:
    """The ``Ir`` total of a callgrind dump (its ``totals:`` line)."""
    for line in reversed(Path(out_file).read_text().splitlines()):
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {out_file}")


def cpu_split(pid: int) -> tuple[float, float]:
    """User and system CPU time of a process, all its threads, in seconds."""
    with open(f"/proc/{pid}/stat", "rb") as stat:
        fields = stat.read().rsplit(b")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def one_round(procs: Children, tree: str, endpoint: str, jobs: int, clients: int,
              profile: str = "", callgrind: str = "") -> dict[str, float]:
    door = start_door(procs, tree, endpoint, profile, callgrind)
    try:
        port = _listening_port(door)
        collect(run_clients(procs, [port], clients, max(20, jobs // 10 // clients), 0, 10.0),
                600)  # warm up
        if callgrind:
            subprocess.run(["callgrind_control", "-i", "on", str(door.pid)], check=True,
                           capture_output=True, timeout=60)
        user0, sys0 = cpu_split(door.pid)
        result = collect(run_clients(procs, [port], clients, jobs // clients, 0, 10.0), 600)
        user1, sys1 = cpu_split(door.pid)
        if callgrind:
            subprocess.run(["callgrind_control", "-i", "off", str(door.pid)], check=True,
                           capture_output=True, timeout=60)
            door.send_signal(signal.SIGTERM)  # (callgrind writes its file as the door exits)
            door.popen.wait(120)
            result["door_instructions_per_job"] = _instructions(callgrind) / max(
                1, result["ok"])
        done = max(1, result["ok"])
        result["door_user_us_per_job"] = (user1 - user0) / done * 1e6
        result["door_sys_us_per_job"] = (sys1 - sys0) / done * 1e6
        result["door_cpu_us_per_job"] = (user1 - user0 + sys1 - sys0) / done * 1e6
        result["jobs_per_s"] = result["ok"] / max(result["elapsed_s"], 1e-9)
        if profile:
            door.send_signal(signal.SIGTERM)
            door.popen.wait(30)
        return result
    finally:
        procs.kill(door)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchlib.gearman_doorcpu",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", action="append", required=True,
                        help="a checkout whose door is measured (repeat: alternated)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per tree")
    parser.add_argument("--jobs", type=int, default=4000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--profile", type=Path, help="cProfile each door into this directory")
    parser.add_argument("--callgrind", type=Path,
                        help="count each door's instructions per job (valgrind) into this "
                        "directory")
    args = parser.parse_args()
    for directory in (args.profile, args.callgrind):
        if directory:
            directory.mkdir(parents=True, exist_ok=True)
    figures: dict[str, list[float]] = {tree: [] for tree in args.tree}
    rates: dict[str, list[float]] = {tree: [] for tree in args.tree}
    with tempfile.TemporaryDirectory(prefix="doorcpu-") as tmp:
        procs = Children(Path(tmp))
        try:
            endpoint = f"tcp://{LOOPBACK}:{free_port()}"
            procs.python("broker", "-m", "mdp.broker", "--bind", endpoint,
                         "--heartbeat-interval", "0.5")
            for _ in range(args.workers):
                procs.python("ecard-worker", "-m", "mdp.worker", "--service", "ecard",
                             "--heartbeat-interval", "0.5", "--broker", endpoint)
            wait_for(functools.partial(_workers_at_least, endpoint, args.workers), 60,
                     "ecard workers")
            for k in range(args.rounds):
                for n, tree in enumerate(args.tree):
                    profile = (str(args.profile.resolve() / f"{k}-{n}.pstats")
                               if args.profile else "")
                    callgrind = (str(args.callgrind.resolve() / f"{k}-{n}.out")
                                 if args.callgrind else "")
                    r = one_round(procs, tree, endpoint, args.jobs, args.clients, profile,
                                  callgrind)
                    figures[tree].append(r["door_cpu_us_per_job"])
                    rates[tree].append(r["jobs_per_s"])
                    print(f"round {k} {tree}: {r['door_cpu_us_per_job']:.0f} us/job "
                          f"(user {r['door_user_us_per_job']:.0f}, system "
                          f"{r['door_sys_us_per_job']:.0f}), "
                          f"{r['jobs_per_s']:.0f} jobs/s, ok {r['ok']:.0f} failed "
                          f"{r['failed']:.0f} wrong {r['wrong']:.0f}"
                          + (f", {r['door_instructions_per_job']:,.0f} instructions/job"
                             if callgrind else ""), flush=True)
                    time.sleep(0.5)
        finally:
            procs.kill_all()
    for tree in args.tree:
        print(f"{tree}: median {statistics.median(figures[tree]):.0f} us/job "
              f"({', '.join(f'{x:.0f}' for x in figures[tree])}); "
              f"median {statistics.median(rates[tree]):.0f} jobs/s")
    print(json.dumps({"us_per_job": figures, "jobs_per_s": rates}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
