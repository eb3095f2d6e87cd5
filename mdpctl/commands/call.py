"""Send one request to a service and print the reply; an image reply goes to a file.

usage: mdpctl call SERVICE [--json '{...}' | --json @FILE | --json -] [-o FILE]
                   [--timeout S] [--retries N] [--broker ENDPOINT ...]

The request is a JSON object (a map); it travels as msgpack.  A reply that is bytes (an
image) is written to -o FILE, or to standard output when that is not a terminal; any
other reply is printed as JSON.  An error reply prints its code, message and field and
exits 1; no reply exits 4.

examples:
  mdpctl call echo --json '{"hello": "world"}'
  mdpctl call ecard --json '{"pSN": "1234567890", "pData": "12,34,..."}' -o card.png
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path
from typing import Any

from mdp.errors import RequestError, Timeout
from mdpctl.bounded import call_bounded, check_listening
from mdpctl.context import Context
from mdpctl.errors import CtlError, Unreachable, UsageError, WaitTimeout

_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG image"),
    (b"\xff\xd8\xff", "JPEG image"),
    (b"GIF8", "GIF image"),
    (b"RIFF", "RIFF (WebP) image"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("service", help="service name, e.g. echo or ecard")
    parser.add_argument(
        "--json",
        default="{}",
        metavar="JSON",
        help="the request: a JSON object, @FILE to read it from a file, - for stdin",
    )
    parser.add_argument("-o", "--output", metavar="FILE", help="write the reply to FILE")
    parser.add_argument(
        "--timeout", type=float, default=10.0, metavar="SECONDS", help="per try (default 10)"
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=3,
        metavar="N",
        help="tries after the first, failing over between brokers (default 3)",
    )
    parser.add_argument(
        "--broker",
        action="append",
        metavar="ENDPOINT",
        help="brokers to use (default: the cluster's)",
    )


def load_request(text: str) -> dict[str, Any]:
    """The request map from --json's argument."""
    if text == "-":
        text = sys.stdin.read()
    elif text.startswith("@"):
        try:
            text = Path(text[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--json {text}: {exc.strerror}") from exc
    try:
        request = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"--json is not valid JSON: {exc}") from exc
    if not isinstance(request, dict):
        raise UsageError("--json must be a JSON object (a map of fields)")
    return request


def describe_bytes(data: bytes) -> str:
    kind = next((name for magic, name in _MAGIC if data.startswith(magic)), "binary data")
    return f"{len(data)} bytes of {kind}"


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return {"base64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def run(args: argparse.Namespace, ctx: Context) -> int:
    from mdp.client import MDPClient

    request = load_request(args.json)
    cluster = ctx.cluster()
    brokers = list(args.broker or cluster.brokers)
    _check_some_broker(brokers)

    def send() -> Any:
        with MDPClient(brokers, timeout=args.timeout, retries=args.retries,
                       curve=cluster.curve) as client:
            return client.send(args.service, request)

    limit_s = args.timeout * (args.retries + 1) + 2.0
    try:
        reply = call_bounded(send, limit_s, f"the call to {args.service}")
    except RequestError as exc:
        raise CtlError(f"{args.service} answered with an error: {exc}") from exc
    except (Timeout, WaitTimeout) as exc:
        tries = args.retries + 1
        raise WaitTimeout(
            f"no reply from {args.service} after {tries} tries of {args.timeout:g} s at "
            f"{', '.join(brokers)}; `mdpctl status` shows whether its workers run"
        ) from exc
    _write_reply(reply, args.output, ctx)
    return 0


def _check_some_broker(brokers: list[str]) -> None:
    """Fail at once, naming them, when no broker accepts connections."""
    reasons = []
    for endpoint in brokers:
        try:
            check_listening(endpoint, 1.0)
            return
        except Unreachable as exc:
            reasons.append(str(exc))
    raise Unreachable("no broker is reachable: " + "; ".join(reasons))


def _write_reply(reply: Any, output: str | None, ctx: Context) -> None:
    if isinstance(reply, bytes | bytearray):
        data = bytes(reply)
        if output:
            Path(output).write_bytes(data)
            ctx.say(f"wrote {describe_bytes(data)} to {output}")
        elif sys.stdout.isatty():
            raise UsageError(
                f"the reply is {describe_bytes(data)}; write it to a file with -o FILE"
            )
        else:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        return
    text = json.dumps(_jsonable(reply), indent=2, sort_keys=True, ensure_ascii=False)
    if output:
        Path(output).write_text(text + "\n", encoding="utf-8")
        ctx.say(f"wrote the reply ({len(text)} characters of JSON) to {output}")
    else:
        ctx.say(text)
