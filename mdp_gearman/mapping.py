"""From a Gearman workload to a DIPS request, and from a DIPS reply back to bytes.

A workload is tried, in this order, as:

1. PHP ``serialize()`` of an array (``a:N:{...}``): decoded strictly by :mod:`.phpser`; a
   workload that starts like one but breaks the format is refused with ``bad_request``;
2. a msgpack map (first byte 0x80-0x8f, 0xde or 0xdf, and the whole workload one map);
3. a JSON object (first non-blank byte ``{`` and the whole workload one object);
4. anything else: raw bytes, sent as ``{RAW_FIELD: workload}`` (``image`` by default, the
   field of the image services, so ``gearman -f convert < photo.png`` works).

A result that is bytes goes back as it is (a card's PNG), a string as UTF-8 (a peer's msgpack
str that was not UTF-8, as a PHP msgpack worker sends image bytes: the very bytes it sent);
any other value is encoded the way the workload came: PHP serialize() for PHP, msgpack for
msgpack, JSON for JSON and raw (msgpack when JSON cannot hold it, e.g. non-UTF-8 bytes or strs).
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any

from mdp import protocol as p
from mdp.body import as_bytes
from mdp.errors import BadRequest, ProtocolError, RequestError, Timeout, WorkerError
from mdp_gearman import packets as g
from mdp_gearman import phpser
from mdp_gearman.packets import T

DEFAULT_RAW_FIELD = "image"
GEARMAN_FAIL = "gearman_fail"  # a Gearman worker's WORK_FAIL, as a DIPS error code
GEARMAN_EXCEPTION = "gearman_exception"  # its WORK_EXCEPTION; the message is its bytes


class Format(enum.Enum):
    PHP = "php"
    MSGPACK = "msgpack"
    JSON = "json"
    RAW = "raw"


@dataclass(frozen=True)
class WorkloadLimits:
    max_depth: int = phpser.DEFAULT_MAX_DEPTH
    max_items: int = phpser.DEFAULT_MAX_ITEMS
    raw_field: str = DEFAULT_RAW_FIELD


def decode_workload(data: bytes, limits: WorkloadLimits = WorkloadLimits()
                    ) -> tuple[dict[str, Any], Format]:
    """The request map for ``data`` and the format it came in; BadRequest when refused."""
    if phpser.is_serialized_array(data):
        value = phpser.loads(data, phpser.Limits(len(data), limits.max_depth, limits.max_items))
        if not isinstance(value, dict):
            raise BadRequest("the PHP array must have string keys (a request is a map), got "
                             "a list", field="workload")
        return value, Format.PHP
    if data[:1] and (0x80 <= data[0] <= 0x8F or data[0] in (0xDE, 0xDF)):
        try:
            value = p.unpack(data, limits.max_items)
        except ProtocolError:
            value = None
        if isinstance(value, dict):
            _check_depth(value, limits.max_depth)
            return value, Format.MSGPACK
    if data.lstrip()[:1] == b"{":
        try:
            value = json.loads(data)
        except (ValueError, RecursionError):
            value = None
        if isinstance(value, dict):
            _check_depth(value, limits.max_depth)
            return value, Format.JSON
    return {limits.raw_field: data}, Format.RAW


def gearman_workload(request: dict[str, Any], raw_field: str = DEFAULT_RAW_FIELD) -> bytes:
    """The workload a Gearman worker's job sees for a DIPS request.

    A request whose only field is ``raw_field`` (a Gearman client's raw workload, passed
    through; or an image) is its bytes, unchanged; any other request is PHP serialize() of
    the map, which is byte for byte what a PHP client's ``serialize($data)`` sent (the seed's
    worker calls ``unserialize($job->workload())``).
    """
    if len(request) == 1:
        value = request.get(raw_field)
        if isinstance(value, bytes | str):
            return as_bytes(value)
    try:
        return phpser.dumps(request)
    except TypeError as exc:
        raise BadRequest(f"the request cannot be given to a Gearman worker: {exc}") from exc


def _check_depth(value: Any, max_depth: int) -> None:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            raise BadRequest(f"the workload is nested deeper than {max_depth} levels",
                             field="workload")
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))


def encode_result(result: Any, fmt: Format) -> bytes:
    """The bytes of WORK_COMPLETE for a DIPS result; a result none of the formats can carry
    (nested deeper than they allow) is a :class:`WorkerError` ``bad_reply`` naming why."""
    try:
        return _encode(result, fmt)
    except (RecursionError, ValueError) as exc:  # msgpack: "recursion limit exceeded"
        raise WorkerError(f"the worker's result cannot be encoded for a Gearman client "
                          f"(it is nested too deep: {type(exc).__name__}: {exc})",
                          code="bad_reply") from None


def _encode(result: Any, fmt: Format) -> bytes:
    if isinstance(result, bytes):
        return result
    if isinstance(result, str):
        return as_bytes(result)  # a peer's non-UTF-8 str: the bytes it sent, exactly
    if fmt is Format.PHP:
        try:
            return phpser.dumps(result)
        except TypeError:
            return p.pack(result)
    if fmt is Format.MSGPACK:
        return p.pack(result)
    try:
        return json.dumps(result, default=_json_bytes, ensure_ascii=False).encode()
    except (TypeError, ValueError, RecursionError):  # msgpack carries what json cannot
        return p.pack(result)


def _json_bytes(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")  # UnicodeDecodeError is a ValueError: msgpack instead
    raise TypeError(f"{type(value).__name__} is not JSON")


def internal_failure(exc: BaseException, doing: str) -> RequestError:
    """The error a job ends with when the gateway itself failed ``doing`` something (a bug):
    code ``internal``, naming what it did and the exception."""
    return WorkerError(f"the gateway failed {doing}: {type(exc).__name__}: {exc}",
                       code="internal")


def describe_error(exc: BaseException) -> tuple[str, str]:
    """The code and the sentence a failed job reports (WORK_EXCEPTION, logs)."""
    if isinstance(exc, RequestError):
        message = exc.message + (f" (field {exc.field!r})" if exc.field else "")
        return exc.code, message
    if isinstance(exc, Timeout):
        return "timeout", str(exc)
    return "internal", f"{type(exc).__name__}: {exc}"


def exception_bytes(exc: BaseException) -> bytes:
    """What WORK_EXCEPTION carries: ``CODE: MESSAGE (field 'F')``; a Gearman worker's own
    exception (passed through DIPS) as it sent it."""
    code, message = describe_error(exc)
    if code == GEARMAN_EXCEPTION:
        return message.encode("utf-8", "replace")
    return f"{code}: {message}".encode("utf-8", "replace")


def failure_packets(handle: bytes, exc: BaseException, exceptions: bool) -> bytes:
    """How a failed job ends for one client.

    A client that asked for exceptions (PHP's GearmanClient always does) gets
    WORK_EXCEPTION with the reason. Any other gets WORK_WARNING with the reason, then
    WORK_FAIL: Gearman gives such a client no exception, but a warning reaches it (the
    ``gearman`` tool prints it). A Gearman worker's WORK_FAIL (code ``gearman_fail``) is
    WORK_FAIL for every client, as gearmand forwards it.
    """
    fail = g.build(T.WORK_FAIL, handle)
    if isinstance(exc, RequestError) and exc.code == GEARMAN_FAIL:
        return fail
    reason = exception_bytes(exc)
    if exceptions:
        return g.build(T.WORK_EXCEPTION, handle, reason)
    # a line of its own: the gearman tool prints a warning as it comes, then 'Job failed'
    return g.build(T.WORK_WARNING, handle, reason + b"\n") + fail
