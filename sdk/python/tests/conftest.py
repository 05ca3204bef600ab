"""Fixtures: a real `sandgate serve` per test, clients of it, and cleanup of every process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import sandgate
from support import Gateway


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def gateway(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Gateway]:
    """A started gateway with a fresh data directory. Teardown stops it and kills every process
    of its sandboxes, also when the test failed."""
    server = Gateway(tmp_path / "data", tmp_path / "serve.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()
        server.kill_sandboxes()
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            print(f"--- sandgate serve log ({server.log_path}) ---\n{server.log_tail()}")


@pytest.fixture
def client(gateway: Gateway) -> Iterator[sandgate.Client]:
    """A blocking client of the test's gateway."""
    with sandgate.Client(gateway.address) as value:
        yield value
