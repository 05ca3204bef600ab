"""Tests of the asyncio client against a real gateway on the process driver."""

from __future__ import annotations

import asyncio
import time

import pytest

import sandgate
from sandgate import DeleteOutcome, Phase, WatchEventType
from support import EVENT_TIMEOUT, IGNORE_TERM, SLEEP, Gateway, assert_all_gone, processes_of

pytestmark = pytest.mark.asyncio


async def wait_for_phase_async(
    client: sandgate.AsyncClient, sandbox_id: str, phase: Phase
) -> sandgate.Sandbox:
    """Watch the sandbox until it is in `phase`, and return it."""
    async for event in client.watch(id=sandbox_id, timeout=EVENT_TIMEOUT):
        if event.sandbox is not None and event.sandbox.phase == phase:
            return event.sandbox
    raise AssertionError(f"sandbox {sandbox_id} was removed before it reached {phase}")


async def test_create_get_list_delete(gateway: Gateway) -> None:
    async with sandgate.AsyncClient(gateway.address) as client:
        created = await client.create("web", SLEEP, labels={"team": "ml"}, wait_ready=True)
        assert created.phase == Phase.READY
        assert (await client.get("web")).id == created.id
        assert (await client.get(id=created.id)).labels == {"team": "ml"}
        assert [s.id async for s in client.list(label_selector="team=ml", page_size=1)] == [
            created.id
        ]

        result = await client.delete("web")
        assert result.outcome == DeleteOutcome.DELETED
        assert result.id == created.id
        with pytest.raises(sandgate.SandboxNotFound):
            await client.get(id=created.id)


async def test_delete_waits_until_processes_gone(gateway: Gateway) -> None:
    async with sandgate.AsyncClient(gateway.address) as client:
        sandbox = await client.create("stubborn", IGNORE_TERM, grace_period=2, wait_ready=True)
        _, processes = processes_of(gateway, sandbox.id)
        start = time.monotonic()
        result = await client.delete(id=sandbox.id, timeout=30)
        assert result.outcome == DeleteOutcome.DELETED
        assert time.monotonic() - start >= 1.9
        assert_all_gone(processes)


async def test_delete_timeout_raises_deletion_timeout(gateway: Gateway) -> None:
    async with sandgate.AsyncClient(gateway.address) as client:
        sandbox = await client.create("slow", IGNORE_TERM, grace_period=3, wait_ready=True)
        _, processes = processes_of(gateway, sandbox.id)
        with pytest.raises(sandgate.DeletionTimeout) as caught:
            await client.delete("slow", timeout=1)
        assert caught.value.id == sandbox.id
        assert caught.value.phase == Phase.DELETING
        assert caught.value.reason

        result = await client.wait_deleted(sandbox.id, timeout=30)
        assert result.outcome == DeleteOutcome.DELETED
        assert_all_gone(processes)


async def test_concurrent_delete_joins_first(gateway: Gateway) -> None:
    async with sandgate.AsyncClient(gateway.address) as client:
        sandbox = await client.create("shared", IGNORE_TERM, grace_period=2, wait_ready=True)
        _, processes = processes_of(gateway, sandbox.id)
        first = asyncio.create_task(client.delete("shared", timeout=30))
        await wait_for_phase_async(client, sandbox.id, Phase.DELETING)
        second = asyncio.create_task(client.delete("shared", timeout=30))
        results = await asyncio.wait_for(asyncio.gather(first, second), 60)
        assert [result.outcome for result in results] == [DeleteOutcome.DELETED] * 2
        assert {result.id for result in results} == {sandbox.id}
        assert_all_gone(processes)


async def test_context_manager_deletes_when_body_raises(gateway: Gateway) -> None:
    async with sandgate.AsyncClient(gateway.address) as client:
        start = time.monotonic()
        with pytest.raises(RuntimeError, match="body failed"):
            async with client.sandbox("failing", IGNORE_TERM, grace_period=2) as sandbox:
                assert sandbox.phase == Phase.READY
                _, processes = processes_of(gateway, sandbox.id)
                raise RuntimeError("body failed")
        assert time.monotonic() - start >= 1.9
        assert_all_gone(processes)
        with pytest.raises(sandgate.SandboxNotFound):
            await client.get(id=sandbox.id)


async def test_context_manager_deletes_when_cancelled(gateway: Gateway) -> None:
    async with sandgate.AsyncClient(gateway.address) as client:
        entered = asyncio.Event()
        seen: dict[str, sandgate.Sandbox] = {}

        async def body() -> None:
            async with client.sandbox("cancelled", IGNORE_TERM, grace_period=1) as sandbox:
                seen["sandbox"] = sandbox
                entered.set()
                await asyncio.sleep(1000)

        task = asyncio.create_task(body())
        await asyncio.wait_for(entered.wait(), EVENT_TIMEOUT)
        _, processes = processes_of(gateway, seen["sandbox"].id)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 30)
        assert_all_gone(processes)
        with pytest.raises(sandgate.SandboxNotFound):
            await client.get(id=seen["sandbox"].id)


async def test_context_manager_raises_delete_failure(gateway: Gateway) -> None:
    async with sandgate.AsyncClient(gateway.address) as client:
        body_error = ValueError("body failed")
        with pytest.raises(sandgate.GatewayUnavailable) as caught:
            async with client.sandbox("orphaned", SLEEP):
                gateway.stop()
                raise body_error
        assert caught.value.__context__ is body_error


async def test_unreachable_gateway_raises_at_once(gateway: Gateway) -> None:
    async with sandgate.AsyncClient(gateway.address) as client:
        sandbox = await client.create("lonely", SLEEP)
        gateway.stop()
        start = time.monotonic()
        with pytest.raises(sandgate.GatewayUnavailable):
            await client.delete("lonely", timeout=60)
        with pytest.raises(sandgate.GatewayUnavailable):
            await client.wait_deleted(sandbox.id, timeout=60)
        assert time.monotonic() - start < 5


async def test_wait_survives_gateway_restart(gateway: Gateway) -> None:
    async with sandgate.AsyncClient(gateway.address) as client:
        sandbox = await client.create("resilient", IGNORE_TERM, grace_period=3, wait_ready=True)
        _, processes = processes_of(gateway, sandbox.id)
        deletion = asyncio.create_task(client.delete("resilient", timeout=60))
        await wait_for_phase_async(client, sandbox.id, Phase.DELETING)
        await asyncio.to_thread(gateway.stop)
        await asyncio.to_thread(gateway.restart)
        result = await asyncio.wait_for(deletion, 60)
        assert result.outcome == DeleteOutcome.DELETED
        assert_all_gone(processes)


async def test_watch_yields_events_and_resumes(gateway: Gateway) -> None:
    async with sandgate.AsyncClient(gateway.address) as client:
        events = client.watch(timeout=EVENT_TIMEOUT)
        synced = await anext(events)
        assert synced.type == WatchEventType.SYNCED

        created = await client.create("watched", SLEEP, grace_period=1)
        added = await anext(events)
        assert added.type == WatchEventType.ADDED
        assert added.sandbox is not None and added.sandbox.id == created.id

        await client.delete("watched")
        seen = []
        async for event in events:
            seen.append(event)
            if event.type == WatchEventType.DELETED:
                break
        await events.aclose()
        assert WatchEventType.MODIFIED in [event.type for event in seen]
        assert seen[-1].type == WatchEventType.DELETED

        replay = []
        async for event in client.watch(resume_revision=added.revision, timeout=EVENT_TIMEOUT):
            replay.append(event)
            if event.type == WatchEventType.SYNCED:
                break
        assert [e.revision for e in replay[:-1]] == [e.revision for e in seen]
