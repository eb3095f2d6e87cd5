"""mdpctl: start, watch, call, scale and reload a DIPS fleet.

Without --cluster, mdpctl works on the local cluster that `mdpctl up` starts in its run
directory: --run-dir, else $DIPS_RUN_DIR, else ~/.local/state/dips/run ($XDG_STATE_HOME/dips/run),
the same wherever mdpctl is run from.  Without a run directory named, the other commands
also find a cluster started elsewhere by `up` (the run directory it used last); one whose
broker merely holds a default port may be anyone's, and is named, not used.  With a
cluster file mdpctl works on the brokers and hosts that file lists.

exit status: 0 done, 1 failed, 2 usage or configuration error, 3 a supervisord or broker
did not answer, 4 timed out, 5 a rollout stopped, 6 the local cluster's supervisord runs but
does not answer (stopped, or overloaded), 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from mdp.errors import ConfigError, MDPError, RequestError, Timeout
from mdp.logs import LOG_FORMAT
from mdpctl import commands
from mdpctl.context import CLUSTER_ENV, RUN_DIR_ENV, Context
from mdpctl.errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    CtlError,
)
from mdpctl.locate import default_run_dir

log = logging.getLogger("mdpctl")


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line, like every other mdpctl error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    doc = __doc__ or ""
    parser = _Parser(
        prog="mdpctl",
        description=doc.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--cluster", metavar="FILE", help=f"cluster file (TOML); default ${CLUSTER_ENV}"
    )
    parser.add_argument(
        "--run-dir",
        metavar="DIR",
        help=f"run directory of the local cluster (default: ${RUN_DIR_ENV}, else "
        f"{_home_relative(default_run_dir())}, else where the running cluster is)",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log more (-vv: debug; default: warnings only)")
    parser.add_argument("--version", action=_VersionAction,
                        help="print mdpctl's version and the code version of its tree")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in commands.COMMANDS:
        module = commands.load(name)
        summary, usage, description = split_doc(module.__doc__ or name)
        cmd = sub.add_parser(
            name,
            help=summary,
            usage=usage,
            description=f"{summary}\n\n{description}" if description else summary,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(cmd)
        cmd.set_defaults(handler=module.run)
    return parser


def _home_relative(path: Path) -> str:
    try:
        return "~/" + str(path.relative_to(Path.home()))
    except ValueError:
        return str(path)


class _VersionAction(argparse.Action):
    """--version, computed only when asked for (the code version hashes the tree)."""

    def __init__(self, option_strings: Sequence[str], dest: str, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *_args: object) -> None:
        from mdp.version import code_version, package_version

        sys.stdout.write(f"mdpctl {package_version()} (code version {code_version()})\n")
        parser.exit(0)


def split_doc(doc: str) -> tuple[str, str | None, str]:
    """A command docstring's summary line, its ``usage:`` block and the rest."""
    blocks = doc.strip().split("\n\n")
    summary = blocks.pop(0).strip()
    usage = None
    if blocks and blocks[0].startswith("usage: "):
        usage = blocks.pop(0).removeprefix("usage: ")
    return summary, usage, "\n\n".join(blocks)


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse; a command with ``intermixed`` set takes positionals given after its options.

    argparse alone fills a ``nargs="*"`` positional only from the words before the first
    option (``batch thumbnail --width 256 photos/`` would leave ``photos/`` over).
    """
    args, extra = parser.parse_known_args(argv)
    target = getattr(args, "intermixed", None)
    if extra and target and not any(word.startswith("-") for word in extra):
        setattr(args, target, [*getattr(args, target), *extra])
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, format=LOG_FORMAT)


def _fail(message: str, code: int) -> int:
    sys.stderr.write(f"mdpctl: {message}\n")
    sys.stderr.flush()
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run one mdpctl command; return its exit status."""
    parser = build_parser()
    try:
        args = parse(parser, argv)
    except SystemExit as exc:  # --help, or a usage error argparse already reported
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    _configure_logging(args.verbose)
    try:
        ctx = Context.from_options(args.run_dir, args.cluster)
        result: int = args.handler(args, ctx)
        return result
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_INTERRUPTED)
    except CtlError as exc:
        return _fail(str(exc), exc.exit_code)
    except ConfigError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except Timeout as exc:
        return _fail(str(exc), EXIT_TIMEOUT)
    except RequestError as exc:
        return _fail(str(exc), EXIT_FAILED)
    except MDPError as exc:
        return _fail(f"{type(exc).__name__}: {exc}", EXIT_FAILED)
    except OSError as exc:  # a file the user named (-o, --file...) cannot be read or written
        return _fail(describe_os_error(exc), EXIT_FAILED)


def describe_os_error(exc: OSError) -> str:
    """``cannot open /x/y.jpg: No such file or directory``, not a traceback."""
    reason = exc.strerror or str(exc)
    names = [str(name) for name in (exc.filename, exc.filename2) if name is not None]
    return f"{reason}: {' -> '.join(names)}" if names else reason


if __name__ == "__main__":
    sys.exit(main())
