"""The durable outbox of background jobs: SQLite in WAL mode under ``--state-dir``.

A background job is written (and committed) before its JOB_CREATED is sent, and deleted
once DIPS has answered it for good. On start the gateway runs every row that is left, so a
job accepted by a gateway that was then SIGKILLed runs after the restart. A job whose reply
came but whose delete had not been committed when the process died runs once more; see
docs/GEARMAN.md.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    service TEXT NOT NULL,
    uniq BLOB NOT NULL,
    workload BLOB NOT NULL,
    priority INTEGER NOT NULL,
    run_at REAL NOT NULL,
    created REAL NOT NULL
)
"""


@dataclass(frozen=True, slots=True)
class StoredJob:
    id: int
    service: str
    unique: bytes
    workload: bytes
    priority: int
    run_at: float


class Outbox:
    """Background jobs that were accepted and have not finished."""

    def __init__(self, state_dir: Path, *, sync: str = "FULL") -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / "gearman-outbox.sqlite3"
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if sync.upper() == 'FULL' else 'NORMAL'}")
        self._db.execute(SCHEMA)

    def add(self, service: str, unique: bytes, workload: bytes, priority: int,
            run_at: float = 0.0) -> int:
        """Store one job (committed when this returns) and give its id."""
        cursor = self._db.execute(
            "INSERT INTO jobs (service, uniq, workload, priority, run_at, created) "
            "VALUES (?, ?, ?, ?, ?, ?)", (service, unique, workload, priority, run_at, time.time()))
        return int(cursor.lastrowid or 0)

    def remove(self, job_id: int) -> None:
        self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def pending(self) -> list[StoredJob]:
        rows = self._db.execute(
            "SELECT id, service, uniq, workload, priority, run_at FROM jobs ORDER BY id")
        return [StoredJob(int(r[0]), str(r[1]), bytes(r[2]), bytes(r[3]), int(r[4]), float(r[5]))
                for r in rows]

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0])

    def close(self) -> None:
        self._db.close()
