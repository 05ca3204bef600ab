"""The blocking client of the sandgate gateway."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Self

import grpc

from . import _core, _requests
from ._proto import sandgate_pb2 as pb
from ._proto import sandgate_pb2_grpc as pb_grpc
from .models import DeleteOutcome, DeleteResult, Phase, Sandbox, WatchEvent, WatchEventType

logger = logging.getLogger("sandgate")


class Client:
    """A blocking client of one sandgate gateway, for one workspace.

    `target` is the gateway's HOST:PORT or http:// URL. The client opens one gRPC channel and is
    safe to share between threads. Close it with `close()` or use it as a context manager.
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
        self._channel = grpc.insecure_channel(target, options=_core.CHANNEL_OPTIONS)
        self._stub = pb_grpc.SandboxServiceStub(self._channel)

    @property
    def target(self) -> str:
        """The gateway address this client calls."""
        return self._target

    @property
    def workspace(self) -> str:
        """The workspace that names refer to."""
        return self._workspace

    def close(self) -> None:
        """Close the channel. Calls in progress are cancelled and raise SandgateError."""
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _unary(self, method: Any, request: Any, timeout: float) -> Any:
        try:
            return method(request, timeout=timeout)
        except grpc.RpcError as error:
            raise _core.map_error(error, self._target) from None

    # --- Create and read.

    def create(
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
        """Create a sandbox named `name` that runs `command` (program first).

        `grace_period` is the seconds between SIGTERM and SIGKILL when it is deleted (the
        gateway's default is 10). `image` is for drivers that run containers; the process driver
        rejects it. With `wait_ready`, return only once the sandbox is READY, and raise
        SandboxNotReady if it reaches EXITED, ERROR or DELETING first or `timeout` seconds pass.
        The sandbox is left in place in that case: delete it, or use `sandbox()`, which does.

        Raises SandboxAlreadyExists if a live sandbox has the name, and SandboxStillDeleting if a
        sandbox with the name is still being deleted.
        """
        request = _requests.create_request(
            self._workspace, name, command, image, labels, env, grace_period, timeout
        )
        _core.check_flag("wait_ready", wait_ready)
        deadline = time.monotonic() + timeout
        sandbox = _core.to_sandbox(self._unary(self._stub.CreateSandbox, request, timeout))
        if not wait_ready:
            return sandbox
        return self._wait_ready(sandbox, deadline)

    def wait_until_ready(self, id: str, timeout: float = 60.0) -> Sandbox:
        """Wait until the sandbox with this id is READY and return it.

        Raises SandboxNotReady if it reaches EXITED or DELETING, stays ERROR for 5 s (ERROR can
        recover, for example when a Kubernetes condition clears), is removed, or `timeout`
        seconds pass first.
        """
        _core.check_id(id)
        _core.check_timeout("timeout", timeout)
        deadline = time.monotonic() + timeout
        sandbox = self.get(id=id)
        return self._wait_ready(sandbox, deadline)

    def _wait_ready(self, sandbox: Sandbox, deadline: float) -> Sandbox:
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
                for message in stream:
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

    def get(self, name: str | None = None, *, id: str | None = None) -> Sandbox:
        """Return the sandbox with this name (in the client's workspace) or this id.

        Give exactly one of `name` and `id`. Raises SandboxNotFound if none matches, also for a
        sandbox that was removed.
        """
        target = _core.sandbox_ref(self._workspace, name, id)
        request = pb.GetSandboxRequest(target=target)
        return _core.to_sandbox(
            self._unary(self._stub.GetSandbox, request, _core.UNARY_RPC_TIMEOUT)
        )

    def list(
        self,
        label_selector: str | None = None,
        phase: Phase | str | Iterable[Phase | str] | None = None,
        all_workspaces: bool = False,
        *,
        page_size: int = 100,
    ) -> Iterator[Sandbox]:
        """Iterate over the sandboxes of the client's workspace, or of all workspaces.

        `label_selector` is a Kubernetes-style selector such as "team=ml,tier!=batch". `phase` is
        one phase or several. Pages of `page_size` (1 to 1000) are fetched as the iteration goes,
        ordered by workspace and name. Arguments are checked at once, before the first page.
        """
        request = _requests.list_request(
            self._workspace, label_selector, phase, all_workspaces, page_size
        )
        return self._list_pages(request)

    def _list_pages(self, request: pb.ListSandboxesRequest) -> Iterator[Sandbox]:
        while True:
            page = self._unary(self._stub.ListSandboxes, request, _core.UNARY_RPC_TIMEOUT)
            for message in page.sandboxes:
                yield _core.to_sandbox(message)
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    # --- Delete and wait.

    def delete(
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
        """Delete the sandbox with this name or id, and by default wait until it is gone.

        The gateway records the deletion first. With `wait`, the client then waits by the
        sandbox's id, so a new sandbox created under the same name cannot end the wait. A delete
        of a sandbox already being deleted joins that deletion. `grace_period` (seconds) and
        `force` can only hasten a deletion under way.

        Returns the outcome: DELETED once every process is gone, ACCEPTED with `wait=False`,
        or ALREADY_ABSENT with `ignore_not_found` when nothing matched. Raises DeletionTimeout
        (with the id and what the deletion waits for) after `timeout` seconds. Raises
        GatewayUnavailable at once if the gateway cannot be reached at the start, and then
        nothing was recorded. If the connection is lost during the wait, the client retries by
        id for up to 30 s (never past `timeout`) before it raises GatewayUnavailable. After a
        timeout or a lost connection the deletion goes on in the gateway.
        """
        request = _requests.delete_request(
            self._workspace, name, id, wait, timeout, grace_period, force, ignore_not_found
        )
        deadline = time.monotonic() + timeout
        try:
            response = self._stub.DeleteSandbox(request, timeout=_core.UNARY_RPC_TIMEOUT)
        except grpc.RpcError as error:
            if _core.is_unavailable(error):
                raise _core.gateway_unavailable(
                    self._target, error, "the deletion was not requested"
                ) from None
            raise _core.map_error(error, self._target) from None
        result = _core.to_delete_result(response)
        if not wait or result.outcome != DeleteOutcome.ACCEPTED:
            return result
        return self._wait_removed(result.id, deadline, gateway_reached=True)

    def wait_deleted(self, id: str, timeout: float = 300.0) -> DeleteResult:
        """Wait until the sandbox with this id is confirmed gone, without deleting it.

        Returns at once with outcome DELETED for an id that was already removed. Raises
        SandboxNotFound for an id the gateway never had (or whose removal record expired),
        DeletionTimeout after `timeout` seconds, and GatewayUnavailable as `delete` does.
        """
        _core.check_id(id)
        timeout = _core.check_timeout("timeout", timeout)
        return self._wait_removed(id, time.monotonic() + timeout, gateway_reached=False)

    def _wait_removed(
        self, sandbox_id: str, deadline: float, gateway_reached: bool
    ) -> DeleteResult:
        """Call WaitSandboxDeleted by id until it returns, retrying while the gateway is away.

        Retries stop RECONNECT_WINDOW seconds after the connection was lost, and early enough
        that the last wait, of at least the gateway's minimum of 1 s, ends by `deadline`.
        """
        lost_at: float | None = None
        retry_delay = _core.INITIAL_RETRY_DELAY
        while True:
            wait_for = max(deadline - time.monotonic(), _core.MIN_WAIT_TIMEOUT)
            request = pb.WaitSandboxDeletedRequest(
                id=sandbox_id, timeout=_core.to_duration(wait_for)
            )
            try:
                response = self._stub.WaitSandboxDeleted(
                    request, timeout=wait_for + _core.RPC_DEADLINE_MARGIN
                )
                return _core.to_delete_result(response)
            except grpc.RpcError as error:
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
                time.sleep(retry_delay)
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
    ) -> Iterator[WatchEvent]:
        """Iterate over the events of the client's workspace, all workspaces, or one sandbox.

        The stream starts with an ADDED event (snapshot=True) for each current sandbox and one
        SYNCED event, then sends ADDED, MODIFIED and DELETED as changes happen. To resume after
        a lost connection, pass the revision of the last event seen as `resume_revision`: the
        gateway replays the events after it, or sends a fresh snapshot if it no longer has them.
        With `name` or `id` the stream ends after that sandbox's DELETED event. To resume a
        watch of one sandbox, pass the `id` of its events rather than the name: a name may belong
        to a new sandbox by then, while an id of a removed sandbox yields its DELETED event.
        `timeout` ends the stream after that many seconds (None: never) by raising
        SandgateError with code DEADLINE_EXCEEDED. Break out of the loop, or call `close()` on the iterator, to stop.
        """
        request = _requests.watch_request(
            self._workspace, name, id, all_workspaces, resume_revision, timeout
        )
        return self._watch_events(request, timeout)

    def _watch_events(
        self, request: pb.WatchSandboxesRequest, timeout: float | None
    ) -> Iterator[WatchEvent]:
        stream = self._stub.WatchSandboxes(request, timeout=timeout)
        try:
            for message in stream:
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

    @contextlib.contextmanager
    def sandbox(
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
    ) -> Iterator[Sandbox]:
        """Create a sandbox, wait until READY, yield it, and delete it on exit.

        On exit, also when the body or the wait for READY raised, the sandbox is deleted by id
        and the exit waits until every process is gone. A failed delete is always raised. If
        the body raised too, the delete error is raised with the body's exception as its
        `__context__`, so the traceback shows both.
        """
        _core.check_timeout("delete_timeout", delete_timeout)
        created = self.create(
            name,
            command,
            image=image,
            labels=labels,
            env=env,
            grace_period=grace_period,
            timeout=ready_timeout,
        )
        try:
            ready = self._wait_ready(created, time.monotonic() + ready_timeout)
            yield ready
        except BaseException as body_error:
            try:
                self.delete(id=created.id, timeout=delete_timeout)
            except BaseException as delete_error:
                _requests.attach_context(delete_error, body_error)
                raise
            raise
        self.delete(id=created.id, timeout=delete_timeout)


__all__ = ["Client"]
