"""Shared fixtures for the core's tests (helpers live in clusterkit.py)."""

from __future__ import annotations

import compileall
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

import mdp.aio
import mdp.client
from clusterkit import Cluster

REPO = Path(__file__).resolve().parent.parent
# What the suite's child processes (brokers, workers, doors, mdpctl, helpers) import from this
# checkout.
CHILD_PACKAGES = ("mdp", "mdp_http", "mdp_gearman", "renderers", "mdpctl", "testkit", "tests")


def pytest_configure(config: pytest.Config) -> None:
    """With PYTHONDONTWRITEBYTECODE set, every one of the suite's thousands of child
    processes compiled the same sources again (about 0.15 s of CPU each); compiled once here,
    next to the sources as Python itself would write them, they are read by every child.
    Python checks each against its source's size and time as always, so an edited file is
    compiled afresh; copies of the code that tests change (tests/ops) are not touched."""
    if sys.flags.dont_write_bytecode:
        for package in CHILD_PACKAGES:
            compileall.compile_dir(REPO / package, quiet=2)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Under CI a test whose real peer is missing fails (see ``clusterkit.needs``)."""
    marker = item.get_closest_marker("missing_peer")
    if marker is not None:
        pytest.fail(f"needs {marker.args[0]}, which .ci/run must install", pytrace=False)


CLIENT_SOURCES = (mdp.client.__file__, mdp.aio.__file__)  # (wherever mdp is imported from)
LEFT_THREAD_JOIN_S = 2.0  # a client thread still running at a test's end: its last chance


def _in_a_client(thread: threading.Thread) -> bool:
    """Whether ``thread`` is now inside a DIPS client's code (a sync client's call)."""
    frame = sys._current_frames().get(thread.ident or -1)
    while frame is not None:
        if frame.f_code.co_filename in CLIENT_SOURCES:
            return True
        frame = frame.f_back
    return False


@pytest.fixture(autouse=True)
def no_client_thread_left() -> Iterator[None]:
    """A test that leaves a thread running a client call behind fails (after every other
    fixture's teardown): such a client, its broker gone, warned "cannot connect" into the
    tests that ran next, which assert no WARNING."""
    before = set(threading.enumerate())
    yield
    left = [t for t in threading.enumerate() if t not in before and _in_a_client(t)]
    for thread in left:
        thread.join(LEFT_THREAD_JOIN_S)
    if any(thread.is_alive() for thread in left):
        pytest.fail(f"the test left a client running in thread(s) "
                    f"{[t.name for t in left if t.is_alive()]}; join them (or close the "
                    f"client) before it ends", pytrace=False)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.stop_all()


@pytest.fixture
def zctx() -> Iterator[zmq.Context]:
    ctx = zmq.Context()
    try:
        yield ctx
    finally:
        ctx.destroy(linger=0)
