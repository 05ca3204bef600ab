"""The asyncio client of the sandgate gateway, with the same calls as `sandgate.Client`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any, Self

import grpc
import grpc.aio

from . import _core, _requests
from ._proto import sandgate_pb2 as pb
from ._proto import sandgate_pb2_grpc as pb_grpc
from .models import DeleteOutcome, DeleteResult, Phase, Sandbox, WatchEvent, WatchEventType

logger = logging.getLogger("sandgate")


class AsyncClient:
    """An asyncio client of one sandgate gateway, for one workspace.

    Create it inside a running event loop and use it only from that loop. Close it with
    `await client.close()` or use it with `async with`. Arguments, results and errors are those
    of `sandgate.Client`.
    """

    def __init__(
        self,
        target: str | None = None,
        workspace: str = _core.DEFAULT_WORKSPACE,
    ) -> None:
        """Open a channel to the gateway at `target` for sandboxes of `workspace`.

        `target` is HOST:PORT or an http:// URL. Without it, the client uses $SANDGATE_SERVER
        when that is set, and else 127.0.0.1:7878. No call is made here: an unreachable gateway
        is reported by the first call.
        """
        target = _core.resolve_target(target)
        self._target = target
        self._workspace = _core.check_dns_label("workspace", workspace)
        self._channel = grpc.aio.insecure_channel(target, options=_core.CHANNEL_OPTIONS)
        self._stub = pb_grpc.SandboxServiceStub(self._channel)

    @property
    def target(self) -> str:
        """The gateway address this client calls."""
        return self._target

    @property
    def workspace(self) -> str:
        """The workspace that names refer to."""
        return self._workspace

    async def close(self) -> None:
        """Close the channel. Calls in progress are cancelled and raise SandgateError."""
        await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _unary(self, method: Any, request: Any, timeout: float) -> Any:
        try:
            return await method(request, timeout=timeout)
        except grpc.RpcError as error:
            raise _core.map_error(error, self._target) from None

    # --- Create and read.

    async def create(
        self,
        name: str,
        command: Sequence[str],
        *,
        image: str | None = None,
        labels: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        grace_period: float | None = None,
        wait_ready: bool = False,
        timeout: float = 60.0,
    ) -> Sandbox:
        """Create a sandbox named `name` that runs `command`; see `Client.create`."""
        request = _requests.create_request(
            self._workspace, name, command, image, labels, env, grace_period, timeout
        )
        _core.check_flag("wait_ready", wait_ready)
        deadline = time.monotonic() + timeout
        response = await self._unary(self._stub.CreateSandbox, request, timeout)
        sandbox = _core.to_sandbox(response)
        if not wait_ready:
            return sandbox
        return await self._wait_ready(sandbox, deadline)

    async def wait_until_ready(self, id: str, timeout: float = 60.0) -> Sandbox:
        """Wait until the sandbox with this id is READY; see `Client.wait_until_ready`."""
        _core.check_id(id)
        _core.check_timeout("timeout", timeout)
        deadline = time.monotonic() + timeout
        sandbox = await self.get(id=id)
        return await self._wait_ready(sandbox, deadline)

    async def _wait_ready(self, sandbox: Sandbox, deadline: float) -> Sandbox:
        request = pb.WatchSandboxesRequest(id=sandbox.id)
        error_until = _requests.error_deadline(sandbox, None, time.monotonic())
        while True:
            if sandbox.phase == Phase.READY:
                return sandbox
            # While ERROR, the watch runs only until the settle time ends, then the wait gives up.
            stream_deadline = deadline if error_until is None else min(deadline, error_until)
            remaining = max(stream_deadline - time.monotonic(), 0.001)
            stream = self._stub.WatchSandboxes(request, timeout=remaining)
            reopen = False
            try:
                async for message in stream:
                    event = _core.to_watch_event(message)
                    if event is None or event.sandbox is None:
                        continue
                    if event.type == WatchEventType.DELETED:
                        raise _requests.removed_while_waiting(event.sandbox)
                    sandbox = event.sandbox
                    if sandbox.phase == Phase.READY:
                        return sandbox
                    next_until = _requests.error_deadline(sandbox, error_until, time.monotonic())
                    if (next_until is None) != (error_until is None):
                        error_until = next_until
                        reopen = True
                        break
            except grpc.RpcError as error:
                if not _core.is_deadline_exceeded(error):
                    raise _core.map_error(error, self._target) from None
                if error_until is not None and time.monotonic() < deadline:
                    raise _requests.not_ready(sandbox) from None
                raise _requests.ready_timeout(sandbox) from None
            finally:
                stream.cancel()
            if not reopen:
                raise _requests.removed_while_waiting(sandbox)

    async def get(self, name: str | None = None, *, id: str | None = None) -> Sandbox:
        """Return the sandbox with this name or id; see `Client.get`."""
        target = _core.sandbox_ref(self._workspace, name, id)
        request = pb.GetSandboxRequest(target=target)
        response = await self._unary(self._stub.GetSandbox, request, _core.UNARY_RPC_TIMEOUT)
        return _core.to_sandbox(response)

    def list(
        self,
        label_selector: str | None = None,
        phase: Phase | str | Iterable[Phase | str] | None = None,
        all_workspaces: bool = False,
        *,
        page_size: int = 100,
    ) -> AsyncIterator[Sandbox]:
        """Iterate with `async for` over sandboxes, page by page; see `Client.list`.

        Arguments are checked at once, when `list` is called.
        """
        request = _requests.list_request(
            self._workspace, label_selector, phase, all_workspaces, page_size
        )
        return self._list_pages(request)

    async def _list_pages(self, request: pb.ListSandboxesRequest) -> AsyncIterator[Sandbox]:
        while True:
            page = await self._unary(self._stub.ListSandboxes, request, _core.UNARY_RPC_TIMEOUT)
            for message in page.sandboxes:
                yield _core.to_sandbox(message)
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    # --- Delete and wait.

    async def delete(
        self,
        name: str | None = None,
        *,
        id: str | None = None,
        wait: bool = True,
        timeout: float = 300.0,
        grace_period: float | None = None,
        force: bool = False,
        ignore_not_found: bool = False,
    ) -> DeleteResult:
        """Delete the sandbox with this name or id and by default wait; see `Client.delete`."""
        request = _requests.delete_request(
            self._workspace, name, id, wait, timeout, grace_period, force, ignore_not_found
        )
        deadline = time.monotonic() + timeout
        try:
            response = await self._stub.DeleteSandbox(request, timeout=_core.UNARY_RPC_TIMEOUT)
        except grpc.RpcError as error:
            if _core.is_unavailable(error):
                raise _core.gateway_unavailable(
                    self._target, error, "the deletion was not requested"
                ) from None
            raise _core.map_error(error, self._target) from None
        result = _core.to_delete_result(response)
        if not wait or result.outcome != DeleteOutcome.ACCEPTED:
            return result
        return await self._wait_removed(result.id, deadline, gateway_reached=True)

    async def wait_deleted(self, id: str, timeout: float = 300.0) -> DeleteResult:
        """Wait until the sandbox with this id is confirmed gone; see `Client.wait_deleted`."""
        _core.check_id(id)
        timeout = _core.check_timeout("timeout", timeout)
        return await self._wait_removed(id, time.monotonic() + timeout, gateway_reached=False)

    async def _wait_removed(
        self, sandbox_id: str, deadline: float, gateway_reached: bool
    ) -> DeleteResult:
        """Call WaitSandboxDeleted by id until it returns; see `Client._wait_removed`."""
        lost_at: float | None = None
        retry_delay = _core.INITIAL_RETRY_DELAY
        while True:
            wait_for = max(deadline - time.monotonic(), _core.MIN_WAIT_TIMEOUT)
            request = pb.WaitSandboxDeletedRequest(
                id=sandbox_id, timeout=_core.to_duration(wait_for)
            )
            try:
                response = await self._stub.WaitSandboxDeleted(
                    request, timeout=wait_for + _core.RPC_DEADLINE_MARGIN
                )
                return _core.to_delete_result(response)
            except grpc.aio.AioRpcError as error:
                if _core.is_deadline_exceeded(error):
                    metadata = error.trailing_metadata()
                    raise _core.deletion_timeout(error, sandbox_id, metadata) from None
                if not _core.is_unavailable(error):
                    raise _core.map_error(error, self._target) from None
                if not gateway_reached and _core.is_connect_failure(error):
                    raise _core.gateway_unavailable(
                        self._target, error, f"could not start waiting for sandbox {sandbox_id}"
                    ) from None
                gateway_reached = True
                now = time.monotonic()
                if lost_at is None:
                    lost_at = now
                retry_until = min(
                    lost_at + _core.RECONNECT_WINDOW, deadline - _core.MIN_WAIT_TIMEOUT
                )
                if now + retry_delay > retry_until:
                    raise _core.gateway_unavailable(
                        self._target,
                        error,
                        f"lost while waiting for the deletion of sandbox {sandbox_id} and not "
                        f"back after {now - lost_at:.1f} s; the deletion continues when the "
                        f"gateway runs again, call wait_deleted({sandbox_id!r})",
                    ) from None
                # The first loss is a warning, and the retries that follow are logged at DEBUG.
                logger.log(
                    logging.WARNING if now == lost_at else logging.DEBUG,
                    "sandgate gateway at %s unavailable while waiting for sandbox %s: %s; "
                    "retrying in %.1f s for up to %.0f s",
                    self._target,
                    sandbox_id,
                    _core.status_message(error),
                    retry_delay,
                    retry_until - now,
                )
                await asyncio.sleep(retry_delay)
                retry_delay = min(retry_delay * 2, _core.MAX_RETRY_DELAY)

    # --- Watch.

    def watch(
        self,
        name: str | None = None,
        *,
        id: str | None = None,
        all_workspaces: bool = False,
        resume_revision: int = 0,
        timeout: float | None = None,
    ) -> AsyncIterator[WatchEvent]:
        """Iterate with `async for` over watch events; see `Client.watch`.

        Arguments are checked at once, when `watch` is called. Break out of the loop, or call
        `await events.aclose()`, to stop the stream.
        """
        request = _requests.watch_request(
            self._workspace, name, id, all_workspaces, resume_revision, timeout
        )
        return self._watch_events(request, timeout)

    async def _watch_events(
        self, request: pb.WatchSandboxesRequest, timeout: float | None
    ) -> AsyncIterator[WatchEvent]:
        stream = self._stub.WatchSandboxes(request, timeout=timeout)
        try:
            async for message in stream:
                event = _core.to_watch_event(message)
                if event is not None:
                    yield event
        except grpc.RpcError as error:
            if timeout is not None and _core.is_deadline_exceeded(error):
                raise _core.watch_timed_out(timeout) from None
            raise _core.map_error(error, self._target) from None
        finally:
            stream.cancel()

    # --- Scoped sandboxes.

    @contextlib.asynccontextmanager
    async def sandbox(
        self,
        name: str,
        command: Sequence[str],
        *,
        image: str | None = None,
        labels: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        grace_period: float | None = None,
        ready_timeout: float = 60.0,
        delete_timeout: float = 300.0,
    ) -> AsyncIterator[Sandbox]:
        """Create a sandbox, wait until READY, yield it, and delete it on exit.

        The exit deletes and waits also when the body raised or was cancelled, and a
        cancellation during that wait is raised again after it. See `Client.sandbox` for how a
        failed delete is raised.
        """
        _core.check_timeout("delete_timeout", delete_timeout)
        created = await self.create(
            name,
            command,
            image=image,
            labels=labels,
            env=env,
            grace_period=grace_period,
            timeout=ready_timeout,
        )
        try:
            ready = await self._wait_ready(created, time.monotonic() + ready_timeout)
            yield ready
        except BaseException as body_error:
            # The delete is shielded so that a cancelled body still waits until it is gone.
            try:
                await _shielded(self.delete(id=created.id, timeout=delete_timeout))
            except BaseException as delete_error:
                _requests.attach_context(delete_error, body_error)
                raise
            raise
        await _shielded(self.delete(id=created.id, timeout=delete_timeout))


async def _shielded(call: Any) -> Any:
    """Await `call` to the end even if the awaiting task is cancelled meanwhile.

    A cancellation that arrives during the call is raised again once the call has finished.
    """
    task = asyncio.ensure_future(call)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                raise
            cancelled = True
            continue
        if cancelled:
            raise asyncio.CancelledError
        return result


__all__ = ["AsyncClient"]
