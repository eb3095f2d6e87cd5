"""Running a batch: send every pending job, retry faults, write outputs, count the outcome.

Which errors are worth another try is decided here (:func:`is_fault`): a request that
failed for a fault of the platform (no reply in time, an overloaded queue, an expired
deadline, an internal error) is sent again, up to ``retries`` times with a growing delay;
a bad request or a failing handler would fail the same way again and is not.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mdp.errors import MDPError, RequestError, Timeout
from mdp.keys import CurveConfig
from mdpctl import batchjobs
from mdpctl.batchjobs import Job
from mdpctl.errors import CtlError
from mdpctl.pipeline import Feed, Pipeline

log = logging.getLogger(__name__)

FAULT_CODES = frozenset({"timeout", "overloaded", "expired", "internal"})
RETRY_BASE_S = 0.2
RETRY_MAX_S = 5.0


def error_code(exc: BaseException) -> str:
    if isinstance(exc, Timeout):
        return "timeout"
    if isinstance(exc, RequestError):
        return str(exc.code)
    return "error"


def is_fault(exc: BaseException) -> bool:
    """True when the same request may well succeed if sent again."""
    return error_code(exc) in FAULT_CODES


def retry_delay_s(attempt: int) -> float:
    """Seconds to wait before attempt ``attempt + 1`` (attempt counts from 1)."""
    return float(min(RETRY_MAX_S, RETRY_BASE_S * 2 ** (attempt - 1)))


@dataclass
class Summary:
    """What a run did; ``lines()`` is what the command prints at the end."""

    service: str
    total: int
    done: int = 0
    skipped: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    retried: int = 0
    elapsed_s: float = 0.0
    failures_path: Path | None = None
    interrupted: bool = False

    @property
    def failed_count(self) -> int:
        return sum(self.failed.values())

    @property
    def ok(self) -> bool:
        return not self.interrupted and not self.failed

    @property
    def left(self) -> int:
        return self.total - self.done - self.skipped - self.failed_count

    def lines(self) -> list[str]:
        rate = self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0
        head = "interrupted" if self.interrupted else "finished"
        lines = [
            f"batch {self.service} {head}: {self.total} input(s): {self.done} done, "
            f"{self.skipped} skipped (already done), {self.failed_count} failed"
            + (f", {self.left} not done" if self.interrupted else "")
            + f" in {self.elapsed_s:.1f} s ({rate:.0f}/s)"
            + (f"; {self.retried} retried after a fault" if self.retried else "")
        ]
        if self.failed:
            codes = ", ".join(f"{code} {n}" for code, n in sorted(self.failed.items()))
            lines.append(f"failed by error code: {codes}; the list is in {self.failures_path}")
        if self.interrupted:
            lines.append("run the same command again to do the rest (finished outputs are kept)")
        return lines


@dataclass
class BatchRun:
    """One ``mdpctl batch`` run over ``jobs`` into ``out_dir``."""

    service: str
    jobs: list[Job]
    out_dir: Path
    fields: dict[str, Any]
    brokers: tuple[str, ...]
    failures_path: Path
    window: int = 64
    timeout_s: float = 30.0
    retries: int = 3
    curve: CurveConfig | None = None
    progress: bool = True
    redo: bool = False  # make every output again, done or not
    say: Callable[[str], None] = print
    _attempts: dict[str, int] = field(default_factory=dict)
    _failures: list[dict[str, Any]] = field(default_factory=list)

    def run(self) -> Summary:
        started = time.monotonic()
        summary = Summary(self.service, len(self.jobs), failures_path=self.failures_path)
        if batchjobs.remove_partial(self.out_dir):
            log.info("removed partial outputs of an interrupted run")
        done = {} if self.redo else batchjobs.done_keys(self.out_dir)
        todo = list(batchjobs.pending(self.jobs, done))
        summary.skipped = len(self.jobs) - len(todo)
        changed = sum(1 for job in todo if job.key in done)
        if summary.skipped or changed:
            self.say(f"{summary.skipped} of {len(self.jobs)} already done in {self.out_dir}"
                     + (f"; {changed} made again (their input changed since)" if changed
                        else ""))
        bar = _progress_bar(len(todo), self.service, self.progress)
        try:
            self._send_all(todo, summary, bar)
        except KeyboardInterrupt:
            summary.interrupted = True
        finally:
            bar.close()
            summary.elapsed_s = time.monotonic() - started
            self._write_failures()
        return summary

    def _send_all(self, todo: list[Job], summary: Summary, bar: Any) -> None:
        feed: Feed[Job] = Feed(todo)
        pipeline: Pipeline[Job] = Pipeline(
            self.brokers,
            self.service,
            lambda job: batchjobs.request_for(job, self.fields),
            window=self.window,
            timeout_s=self.timeout_s,
            curve=self.curve,
        )
        outcomes = pipeline.run(feed)
        try:
            for job, outcome in outcomes:
                retry_at = self._settle(job, outcome, summary)
                feed.settle(job, retry_at)
                if retry_at is None:
                    bar.update(1)
                    if summary.failed:
                        bar.set_postfix_str(f"failed {summary.failed_count}", refresh=False)
        finally:
            outcomes.close()

    def _settle(self, job: Job, outcome: Any, summary: Summary) -> float | None:
        """Write the output or record the failure; return when to retry, if at all."""
        attempts = self._attempts.get(job.key, 0) + 1
        self._attempts[job.key] = attempts
        if not isinstance(outcome, BaseException):
            data, suffix = batchjobs.encode_output(outcome)
            try:
                batchjobs.write_atomically(self.out_dir, job.key, data, suffix)
            except OSError as exc:
                raise CtlError(f"cannot write the output of {job.source}: {exc}") from exc
            summary.done += 1
            return None
        if is_fault(outcome) and attempts <= self.retries:
            summary.retried += 1
            log.info("%s: %s; trying again (attempt %d)", job.source, outcome, attempts + 1)
            return time.monotonic() + retry_delay_s(attempts)
        code = error_code(outcome)
        summary.failed[code] += 1
        self._failures.append(_failure_record(job, outcome, code, attempts))
        return None

    def _write_failures(self) -> None:
        path = self.failures_path
        if not self._failures:
            path.unlink(missing_ok=True)  # a list left by an earlier run is out of date
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in self._failures)
        tmp = path.with_name(f".{path.name}{batchjobs.TMP_MARK}")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)


def _failure_record(job: Job, exc: BaseException, code: str, attempts: int) -> dict[str, Any]:
    record: dict[str, Any] = {
        "input": job.source,
        "output": job.key,
        "code": code,
        "message": exc.message if isinstance(exc, RequestError) else str(exc),
        "attempts": attempts,
    }
    if isinstance(exc, RequestError) and exc.field:
        record["field"] = exc.field
    if not isinstance(exc, MDPError):
        record["message"] = f"{type(exc).__name__}: {exc}"
    return record


def _progress_bar(total: int, service: str, enabled: bool) -> Any:
    """tqdm's bar on stderr (rate and time left); off when stderr is not a terminal."""
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=service,
        unit="req",
        file=sys.stderr,
        disable=None if enabled else True,
        dynamic_ncols=True,
        mininterval=0.2,
        smoothing=0.1,
    )
