"""What a run measures and for how long: the full suite, or the ``--quick`` smoke subset."""

from __future__ import annotations

from dataclasses import dataclass, field

from benchlib.stats import PIPE, SYNC, Shape

SECTIONS = ("floor", "dips", "gearman", "realjob", "roles", "scale", "failover", "gateway",
            "http", "imageserver")
FAULTS = ("broker-kill", "broker-stop", "worker-kill", "worker-stop")
SMALL = 5
LARGE = 60_000  # a matrix card image is about this size


@dataclass
class Plan:
    quick: bool
    sections: list[str]
    reps: int = 3
    duration_s: float = 1.0
    warmup_s: float = 0.3
    sizes: list[int] = field(default_factory=lambda: [SMALL, LARGE])
    shapes: list[Shape] = field(default_factory=lambda: [Shape(1, 1), Shape(4, 2)])
    modes: list[str] = field(default_factory=lambda: [SYNC, PIPE])
    window: int = 64  # pipelined requests in flight per client
    gear_c: bool = True
    realjob_processes: int = 2  # in-process renderers; DIPS workers and clients alike
    realjob_reps: int = 3
    realjob_duration_s: float = 2.0
    realjob_batch: int = 256  # cards per send_many call
    realjob_distinct: int = 1024  # distinct requests each process cycles through
    roles_shapes: list[tuple[str, Shape]] = field(
        default_factory=lambda: [(PIPE, Shape(1, 2)), (SYNC, Shape(1, 1))])
    roles_reps: int = 3
    roles_duration_s: float = 2.0
    scale_workers: list[int] = field(default_factory=lambda: [1, 8, 64, 256, 1000])
    scale_sleep_s: float = 0.02
    scale_reps: int = 3
    scale_duration_s: float = 1.5
    idle_window_s: float = 5.0
    flood: int = 100_000
    dispatch_workers: list[int] = field(default_factory=lambda: [1, 8, 64, 256, 1000])
    dispatch_queues: list[int] = field(default_factory=lambda: [0, 1_000, 100_000])
    dispatch_iterations: int = 20_000
    faults: list[str] = field(default_factory=lambda: list(FAULTS))
    fault_clients: int = 4
    fault_workers: int = 4
    fault_sleep_s: float = 0.01
    fault_before_s: float = 1.5
    fault_after_s: float = 4.0
    hang_s: float = 3.0

    @classmethod
    def full(cls, sections: list[str]) -> Plan:
        return cls(quick=False, sections=sections)

    @classmethod
    def smoke(cls, sections: list[str]) -> Plan:
        """A small subset that finishes in well under a minute."""
        return cls(
            quick=True, sections=sections, reps=1, duration_s=0.3, warmup_s=0.1,
            sizes=[SMALL], shapes=[Shape(1, 1)], gear_c=False,
            scale_workers=[1, 8], scale_reps=1, scale_duration_s=0.5, idle_window_s=0.3,
            flood=2_000, dispatch_workers=[1, 64], dispatch_queues=[0, 1_000],
            dispatch_iterations=2_000, faults=[],
            realjob_reps=1, realjob_duration_s=0.3, realjob_batch=16, realjob_distinct=64,
            roles_reps=1, roles_duration_s=0.3,
        )
