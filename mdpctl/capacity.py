"""How many worker processes the local cluster may start on this machine.

A worker renders on one core at a time: past a few per core, more only wait for a CPU and
take memory, and starting hundreds at once keeps supervisord too busy to answer (``up
--workers 500`` on 2 cores asked for 4,500 processes; supervisord then answered nothing,
and ignored SIGTERM, for minutes).  So ``up`` refuses more than :data:`PER_CORE` worker
processes per core it may use (and :data:`AT_LEAST` on any machine), before anything
starts, unless ``--max-workers`` says how many the user means.  Cores are those this
process may run on (its CPU affinity: a container or ``taskset`` gives fewer than the
machine has).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from mdpctl.errors import UsageError
from mdpctl.hostconf import WorkerPool

PER_CORE = 16  # the default, 1 per core and service, fits with up to 16 services
AT_LEAST = 64  # whatever the cores: the docs' examples (--workers 2, 9 services) on one core


def usable_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def check_workers(pools: Sequence[WorkerPool], max_workers: int | None) -> None:
    """Refuse, in one line naming the total, the cores and the limit, more worker processes
    than the limit (``max_workers``, else :data:`PER_CORE` per usable core)."""
    total = sum(pool.workers for pool in pools)
    cores = usable_cores()
    limit = max_workers if max_workers is not None else max(PER_CORE * cores, AT_LEAST)
    if total <= limit:
        return
    counts = {pool.workers for pool in pools}
    how = f" ({len(pools)} services x {counts.pop()})" if len(counts) == 1 else ""
    bound = (f"--max-workers {limit}" if max_workers is not None
             else f"the limit of {limit} ({PER_CORE} per core, {AT_LEAST} at least)")
    raise UsageError(
        f"{total} worker processes asked for{how} on {cores} core(s), more than {bound}: "
        f"ask for fewer (--workers N, --service NAME=N), or give --max-workers {total} "
        "if you mean it"
    )
