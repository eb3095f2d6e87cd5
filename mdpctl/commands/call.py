"""Send one request to a service and print the reply; an image reply goes to a file.

usage: mdpctl call SERVICE [--json '{...}' | --json @FILE | --json -] [--file FIELD=PATH ...]
                   [--set FIELD=VALUE ...] [-o FILE] [--timeout S] [--retries N]
                   [--broker ENDPOINT ...]
       mdpctl call --list

The request is a map: the JSON object of --json, with --set and --file fields added
(they win over --json's).  Images and other bytes come from files: --file image=photo.jpg,
or a string that starts with @ anywhere in --json or --set ("@photo.jpg"; "@@" stands for
a literal "@").  It travels as msgpack.

A reply that is bytes (an image) is written to -o FILE, or to standard output when that
is not a terminal; a map whose one bytes field is an image (say {"image": ..., "width":
...}) writes that field to -o FILE and prints the rest.  Any other reply is printed as
JSON (bytes as {"base64": ...}).  mmi.status is printed as JSON; mmi.service takes
{"service": NAME} and prints 200 (offered), 404 or 501.  An error reply prints its code,
message and field and exits 1; no reply exits 4.  --list (or `mdpctl services`) lists the
services the fleet offers and their fields.

examples:
  mdpctl call echo --json '{"hello": "world"}'
  mdpctl call thumbnail --file image=photo.jpg --set width=256 -o thumb.jpg
  mdpctl call watermark --json '{"image": "@photo.jpg", "text": "(c) DIPS"}' -o marked.jpg
  mdpctl call mmi.status
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path
from typing import Any

from mdp.errors import BadRequest, RequestError, Timeout
from mdpctl import numbers
from mdpctl.bounded import call_bounded, check_listening
from mdpctl.commands import services as services_command
from mdpctl.context import Context
from mdpctl.endpoints import endpoint_arg
from mdpctl.errors import CtlError, Unreachable, UsageError, WaitTimeout
from mdpctl.fields import describe_bytes, expand_files, parse_files, parse_set

MMI_PREFIX = "mmi."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("service", nargs="?", help="service name, e.g. echo, ecard, thumbnail")
    parser.add_argument(
        "--json", default="{}", metavar="JSON",
        help="the request: a JSON object, @FILE to read it from a file, - for stdin "
        "(default {})",
    )
    parser.add_argument("--file", action="append", default=[], metavar="FIELD=PATH",
                        help="a bytes field from a file, e.g. image=photo.jpg (repeat; - is "
                        "stdin; default: none)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="a field: VALUE is JSON, else a string; @PATH is a file's bytes "
                        "(repeat; default: none)")
    parser.add_argument("-o", "--output", metavar="FILE",
                        help="write the reply (or its image) to FILE (default: print it; an "
                        "image only when stdout is not a terminal)")
    parser.add_argument(
        "--timeout", type=numbers.seconds, default=10.0, metavar="SECONDS",
        help="how long to wait for the reply, failover included (default 10)",
    )
    parser.add_argument(
        "--retries", type=numbers.count, default=3, metavar="N",
        help="sends again after a broker fails, to the next one (default 3)",
    )
    parser.add_argument(
        "--broker", action="append", metavar="ENDPOINT", type=endpoint_arg,
        help="brokers to use (repeat; default: the cluster's)",
    )
    parser.add_argument("--list", action="store_true",
                        help="list the services the fleet offers and their fields")


def load_request(text: str) -> dict[str, Any]:
    """The request map from --json's argument (``@FILE`` strings not yet read)."""
    if text == "-":
        text = sys.stdin.read()
    elif text.startswith("@"):
        try:
            text = Path(text[1:]).expanduser().read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--json {text}: {exc.strerror}") from exc
        except UnicodeDecodeError as exc:
            raise UsageError(f"--json {text}: not UTF-8 text (a request is JSON; give "
                             "image bytes with --file FIELD=PATH)") from exc
    try:
        request = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"--json is not valid JSON: {exc}") from exc
    if not isinstance(request, dict):
        raise UsageError("--json must be a JSON object (a map of fields)")
    return request


def build_request(args: argparse.Namespace) -> dict[str, Any]:
    request = expand_files(load_request(args.json))
    request.update(parse_set(args.set))
    request.update(parse_files(args.file))
    return dict(request)


def _check_size(request: dict[str, Any]) -> None:
    """A request the client would refuse is refused here, before anything is sent, as what
    it is: no service answered it."""
    from mdp.clientcodec import encode_request
    from mdp.options import ClientOptions

    limit = ClientOptions().max_request_bytes
    try:
        size = len(encode_request(request, sys.maxsize))
    except BadRequest as exc:
        raise UsageError(f"the request was not sent: {exc}") from None
    if size > limit:
        raise UsageError(f"the request was not sent: it is {size} bytes, more than the "
                         f"client's limit of {limit} bytes ({limit // (1024 * 1024)} MiB, "
                         "max_request_bytes)")


def run(args: argparse.Namespace, ctx: Context) -> int:
    if args.list:
        services_command.show(ctx, args.broker, 2.0, args.service, False)
        return 0
    if not args.service:
        raise UsageError("name a SERVICE to call (`mdpctl call --list` lists them)")
    request = build_request(args)
    _check_size(request)
    _check_output(args.output)
    cluster = ctx.cluster()
    brokers = list(args.broker or cluster.brokers)
    _check_some_broker(brokers)

    def send() -> Any:
        from mdp.client import MDPClient

        with MDPClient(brokers, timeout=args.timeout, retries=args.retries,
                       curve=cluster.curve) as client:
            if args.service.startswith(MMI_PREFIX):
                return _mmi(client, args.service, request)
            return client.send(args.service, request)

    try:
        reply = call_bounded(send, args.timeout + 2.0, f"the call to {args.service}")
    except RequestError as exc:
        hint = _hint(args.service, request, exc)
        raise CtlError(f"{args.service} answered with an error: {exc}{hint}") from exc
    except (Timeout, WaitTimeout) as exc:
        raise WaitTimeout(
            f"no reply from {args.service} within {args.timeout:g} s at "
            f"{', '.join(brokers)}; `mdpctl status` shows whether its workers run"
        ) from exc
    write_reply(reply, args.output, ctx)
    return 0


def _mmi(client: Any, service: str, request: dict[str, Any]) -> Any:
    """8/MMI and the DIPS status: the body is not a request map, nor the reply."""
    if service == "mmi.status":
        return client.status()
    if service == "mmi.service":
        name = request.get("service")
        if not isinstance(name, str) or not name:
            raise UsageError('mmi.service asks about one service: --json \'{"service": "echo"}\'')
        return {"service": name, "mmi.service": client.mmi_service(name)}
    frames = client.request_raw(service, b"")
    return [f.decode("utf-8", "replace") for f in frames]


def _hint(service: str, request: dict[str, Any], exc: RequestError) -> str:
    """What to do about a request the service refused."""
    if exc.code == "unknown_service":
        listed = "offered" in exc.message  # a broker that lists them says so itself
        return "" if listed else " (`mdpctl services` lists the services the fleet offers)"
    if exc.code != "bad_request":
        return ""
    value = request.get(exc.field) if exc.field else None
    if isinstance(value, str) and value and Path(value).expanduser().is_file():
        return (f" (to send the file {value}, write \"@{value}\" or --file "
                f"{exc.field}={value})")
    return f" (`mdpctl services {service}` lists its fields)"


def _check_output(output: str | None) -> None:
    """-o into a directory that does not exist is refused before the work is done."""
    if output is None:
        return
    parent = Path(output).expanduser().absolute().parent
    if not parent.is_dir():
        raise UsageError(f"-o {output}: the directory {parent} does not exist")


def _check_some_broker(brokers: list[str]) -> None:
    """Fail at once, naming them, when no broker accepts connections."""
    reasons = []
    for endpoint in brokers:
        try:
            check_listening(endpoint, 1.0)
            return
        except Unreachable as exc:
            reasons.append(str(exc))
    raise Unreachable("no broker is reachable: " + "; ".join(reasons)
                      + " (`mdpctl status` says what runs; `mdpctl up` starts a cluster)")


def _jsonable(value: Any, summarize: bool) -> Any:
    if isinstance(value, bytes | bytearray):
        if summarize:
            return f"<{describe_bytes(bytes(value))}; -o FILE writes them>"
        return {"base64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, dict):
        return {str(k): _jsonable(v, summarize) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v, summarize) for v in value]
    return value


def _image_field(reply: dict[Any, Any]) -> str | None:
    """The one field of a map reply that holds bytes, if there is exactly one."""
    found = [k for k, v in reply.items() if isinstance(v, bytes | bytearray)]
    return str(found[0]) if len(found) == 1 else None


def write_reply(reply: Any, output: str | None, ctx: Context) -> None:
    if isinstance(reply, bytes | bytearray):
        _write_bytes(bytes(reply), output, ctx)
        return
    if isinstance(reply, dict) and output and (key := _image_field(reply)) is not None:
        data = bytes(reply[key])
        Path(output).write_bytes(data)
        rest = {k: v for k, v in reply.items() if k != key}
        ctx.say(f"wrote {key}: {describe_bytes(data)} to {output}")
        if rest:
            ctx.say(json.dumps(_jsonable(rest, True), indent=2, sort_keys=True,
                               ensure_ascii=False))
        return
    text = json.dumps(_jsonable(reply, sys.stdout.isatty() and not output), indent=2,
                      sort_keys=True, ensure_ascii=False)
    if output:
        Path(output).write_text(text + "\n", encoding="utf-8")
        ctx.say(f"wrote the reply ({len(text)} characters of JSON) to {output}")
    else:
        ctx.say(text)


def _write_bytes(data: bytes, output: str | None, ctx: Context) -> None:
    if output:
        Path(output).write_bytes(data)
        ctx.say(f"wrote {describe_bytes(data)} to {output}")
    elif sys.stdout.isatty():
        raise UsageError(f"the reply is {describe_bytes(data)}; write it to a file with -o FILE")
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
