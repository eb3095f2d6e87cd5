"""What every command gets: where the local cluster lives, which cluster to act on, output."""

from __future__ import annotations

import os
import sys
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from mdpctl import daemon, leftovers, locate
from mdpctl.cluster import CLUSTER_FILE_NAME, Cluster, load_cluster, local_cluster
from mdpctl.errors import NotRunning, UsageError
from mdpctl.lock import exclusive, lock_path

RUN_DIR_ENV = locate.RUN_DIR_ENV
CLUSTER_ENV = "DIPS_CLUSTER"


@dataclass
class Context:
    """The global options, resolved.

    ``named_run_dir`` is the run directory given with --run-dir or $DIPS_RUN_DIR; without
    one, :attr:`run_dir` is the running cluster that :func:`locate.find_cluster` finds, or
    the per-user default where ``up`` starts one.
    """

    named_run_dir: Path | None = None
    cluster_file: Path | None = None
    out: TextIO = field(default_factory=lambda: sys.stdout)
    from_flag: bool = False  # the run directory was named with --run-dir
    _search: locate.Search | None = None

    @classmethod
    def from_options(
        cls, run_dir: str | None, cluster_file: str | None, out: TextIO | None = None
    ) -> Context:
        named = run_dir or os.environ.get(RUN_DIR_ENV) or None
        chosen = cluster_file or os.environ.get(CLUSTER_ENV) or None
        return cls(
            Path(named).absolute() if named else None,
            Path(chosen) if chosen else None,
            out or sys.stdout,
            from_flag=bool(run_dir),
        )

    def search(self, again: bool = False) -> locate.Search:
        """Where a running local cluster was looked for, and found (once per command,
        unless asked ``again``: after taking the lock, say)."""
        if self._search is None or again:
            if self.named_run_dir is not None:
                found = self.named_run_dir if locate.supervisord_answers(
                    self.named_run_dir) else None
                self._search = locate.Search(found, [self.named_run_dir], how="named")
            else:
                self._search = locate.find_cluster()
        return self._search

    @property
    def run_dir(self) -> Path:
        """The named run directory; else the running cluster's; else the per-user default."""
        if self.named_run_dir is not None:
            return self.named_run_dir
        return self.search().run_dir or locate.default_run_dir()

    def run_dir_source(self) -> str:
        """Where the run directory comes from, as a message names it."""
        if self.named_run_dir is None:
            return "the run directory"
        return "--run-dir" if self.from_flag else f"${RUN_DIR_ENV}"

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

    def require_running(self) -> None:
        """For commands that act on the local cluster's supervisord: fail in one line
        when none runs, saying where mdpctl looked and what answers on the ports, or when
        it runs but does not answer (:class:`~mdpctl.errors.Unresponsive`)."""
        if not self.is_local:
            return
        search = self.search()
        if search.run_dir is not None:
            daemon.check_answers(search.run_dir)  # stopped or overloaded: said at once
            return
        for run_dir in dict.fromkeys(search.looked_in):
            daemon.check_answers(run_dir)  # runs, but its socket did not even connect
        orphaned = leftovers.find_in(search.looked_in)
        if orphaned is not None:
            run_dir, found = orphaned
            raise NotRunning(
                f"the supervisord of the cluster in {run_dir} is gone and {len(found)} of its "
                f"processes run on without it; `mdpctl --run-dir {run_dir} down` stops them"
            )
        if self.named_run_dir is not None:
            locate.describe_ports(search, self.cluster().brokers)
            raise NotRunning(
                f"no cluster is running in {self.named_run_dir} ({'; '.join(search.on_ports)})"
            )
        raise NotRunning(search.not_found())

    def require_local(self, command: str) -> None:
        if not self.is_local:
            raise UsageError(
                f"`mdpctl {command}` manages the local cluster only; the supervisord of a "
                "remote host is started by that host's init system"
            )

    def exclusive(self, what: str, doing: str | None = None) -> AbstractContextManager[None]:
        """The lock that keeps two fleet-changing commands apart (``doing``: what the
        refusal of the next one says this one does)."""
        return exclusive(lock_path(self.run_dir, self.cluster_file), what, doing)

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()
