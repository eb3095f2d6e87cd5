"""Where a worker's handler comes from: ``echo`` built in, the rest from entry points.

A package offers services by declaring an entry point in the group ``dips.services``::

    [project.entry-points."dips.services"]
    renderers = "renderers"

The entry point loads an object with ``services()`` returning a mapping of service name to
handler (a callable taking the request map and returning the result) and, optionally,
``warm_up()``: once-per-process work to do before the worker announces itself, and
``describe()``: service name -> what the service is (:func:`service_info`), which the worker
announces in its READY so that doors and ``mdpctl services`` learn it from the fleet, and
``output_version()``: a short string that changes whenever the provider's results may change
(its code, data files and the libraries it draws with; by default a hash of the package's
Python files). A module with those functions will do. Third parties extend DIPS this way
without touching it.

A handler may declare that it never holds the GIL for long (:data:`YIELDS_GIL`: an attribute
``yields_gil = True`` on the callable, or on the object whose method it is): its C calls
release the GIL or are short, and its Python code gives it up every few milliseconds as any
Python code does. ``mdp-worker --transport auto`` gives such a worker a plain link, whose
PINGs a Python thread answers while the handler runs (docs/PROTOCOL.md, "The worker's
transport"); any other handler keeps the pyzmq link, whose PINGs libzmq's own thread answers
even while C code holds the GIL. Declare it only with evidence: ``tests/helpers/gil_probe.py``
measures the longest hold of a handler on the inputs given.

While a handler runs, it may tell its caller how far it has got, the way Gearman's
WORK_STATUS, WORK_DATA and WORK_WARNING do: :func:`progress` (``num`` of ``den``),
:func:`send_data` (a chunk of output) and :func:`warn` (a warning). Each reaches the
callers that asked for progress (``send(..., on_progress=...)``) through brokers that
relay it, and is a no-op anywhere else: outside a task, on a thread other than the
handler's, after the task's reply, towards a broker that does not relay progress.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import msgpack

from mdp.errors import ConfigError
from mdp.version import package_hash

log = logging.getLogger(__name__)

GROUP = "dips.services"
MAX_EXAMPLE_BYTES = 4096  # an example request larger than this (msgpack) is left out

Handle = Callable[[dict[str, Any]], Any]


@dataclass(frozen=True)
class Handler:
    """A service's handler and the package whose source the code version covers.

    A ``raw`` handler takes the request frame (already checked to be a valid request map)
    and returns the msgpack encoding of its result, so nothing is decoded or re-encoded.
    An ``instant`` handler (``echo``) cannot run long, so the worker does not put it under
    the sentinel's watch while it runs (nor relay progress from it: it has none).
    A ``yields_gil`` handler declares that it never holds the GIL for long (the module
    docstring): ``--transport auto`` then gives its worker a plain link.
    """

    service: str
    call: Callable[[Any], Any]
    package: str | None = None  # top-level package that provided it; None: built in
    raw: bool = False
    warm_up: Callable[[], None] | None = None
    instant: bool = False  # always done in microseconds: no sentinel watch needed
    info: dict[str, Any] | None = None  # what the service is: see service_info
    output: str | None = None  # what its results depend on: see output_version_of
    yields_gil: bool = False  # never holds the GIL for long: see declares_yields_gil


YIELDS_GIL = "yields_gil"
"""The attribute by which a handler declares that it never holds the GIL for long: ``True``
on the callable (``handle.yields_gil = True``) or on the object whose bound method it is."""


def declares_yields_gil(call: Any) -> bool:
    """Whether ``call`` declares :data:`YIELDS_GIL` (``True`` itself, not merely truthy), on
    itself or, for a bound method, on the object it is bound to."""
    own = getattr(call, YIELDS_GIL, None)
    if own is None:
        own = getattr(getattr(call, "__self__", None), YIELDS_GIL, None)
    return own is True


def service_info(content_type: str = "", fields: Sequence[Sequence[Any]] = (),
                 doc: str = "", example: Any = None) -> dict[str, Any]:
    """What a worker announces of its service in READY (``"info"``): the content type of its
    replies ("" when the request chooses it), its request fields as ``[name, kind, required,
    doc]``, a one-line description and, when given, ``example``: a small request map that
    works (``mdpctl services NAME`` suggests a call from it; alternatives such as "width,
    height or both" are more than required flags can say). Long texts are cut and a large
    or malformed example is left out, so that the map stays small."""
    info: dict[str, Any] = {
        "content_type": content_type[:100],
        "fields": [[str(name)[:64], str(kind)[:64], bool(required), str(field_doc)[:200]]
                   for name, kind, required, field_doc in list(fields)[:64]],
        "doc": doc[:300],
    }
    if _small_map(example):
        info["example"] = dict(example)
    return info


def _small_map(value: Any) -> bool:
    if not (isinstance(value, Mapping) and all(isinstance(k, str) for k in value)):
        return False
    try:
        return len(msgpack.packb(dict(value), use_bin_type=True)) <= MAX_EXAMPLE_BYTES
    except (TypeError, ValueError, OverflowError):
        return False


def _echo_raw(frame: bytes) -> bytes:
    """The built-in diagnostic service: the request, unchanged (not even re-encoded)."""
    return frame


ECHO = Handler("echo", _echo_raw, None, raw=True, instant=True, yields_gil=True,
               info=service_info(doc="returns the request unchanged (a diagnostic service)",
                                 example={"hello": "world"}))


def plain(service: str, call: Handle, *, yields_gil: bool | None = None) -> Handler:
    """A handler given directly (tests, benchmarks, a program that runs its own worker): a
    callable of the request map. ``yields_gil``: its declaration (the module docstring); by
    default what the callable declares itself (:func:`declares_yields_gil`)."""
    return Handler(service, call, getattr(call, "__module__", "").partition(".")[0] or None,
                   yields_gil=declares_yields_gil(call) if yields_gil is None else yields_gil)


# Used when no distribution declares the group (a source tree run without being installed):
# the packages this repository ships.
FALLBACK_PROVIDERS = (metadata.EntryPoint("renderers", "renderers", GROUP),)


def _providers() -> list[metadata.EntryPoint]:
    found = list(metadata.entry_points(group=GROUP))
    return found or list(FALLBACK_PROVIDERS)


def provider_modules() -> list[str]:
    """The modules the entry points of the group name (without importing them)."""
    return [entry.value.partition(":")[0].strip() for entry in _providers()]


def _services_of(entry: metadata.EntryPoint) -> tuple[Mapping[str, Handle], Any]:
    provider = entry.load()
    services = provider.services() if callable(getattr(provider, "services", None)) else provider
    if not isinstance(services, Mapping):
        raise ConfigError(f"entry point {entry.name!r} of {GROUP!r} gives no service mapping")
    return services, provider


def _load(entry: metadata.EntryPoint) -> tuple[Mapping[str, Handle], Any]:
    """The provider's services and the provider; ConfigError naming a broken plug-in."""
    try:
        return _services_of(entry)
    except ConfigError:
        raise
    except Exception as exc:  # a broken plug-in is named, not a traceback
        raise ConfigError(f"cannot load {GROUP} entry point {entry.name!r} "
                          f"({entry.value}): {type(exc).__name__}: {exc}") from exc


def service_names() -> list[str]:
    """Every service a worker started here could offer: ``echo``, then each provider's in
    the order it gives them (what :func:`resolve` finds; ConfigError as it raises)."""
    names = ["echo"]
    for entry in _providers():
        services, _provider = _load(entry)
        names.extend(str(name) for name in services if name not in names)
    return names


def resolve(service: str) -> Handler:
    """The handler of ``service``; ConfigError listing the known services otherwise."""
    if service == "echo":
        return ECHO
    known = ["echo"]
    for entry in _providers():
        services, provider = _load(entry)
        call = services.get(service)
        if call is not None:
            warm_up = getattr(provider, "warm_up", None)
            package = entry.value.partition(":")[0].partition(".")[0]
            return Handler(service, call, package,
                           warm_up=warm_up if callable(warm_up) else None,
                           info=_info_of(provider, service),
                           output=output_version_of(provider, package),
                           yields_gil=declares_yields_gil(call))
        known.extend(services)
    raise ConfigError(f"unknown service {service!r}; known: {', '.join(sorted(known))}")


def output_version_of(provider: Any, package: str) -> str | None:
    """What the provider's results depend on: its ``output_version()`` if it offers one
    (cut to 64 characters), else a hash of ``package``'s Python files; a broken one costs
    the output version only (the door then keys results by the full code version)."""
    offered = getattr(provider, "output_version", None)
    if not callable(offered):
        return package_hash(package)
    try:
        version = offered()
    except Exception as exc:
        log.warning("cannot tell the output version of %r: %s: %s", package,
                    type(exc).__name__, exc)
        return None
    if not isinstance(version, str) or not version:
        log.warning("the output version of %r is not a string: %r", package, version)
        return None
    return version[:64]


def _info_of(provider: Any, service: str) -> dict[str, Any] | None:
    """The provider's description of ``service``, if it offers ``describe()``; a broken one
    costs the description only, never the worker."""
    describe = getattr(provider, "describe", None)
    if not callable(describe):
        return None
    try:
        info = describe().get(service)
        if info is None:
            return None
        return service_info(info.get("content_type", ""), info.get("fields", ()),
                            info.get("doc", ""), info.get("example"))
    except Exception as exc:
        log.warning("cannot describe service %r: %s: %s", service, type(exc).__name__, exc)
        return None


# --- progress from inside a handler ----------------------------------------------------------

Report = Callable[[str, "int | None", "int | None", "bytes | None"], None]
"""What the worker gives :func:`reporting`: ``report(kind, num, den, data)``."""

_local = threading.local()  # .report: the running task's Report on the handler's thread


def reporting(report: Report | None) -> None:
    """The worker says where this thread's reports go while a task runs (None after it)."""
    _local.report = report


def progress(num: int, den: int) -> None:
    """The running task has done ``num`` of ``den`` (non-negative integers)."""
    for name, value in (("num", num), ("den", den)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"progress {name} must be a non-negative integer, got {value!r}")
    _report("status", num, den, None)


def send_data(data: bytes) -> None:
    """Send a chunk of the running task's output to its caller now."""
    _report("data", None, None, _as_data(data, "send_data"))


def warn(message: bytes | str) -> None:
    """Send the running task's caller a warning (bytes, or text sent as UTF-8)."""
    if isinstance(message, str):
        message = message.encode()
    _report("warning", None, None, _as_data(message, "warn"))


def _as_data(data: object, what: str) -> bytes:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"{what} takes bytes, got {type(data).__name__}")
    return bytes(data)


def _report(kind: str, num: int | None, den: int | None, data: bytes | None) -> None:
    report: Report | None = getattr(_local, "report", None)
    if report is not None:
        report(kind, num, den, data)
