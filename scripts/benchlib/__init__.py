"""The DIPS benchmark suite behind ``scripts/bench``.

Modules, by role:

* ``cli``: the command line; ``plan``: what a full or ``--quick`` run measures.
* ``procs``: child processes (spawn, line protocol, kill every one at the end) and /proc.
* ``roles``: what the children run (``python -m benchlib.roles ROLE ...``): raw pyzmq echo
  servers, load clients for every system, thread-hosted workers, a request flood.
* ``cluster``: DIPS brokers and workers as processes, and ``mmi.status``.
* ``stats``: figures, percentiles, timed windows and CPU tallies.
* ``roundtrip``: the floor, DIPS and gearmand round trips, interleaved.
* ``gearman`` and ``gearman_c``: installing, starting and driving gearmand (Python ``gear``
  and a C client and worker built with gcc).
* ``realjob`` (children in ``cards``): matrix cards through two brokers beside rendering
  in-process, and each process's CPU per card.
* ``rolecpu``: CPU per echo request by role (client, brokers, worker) beside the raw floor.
* ``scale``: throughput with 1 to 1,000 workers, idle cost, memory, dispatch cost.
* ``failover``: extra latency when a broker dies or hangs and when a worker dies.
* ``spy``: ``--profile``, py-spy on the broker, a worker and a client.
* ``report``: the Markdown report, its Targets table and ``docs/BENCHMARKS.md``
  (``markdown``: the table helpers every section uses).
"""
