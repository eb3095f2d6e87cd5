"""The DIPS benchmark suite behind ``scripts/bench``.

Modules, by role:

* ``procs``: child processes (spawn, line protocol, kill every one at the end) and /proc.
* ``roles``: what the children run (``python -m benchlib.roles ROLE ...``): raw pyzmq echo
  servers, load clients for every system, thread-hosted workers, a request flood.
* ``roundtrip``: the floor, DIPS and gearmand round-trip comparisons.
* ``gearman``: installing, starting and driving gearmand (Python ``gear`` and C clients).
* ``scale``: throughput with 1 to 1,000 workers, idle cost, memory, dispatch cost.
* ``failover``: extra latency when a broker dies or hangs and when a worker dies.
* ``report``: the Markdown tables and ``docs/BENCHMARKS.md``.
* ``cli``: the command line.
"""
