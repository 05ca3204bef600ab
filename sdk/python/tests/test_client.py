"""Tests of the blocking client against a real gateway on the process driver."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC

import pytest

import sandgate
from sandgate import DeleteOutcome, Phase, WatchEventType
from support import (
    EVENT_TIMEOUT,
    IGNORE_TERM,
    SLEEP,
    Gateway,
    assert_all_gone,
    processes_of,
    wait_for_phase,
)


def test_create_get_list_delete(client: sandgate.Client, gateway: Gateway) -> None:
    created = client.create(
        "web",
        SLEEP,
        labels={"team": "ml"},
        env={"GREETING": "hi"},
        grace_period=2,
        wait_ready=True,
    )
    assert created.phase == Phase.READY
    assert created.name == "web"
    assert created.workspace == "default"
    assert created.labels == {"team": "ml"}
    assert created.env == {"GREETING": "hi"}
    assert created.command == SLEEP
    assert created.grace_period == 2.0
    assert created.created_at is not None and created.created_at.tzinfo == UTC
    assert created.deletion_requested_at is None
    assert created.exit_code is None

    assert client.get("web").id == created.id
    assert client.get(id=created.id).name == "web"
    assert [s.id for s in client.list(label_selector="team=ml")] == [created.id]
    assert list(client.list(label_selector="team=other")) == []
    assert [s.id for s in client.list(phase=Phase.READY)] == [created.id]
    assert list(client.list(phase=["EXITED", Phase.ERROR])) == []

    result = client.delete("web")
    assert result.outcome == DeleteOutcome.DELETED
    assert result.id == created.id
    assert result.deleted_at is not None
    with pytest.raises(sandgate.SandboxNotFound):
        client.get(id=created.id)


def test_list_iterates_over_pages(client: sandgate.Client) -> None:
    names = [f"page-{index}" for index in range(5)]
    for name in names:
        client.create(name, SLEEP)
    listed = [sandbox.name for sandbox in client.list(page_size=2)]
    assert listed == names


def test_list_all_workspaces(gateway: Gateway, client: sandgate.Client) -> None:
    with sandgate.Client(gateway.address, workspace="other") as other:
        other.create("same", SLEEP)
        client.create("same", SLEEP)
        assert [s.workspace for s in other.list()] == ["other"]
        assert sorted(s.workspace for s in client.list(all_workspaces=True)) == [
            "default",
            "other",
        ]


def test_delete_waits_until_processes_gone(client: sandgate.Client, gateway: Gateway) -> None:
    sandbox = client.create("stubborn", IGNORE_TERM, grace_period=2, wait_ready=True)
    _, processes = processes_of(gateway, sandbox.id)

    start = time.monotonic()
    result = client.delete("stubborn", timeout=30)
    elapsed = time.monotonic() - start

    assert result.outcome == DeleteOutcome.DELETED
    assert result.id == sandbox.id
    # The command ignores SIGTERM, so only the SIGKILL after the grace period ends it.
    assert elapsed >= 1.9, f"delete returned after {elapsed:.2f} s, before the grace period"
    assert_all_gone(processes)


def test_delete_without_wait_returns_accepted(client: sandgate.Client, gateway: Gateway) -> None:
    sandbox = client.create("nowait", IGNORE_TERM, grace_period=2, wait_ready=True)
    _, processes = processes_of(gateway, sandbox.id)

    result = client.delete("nowait", wait=False)

    assert result.outcome == DeleteOutcome.ACCEPTED
    assert result.sandbox is not None
    assert result.sandbox.phase == Phase.DELETING
    assert result.sandbox.deletion_requested_at is not None
    assert client.wait_deleted(sandbox.id, timeout=30).outcome == DeleteOutcome.DELETED
    assert_all_gone(processes)


def test_delete_timeout_raises_deletion_timeout(client: sandgate.Client, gateway: Gateway) -> None:
    sandbox = client.create("slow", IGNORE_TERM, grace_period=3, wait_ready=True)
    _, processes = processes_of(gateway, sandbox.id)

    start = time.monotonic()
    with pytest.raises(sandgate.DeletionTimeout) as caught:
        client.delete("slow", timeout=1)
    elapsed = time.monotonic() - start

    error = caught.value
    assert error.id == sandbox.id
    assert error.phase == Phase.DELETING
    assert error.reason, "the timeout carries no reason from the gateway"
    assert error.reason_since is not None
    assert error.reason in str(error)
    assert isinstance(error, TimeoutError)
    assert elapsed < 4, f"a 1 s wait raised after {elapsed:.2f} s"

    # The timeout ended the wait, not the deletion.
    assert client.wait_deleted(sandbox.id, timeout=30).outcome == DeleteOutcome.DELETED
    assert_all_gone(processes)


def test_wait_deleted_of_removed_id_returns_at_once(client: sandgate.Client) -> None:
    sandbox = client.create("gone", SLEEP, grace_period=1)
    client.delete(id=sandbox.id)

    start = time.monotonic()
    result = client.wait_deleted(sandbox.id, timeout=60)
    assert result.outcome == DeleteOutcome.DELETED
    assert result.id == sandbox.id
    assert time.monotonic() - start < 5

    again = client.delete(id=sandbox.id)
    assert again.outcome == DeleteOutcome.DELETED


def test_wait_deleted_ignores_reused_name(client: sandgate.Client, gateway: Gateway) -> None:
    old = client.create("reused", IGNORE_TERM, grace_period=2, wait_ready=True)
    _, old_processes = processes_of(gateway, old.id)
    assert client.delete("reused", wait=False).outcome == DeleteOutcome.ACCEPTED

    # While the old sandbox is deleting, its name is held.
    with pytest.raises(sandgate.SandboxStillDeleting) as caught:
        client.create("reused", SLEEP)
    assert caught.value.sandbox_id == old.id

    assert client.wait_deleted(old.id, timeout=30).outcome == DeleteOutcome.DELETED
    assert_all_gone(old_processes)

    new = client.create("reused", SLEEP, wait_ready=True)
    assert new.id != old.id

    # A wait on the old id returns from its removal record, while the new sandbox runs on.
    assert client.wait_deleted(old.id, timeout=5).outcome == DeleteOutcome.DELETED
    assert client.get("reused").phase == Phase.READY

    # A wait on the new id is not satisfied by the old removal.
    with pytest.raises(sandgate.DeletionTimeout) as timeout:
        client.wait_deleted(new.id, timeout=1)
    assert timeout.value.id == new.id
    assert timeout.value.phase == Phase.READY


def test_concurrent_delete_joins_first(client: sandgate.Client, gateway: Gateway) -> None:
    sandbox = client.create("shared", IGNORE_TERM, grace_period=3, wait_ready=True)
    _, processes = processes_of(gateway, sandbox.id)

    events = client.watch(id=sandbox.id, timeout=EVENT_TIMEOUT)
    with ThreadPoolExecutor(max_workers=2) as pool:
        first = pool.submit(client.delete, "shared", timeout=30)
        for event in events:
            if event.sandbox is not None and event.sandbox.phase == Phase.DELETING:
                break
        second = pool.submit(client.delete, "shared", timeout=30)
        first_result = first.result(timeout=60)
        second_result = second.result(timeout=60)
    events.close()

    assert first_result.outcome == DeleteOutcome.DELETED
    assert second_result.outcome == DeleteOutcome.DELETED
    assert first_result.id == second_result.id == sandbox.id
    # Both calls report the one removal of the one deletion.
    assert first_result.deleted_at is not None
    assert first_result.deleted_at == second_result.deleted_at
    assert first_result.sandbox is not None and second_result.sandbox is not None
    assert first_result.sandbox.deletion_requested_at == second_result.sandbox.deletion_requested_at
    assert_all_gone(processes)


def test_create_conflicts_with_live_name(client: sandgate.Client) -> None:
    client.create("taken", SLEEP)
    with pytest.raises(sandgate.SandboxAlreadyExists, match="taken"):
        client.create("taken", SLEEP)


def test_not_found_and_ignore_not_found(client: sandgate.Client) -> None:
    with pytest.raises(sandgate.SandboxNotFound):
        client.get("missing")
    with pytest.raises(sandgate.SandboxNotFound):
        client.delete("missing")
    with pytest.raises(sandgate.SandboxNotFound):
        client.wait_deleted(str(uuid.uuid4()), timeout=1)
    result = client.delete("missing", ignore_not_found=True)
    assert result.outcome == DeleteOutcome.ALREADY_ABSENT


def test_wait_ready_raises_when_command_fails(client: sandgate.Client) -> None:
    with pytest.raises(sandgate.SandboxNotReady) as caught:
        client.create("broken", ["/nonexistent/program"], wait_ready=True, timeout=20)
    assert caught.value.sandbox.phase == Phase.ERROR
    client.delete(id=caught.value.sandbox.id)


def test_server_invalid_argument_is_raised(client: sandgate.Client) -> None:
    with pytest.raises(sandgate.InvalidArgument, match="label_selector"):
        list(client.list(label_selector="a in (b"))


def test_context_manager_deletes_on_exit(client: sandgate.Client, gateway: Gateway) -> None:
    with client.sandbox("scoped", IGNORE_TERM, grace_period=1) as sandbox:
        assert sandbox.phase == Phase.READY
        _, processes = processes_of(gateway, sandbox.id)
    assert_all_gone(processes)
    with pytest.raises(sandgate.SandboxNotFound):
        client.get(id=sandbox.id)


def test_context_manager_deletes_when_body_raises(
    client: sandgate.Client, gateway: Gateway
) -> None:
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="body failed"):
        with client.sandbox("failing", IGNORE_TERM, grace_period=2) as sandbox:
            _, processes = processes_of(gateway, sandbox.id)
            raise RuntimeError("body failed")
    assert time.monotonic() - start >= 1.9, "the exit did not wait for the grace period"
    assert_all_gone(processes)
    with pytest.raises(sandgate.SandboxNotFound):
        client.get(id=sandbox.id)


def test_context_manager_raises_delete_failure(client: sandgate.Client, gateway: Gateway) -> None:
    body_error = ValueError("body failed")
    with pytest.raises(sandgate.GatewayUnavailable) as caught:
        with client.sandbox("orphaned", SLEEP, grace_period=1):
            gateway.stop()
            raise body_error
    assert caught.value.__context__ is body_error


def test_context_manager_deletes_when_not_ready(client: sandgate.Client, gateway: Gateway) -> None:
    with pytest.raises(sandgate.SandboxNotReady) as caught:
        with client.sandbox("never-ready", ["/nonexistent/program"]):
            pytest.fail("the body ran for a sandbox that is not READY")
    with pytest.raises(sandgate.SandboxNotFound):
        client.get(id=caught.value.sandbox.id)


def test_delete_unreachable_gateway_raises_at_once(
    client: sandgate.Client, gateway: Gateway
) -> None:
    sandbox = client.create("lonely", SLEEP)
    gateway.stop()

    start = time.monotonic()
    with pytest.raises(sandgate.GatewayUnavailable) as caught:
        client.delete("lonely", timeout=60)
    assert caught.value.target == gateway.address
    with pytest.raises(sandgate.GatewayUnavailable):
        client.wait_deleted(sandbox.id, timeout=60)
    with pytest.raises(sandgate.GatewayUnavailable):
        client.get("lonely")
    assert time.monotonic() - start < 5, "an unreachable gateway was retried"


def test_gateway_lost_during_wait_raises_unavailable(
    client: sandgate.Client, gateway: Gateway
) -> None:
    sandbox = client.create("stranded", IGNORE_TERM, grace_period=3, wait_ready=True)
    _, processes = processes_of(gateway, sandbox.id)

    with ThreadPoolExecutor(max_workers=1) as pool:
        deletion = pool.submit(client.delete, "stranded", timeout=4)
        wait_for_phase(client, sandbox.id, Phase.DELETING)
        gateway.stop()
        start = time.monotonic()
        with pytest.raises(sandgate.GatewayUnavailable, match=sandbox.id):
            deletion.result(timeout=30)
    # The retries stop within the delete's 4 s timeout, long before the 30 s window ends.
    assert time.monotonic() - start < 6

    # The deletion it accepted is finished by the restarted gateway.
    gateway.start()
    with sandgate.Client(gateway.address) as restarted:
        assert restarted.wait_deleted(sandbox.id, timeout=30).outcome == DeleteOutcome.DELETED
    assert_all_gone(processes)


def test_retries_end_after_reconnect_window(
    client: sandgate.Client, gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The window is 30 s; a shorter one keeps the test fast and exercises the same code.
    monkeypatch.setattr(sandgate._core, "RECONNECT_WINDOW", 2.0)
    sandbox = client.create("abandoned", IGNORE_TERM, grace_period=3, wait_ready=True)

    with ThreadPoolExecutor(max_workers=1) as pool:
        deletion = pool.submit(client.delete, "abandoned", timeout=60)
        wait_for_phase(client, sandbox.id, Phase.DELETING)
        gateway.stop()
        start = time.monotonic()
        with pytest.raises(sandgate.GatewayUnavailable, match="not back after"):
            deletion.result(timeout=30)
    elapsed = time.monotonic() - start
    assert elapsed < 6, f"retries went on for {elapsed:.1f} s with a 2 s window"


def test_wait_survives_gateway_restart(client: sandgate.Client, gateway: Gateway) -> None:
    sandbox = client.create("resilient", IGNORE_TERM, grace_period=3, wait_ready=True)
    _, processes = processes_of(gateway, sandbox.id)

    with ThreadPoolExecutor(max_workers=1) as pool:
        deletion = pool.submit(client.delete, "resilient", timeout=60)
        wait_for_phase(client, sandbox.id, Phase.DELETING)
        gateway.stop()
        gateway.restart()
        result = deletion.result(timeout=60)

    assert result.outcome == DeleteOutcome.DELETED
    assert result.id == sandbox.id
    assert_all_gone(processes)


def test_watch_timeout_ends_with_its_own_error(client: sandgate.Client) -> None:
    started = time.monotonic()
    events = client.watch(timeout=1)
    assert next(events).type == WatchEventType.SYNCED
    with pytest.raises(sandgate.SandgateError) as raised:
        next(events)
    assert time.monotonic() - started >= 1
    assert raised.value.code == "DEADLINE_EXCEEDED"
    assert "the watch ended after its timeout of 1 s" in raised.value.message


def test_watch_yields_events_and_resumes(client: sandgate.Client) -> None:
    # READY before the watch starts, so that no later change of it enters the stream.
    existing = client.create("existing", SLEEP, wait_ready=True)
    events = client.watch(timeout=EVENT_TIMEOUT)

    first = next(events)
    assert first.type == WatchEventType.ADDED
    assert first.snapshot
    assert first.sandbox is not None and first.sandbox.id == existing.id
    synced = next(events)
    assert synced.type == WatchEventType.SYNCED
    assert synced.sandbox is None

    created = client.create("watched", SLEEP, grace_period=1)
    added = next(events)
    assert added.type == WatchEventType.ADDED
    assert not added.snapshot
    assert added.sandbox is not None and added.sandbox.id == created.id

    client.delete("watched")
    seen = []
    for event in events:
        seen.append(event)
        if event.type == WatchEventType.DELETED:
            break
    events.close()
    assert all(event.sandbox is not None for event in seen)
    assert all(event.sandbox.id == created.id for event in seen if event.sandbox)
    assert WatchEventType.MODIFIED in [event.type for event in seen]
    assert Phase.DELETING in [event.sandbox.phase for event in seen if event.sandbox]
    assert seen[-1].type == WatchEventType.DELETED

    # Resuming after the ADDED event replays the later events, without a snapshot.
    replay = []
    for event in client.watch(resume_revision=added.revision, timeout=EVENT_TIMEOUT):
        replay.append(event)
        if event.type == WatchEventType.SYNCED:
            break
    replayed = [(event.type, event.revision) for event in replay[:-1]]
    assert replayed == [(event.type, event.revision) for event in seen]
    assert not any(event.snapshot for event in replay)


def test_watch_by_name_ends_after_deletion(client: sandgate.Client) -> None:
    client.create("single", SLEEP, grace_period=1)
    done = threading.Event()
    types = []

    def consume() -> None:
        for event in client.watch("single", timeout=EVENT_TIMEOUT):
            types.append(event.type)
            if event.type == WatchEventType.SYNCED:
                done.set()
        done.set()

    consumer = threading.Thread(target=consume)
    consumer.start()
    assert done.wait(EVENT_TIMEOUT)
    client.delete("single")
    consumer.join(EVENT_TIMEOUT)
    assert not consumer.is_alive(), "the watch of one sandbox did not end after its deletion"
    assert types[0] == WatchEventType.ADDED
    assert types[-1] == WatchEventType.DELETED


def test_watch_raises_when_gateway_stops(client: sandgate.Client, gateway: Gateway) -> None:
    events = client.watch(timeout=EVENT_TIMEOUT)
    assert next(events).type == WatchEventType.SYNCED
    gateway.stop()
    with pytest.raises(sandgate.GatewayUnavailable):
        next(events)
