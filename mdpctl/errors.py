"""Errors of mdpctl, each with the exit code the command line reports it with.

Every class derives from :class:`mdp.errors.MDPError`, so callers that catch the
DIPS hierarchy catch these too.  The CLI prints ``mdpctl: <message>`` and exits
with :attr:`CtlError.exit_code`.
"""

from __future__ import annotations

from pathlib import Path

from mdp.errors import ConfigError, MDPError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_TIMEOUT = 4
EXIT_ROLLOUT_STOPPED = 5
EXIT_UNRESPONSIVE = 6
EXIT_INTERRUPTED = 130


class CtlError(MDPError):
    """An mdpctl operation failed; the message says what and why."""

    exit_code = EXIT_FAILED


class ClusterFileError(CtlError, ConfigError):
    """The cluster file is missing, unreadable or has a wrong value."""

    exit_code = EXIT_USAGE


class UsageError(CtlError, ConfigError):
    """The command line asks for something that cannot be done as asked."""

    exit_code = EXIT_USAGE


class Unreachable(CtlError):
    """A supervisord or a broker did not answer."""

    exit_code = EXIT_UNREACHABLE


class NotRunning(Unreachable):
    """The local cluster is not running."""


class Unresponsive(Unreachable):
    """A supervisord runs but does not answer: stopped (SIGSTOP) or overloaded."""

    exit_code = EXIT_UNRESPONSIVE

    def __init__(self, message: str, pid: int, run_dir: Path) -> None:
        super().__init__(message)
        self.pid = pid
        self.run_dir = run_dir


class AuthError(Unreachable):
    """A supervisord refused the credentials."""


class SupervisorFault(CtlError):
    """A supervisord answered an XML-RPC call with a fault."""

    def __init__(self, message: str, fault_code: int = 0) -> None:
        super().__init__(message)
        self.fault_code = fault_code


class WaitTimeout(CtlError):
    """Something did not happen before its deadline."""

    exit_code = EXIT_TIMEOUT


class ProcessFailed(CtlError):
    """A process that was started did not come up."""


class RolloutStopped(CtlError):
    """A rolling reload stopped before every worker ran the new code."""

    exit_code = EXIT_ROLLOUT_STOPPED
