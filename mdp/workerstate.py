"""What a worker core keeps: its timers, its broker links, the tasks it holds, its phase.

Plain records and enums with no rules of their own: every decision that changes them is
:class:`mdp.workercore.WorkerCore`'s. They are apart from it so that the core's module holds
its rules only, and so that the shells, the config (which takes a :class:`Timing`) and the
Gearman door's proxies name them where they live.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

from mdp.clock import Backoff
from mdp.protocol import DEFAULT_LINK_FLOOR


class LinkMode(enum.Enum):
    CLOSED = "closed"  # no socket; reconnect at retry_at
    STANDARD = "standard"  # READY sent, no WELCOME (yet): plain 7/MDP
    DIPS = "dips"  # the broker sent WELCOME: the extensions are on


class Phase(enum.Enum):
    SERVING = "serving"
    DRAINING = "draining"  # takes nothing new; finishes what it holds
    DONE = "done"  # every link told DISCONNECT; the shell exits with exit_code


@dataclass(frozen=True)
class Timing:
    """The worker's timers, in seconds, and the link floor (bytes per second) that stretches
    them while a big task the broker announced may still be on its way."""

    heartbeat_interval_s: float = 1.0
    heartbeat_liveness: int = 3
    reconnect_initial_s: float = 0.1
    reconnect_max_s: float = 5.0
    time_limit_s: float = 30.0
    busy_after_s: float = 0.005
    drain_linger_ms: int = 2000
    reply_gather_s: float = 0.002  # how long finished replies may wait to share a REPLIES
    link_floor: int = DEFAULT_LINK_FLOOR  # the slowest link a big task is allowed

    @property
    def expiry_s(self) -> float:
        return self.heartbeat_interval_s * self.heartbeat_liveness


@dataclass(slots=True)
class Task:
    """A task from one broker; ``epoch`` is its link's connection count when it came."""

    link: int
    epoch: int
    key: bytes
    body: list[bytes]
    deadline: float | None
    hold: bool
    dips: bool
    started_at: float = 0.0
    passed_over: float = math.inf  # when a task behind it first started before it
    ck: bytes | None = None  # its request's coalescing key (a Gearman job's unique id)


@dataclass(slots=True)
class Link:
    """What the core knows of one broker connection."""

    endpoint: str
    backoff: Backoff
    mode: LinkMode = LinkMode.CLOSED
    epoch: int = 0  # connections made so far; tasks of an older one are void
    told_busy: bool = False  # we sent BUSY (or an unasked BOUNCE) and owe a FREE
    batch: bool = False  # its WELCOME offered TASKS and REPLIES
    progress: bool = False  # its WELCOME offered to relay PROGRESS
    announce: bool = False  # its WELCOME takes a HEARTBEAT announcing a big reply
    gathered_keys: list[bytes] = field(default_factory=list)  # replies not yet sent
    gathered_bodies: list[bytes] = field(default_factory=list)
    gathered_bytes: int = 0
    gathered_since: float = 0.0
    heard_at: float = 0.0
    # when the big task the broker announced may have arrived (protocol.sent_until at
    # Timing.link_floor): the broker is not silent before then plus the expiry, as its
    # heartbeats wait behind it; 0 once the task has come (it follows its announcement)
    task_until: float = 0.0
    sent_at: float = 0.0
    retry_at: float = 0.0

    def take_gathered(self) -> tuple[list[bytes], list[bytes]]:
        """The replies gathered so far (keys, bodies), and none left gathered."""
        keys, bodies = self.gathered_keys, self.gathered_bodies
        self.gathered_keys, self.gathered_bodies, self.gathered_bytes = [], [], 0
        return keys, bodies
