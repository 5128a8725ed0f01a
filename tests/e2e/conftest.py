"""Fixtures that run real Kittiwake daemons on loopback for the end-to-end tests.

* ``server`` — one daemon for the whole session (default config: catch-all for
  ``example.test``, ``bare_linefeed = "normalize"``, 1 MiB size limit). Tests that share it
  must not change its state in ways others can see: use a fresh mailbox per test
  (``mailbox`` fixture) and never stop it.
* ``make_server(overrides)`` — a fresh daemon per test with config overrides (deep-merged
  TOML tables); stopped with SIGTERM (by PID) at teardown.

When a test fails, the tail of every daemon's log it used is attached to the report.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.server import KittiwakeServer, MakeServer, Overrides

LOG_TAIL_LINES = 150
_KEY = pytest.StashKey[list[KittiwakeServer]]()


def _tail(server: KittiwakeServer) -> str:
    lines = server.log_text().splitlines()
    return "\n".join(lines[-LOG_TAIL_LINES:])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.failed:
        servers = item.stash.get(_KEY, None) or []
        for i, server in enumerate(servers):
            report.sections.append((f"kittiwake #{i} log (tail)", _tail(server)))


def _remember(request: pytest.FixtureRequest, server: KittiwakeServer) -> None:
    item = request.node
    if isinstance(item, pytest.Item):
        item.stash.setdefault(_KEY, []).append(server)


# Module fixtures holding a daemon in ``.server`` (tests/support/mta.py environments).
_ENV_FIXTURES = ("relay", "routed")


@pytest.fixture(autouse=True)
def _attach_env_log(request: pytest.FixtureRequest) -> None:
    """A failing test that used a relay environment shows that daemon's log too."""
    for name in _ENV_FIXTURES:
        if name in request.fixturenames:
            _remember(request, request.getfixturevalue(name).server)


@pytest.fixture(scope="session")
def _shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KittiwakeServer]:
    srv = KittiwakeServer(tmp_path_factory.mktemp("kittiwake-shared"))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def server(_shared_server: KittiwakeServer, request: pytest.FixtureRequest) -> KittiwakeServer:
    """The shared daemon (restarted if an earlier test left it dead)."""
    if not _shared_server.running:
        _shared_server.start()
    _remember(request, _shared_server)
    return _shared_server


@pytest.fixture
def make_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[MakeServer]:
    started: list[KittiwakeServer] = []

    def make(overrides: Overrides | None = None, *, start: bool = True) -> KittiwakeServer:
        srv = KittiwakeServer(tmp_path / f"kittiwake-{len(started)}", overrides)
        started.append(srv)
        _remember(request, srv)
        if start:
            srv.start()
        return srv

    yield make
    for srv in started:
        srv.stop_or_kill()


@pytest.fixture
def mailbox() -> str:
    """A fresh catch-all address in the shared server's local domain."""
    return f"u{uuid.uuid4().hex[:12]}@example.test"


@pytest.fixture
def mailboxes() -> Callable[[int], list[str]]:
    def make(n: int) -> list[str]:
        tag = uuid.uuid4().hex[:8]
        return [f"u{tag}x{i}@example.test" for i in range(n)]

    return make
