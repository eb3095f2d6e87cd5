"""What every command gets: where the local cluster lives, which cluster to act on, output."""

from __future__ import annotations

import os
import sys
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from mdpctl.cluster import CLUSTER_FILE_NAME, Cluster, load_cluster, local_cluster
from mdpctl.errors import UsageError
from mdpctl.lock import exclusive, lock_path

DEFAULT_RUN_DIR = "run"
RUN_DIR_ENV = "DIPS_RUN_DIR"
CLUSTER_ENV = "DIPS_CLUSTER"


@dataclass
class Context:
    """The global options, resolved."""

    run_dir: Path
    cluster_file: Path | None = None
    out: TextIO = field(default_factory=lambda: sys.stdout)

    @classmethod
    def from_options(
        cls, run_dir: str | None, cluster_file: str | None, out: TextIO | None = None
    ) -> Context:
        run = Path(run_dir or os.environ.get(RUN_DIR_ENV) or DEFAULT_RUN_DIR).absolute()
        chosen = cluster_file or os.environ.get(CLUSTER_ENV) or None
        return cls(run, Path(chosen) if chosen else None, out or sys.stdout)

    @property
    def is_local(self) -> bool:
        """True when acting on the local cluster of the run directory."""
        return self.cluster_file is None

    def cluster(self) -> Cluster:
        """The cluster file's cluster; else the one ``mdpctl up`` left in the run directory."""
        if self.cluster_file is not None:
            return load_cluster(self.cluster_file)
        written = self.run_dir / CLUSTER_FILE_NAME
        if written.exists():
            return load_cluster(written)
        return local_cluster(self.run_dir)

    def require_local(self, command: str) -> None:
        if not self.is_local:
            raise UsageError(
                f"`mdpctl {command}` manages the local cluster only; the supervisord of a "
                "remote host is started by that host's init system"
            )

    def exclusive(self, what: str) -> AbstractContextManager[None]:
        """The lock that keeps two fleet-changing commands apart."""
        return exclusive(lock_path(self.run_dir, self.cluster_file), what)

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()
