"""Bad arguments raise InvalidArgument before any call.

The clients point at a loopback port where nothing listens, so a call that went out would raise
GatewayUnavailable instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import sandgate

NOWHERE = "127.0.0.1:9"
ID = "0b7f5d2e-8a51-4c3e-9f00-6a1d2c3b4e5f"

Call = Callable[[Any], Any]

CASES: list[tuple[str, Call, str]] = [
    ("name uppercase", lambda c: c.create("Web", ["true"]), "invalid name 'Web'"),
    ("name underscore", lambda c: c.get("a_b"), "invalid name 'a_b'"),
    ("name leading dash", lambda c: c.delete("-a"), "invalid name '-a'"),
    ("name empty", lambda c: c.create("", ["true"]), "invalid name ''"),
    ("name too long", lambda c: c.create("a" * 64, ["true"]), "64 characters"),
    ("name not str", lambda c: c.get(7), "name must be a str"),
    ("name and id", lambda c: c.get("web", id=ID), "not both"),
    ("neither name nor id", lambda c: c.delete(), "name or id is required"),
    ("watch name and id", lambda c: c.watch("web", id=ID), "not both"),
    ("id not uuid", lambda c: c.get(id="web"), "invalid id 'web'"),
    ("wait id not uuid", lambda c: c.wait_deleted("web"), "invalid id 'web'"),
    ("timeout too short", lambda c: c.delete("web", timeout=0.5), "from 1 to 3600"),
    ("timeout too long", lambda c: c.delete("web", timeout=3601), "from 1 to 3600"),
    ("timeout not number", lambda c: c.wait_deleted(ID, timeout="5"), "number of seconds"),
    ("timeout nan", lambda c: c.delete("web", timeout=float("nan")), "finite"),
    ("create timeout", lambda c: c.create("web", ["true"], timeout=0), "from 1 to 3600"),
    ("watch timeout", lambda c: c.watch(timeout=0), "from 1 to 3600"),
    ("grace negative", lambda c: c.delete("web", grace_period=-1), "must not be negative"),
    (
        "create grace negative",
        lambda c: c.create("web", ["true"], grace_period=-0.5),
        "must not be negative",
    ),
    ("command empty", lambda c: c.create("web", []), "non-empty list"),
    ("command string", lambda c: c.create("web", "sleep 1"), "not the string"),
    ("command item", lambda c: c.create("web", ["sleep", 1]), "command[1] must be a str"),
    ("label value", lambda c: c.create("web", ["true"], labels={"a": 1}), "labels['a']"),
    ("label key", lambda c: c.create("web", ["true"], labels={1: "a"}), "keys must be str"),
    ("env value", lambda c: c.create("web", ["true"], env={"A": None}), "env['A']"),
    ("env not mapping", lambda c: c.create("web", ["true"], env=["A=1"]), "mapping"),
    ("phase", lambda c: c.list(phase="RUNNING"), "invalid phase 'RUNNING'"),
    ("page size", lambda c: c.list(page_size=0), "page_size"),
    ("resume revision", lambda c: c.watch(resume_revision=-1), "resume_revision"),
    ("wait flag", lambda c: c.delete("web", wait="yes"), "wait must be True or False"),
    (
        "sandbox delete timeout",
        lambda c: c.sandbox("web", ["true"], delete_timeout=0).__enter__(),
        "delete_timeout",
    ),
]


@pytest.mark.parametrize(
    ("call", "expected"), [case[1:] for case in CASES], ids=[case[0] for case in CASES]
)
def test_sync_rejects_before_call(call: Call, expected: str) -> None:
    with sandgate.Client(NOWHERE) as client:
        with pytest.raises(sandgate.InvalidArgument) as caught:
            call(client)
    assert expected in str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert caught.value.code is None


ASYNC_CASES: list[tuple[str, Call, str]] = [
    ("name", lambda c: c.create("Web", ["true"]), "invalid name 'Web'"),
    ("name and id", lambda c: c.delete("web", id=ID), "not both"),
    ("timeout", lambda c: c.wait_deleted(ID, timeout=4000), "from 1 to 3600"),
    ("grace", lambda c: c.delete("web", grace_period=-2), "must not be negative"),
    ("command", lambda c: c.create("web", []), "non-empty list"),
    ("labels", lambda c: c.create("web", ["true"], labels={"a": 2}), "labels['a']"),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("call", "expected"), [case[1:] for case in ASYNC_CASES], ids=[case[0] for case in ASYNC_CASES]
)
async def test_async_rejects_before_call(call: Call, expected: str) -> None:
    async with sandgate.AsyncClient(NOWHERE) as client:
        with pytest.raises(sandgate.InvalidArgument) as caught:
            await call(client)
    assert expected in str(caught.value)


@pytest.mark.asyncio
async def test_async_iterators_reject_at_call() -> None:
    async with sandgate.AsyncClient(NOWHERE) as client:
        with pytest.raises(sandgate.InvalidArgument, match="phase"):
            client.list(phase="RUNNING")
        with pytest.raises(sandgate.InvalidArgument, match="not both"):
            client.watch("web", id=ID)


def test_client_rejects_bad_workspace() -> None:
    with pytest.raises(sandgate.InvalidArgument, match="invalid workspace 'My WS'"):
        sandgate.Client(NOWHERE, workspace="My WS")


def test_unreachable_gateway_raises_gateway_unavailable() -> None:
    with sandgate.Client(NOWHERE) as client:
        with pytest.raises(sandgate.GatewayUnavailable) as caught:
            client.get("web")
    assert caught.value.target == NOWHERE
    assert NOWHERE in str(caught.value)


def test_target_defaults_to_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDGATE_SERVER", "http://127.0.0.1:9/")
    with sandgate.Client() as client:
        assert client.target == "127.0.0.1:9"
    monkeypatch.setenv("SANDGATE_SERVER", "")
    with sandgate.Client() as client:
        assert client.target == "127.0.0.1:7878"


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("127.0.0.1:9", "127.0.0.1:9"),
        ("http://127.0.0.1:9", "127.0.0.1:9"),
        ("http://[::1]:9/", "[::1]:9"),
    ],
)
def test_target_takes_cli_urls(target: str, expected: str) -> None:
    with sandgate.Client(target) as client:
        assert client.target == expected


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("", "HOST:PORT string"),
        ("https://127.0.0.1:9", "plain HTTP/2"),
        ("http://127.0.0.1:9/api", "no path"),
        ("http://", "invalid target"),
    ],
)
def test_target_rejects_unusable_values(target: str, message: str) -> None:
    with pytest.raises(sandgate.InvalidArgument, match=message):
        sandgate.Client(target)
