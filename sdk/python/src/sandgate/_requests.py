"""Request builders and READY checks shared by the blocking and the asyncio client.

Each builder checks its arguments first and raises InvalidArgument before any call.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from . import _core
from ._proto import sandgate_pb2 as pb
from .errors import InvalidArgument, SandboxNotReady
from .models import Phase, Sandbox


def create_request(
    workspace: str,
    name: str,
    command: Sequence[str],
    image: str | None,
    labels: Mapping[str, str] | None,
    env: Mapping[str, str] | None,
    grace_period: float | None,
    timeout: float,
) -> pb.CreateSandboxRequest:
    _core.check_dns_label("name", name)
    argv = _core.check_command(command)
    if image is not None and not isinstance(image, str):
        raise InvalidArgument(f"image must be a str or None, not {image!r}")
    label_map = _core.check_string_map("labels", labels)
    env_map = _core.check_string_map("env", env)
    grace = _core.check_grace_period(grace_period)
    _core.check_timeout("timeout", timeout)
    spec = pb.SandboxSpec(command=argv, env=env_map, image=image or "")
    if grace is not None:
        spec.grace_period.CopyFrom(_core.to_duration(grace))
    return pb.CreateSandboxRequest(workspace=workspace, name=name, labels=label_map, spec=spec)


def list_request(
    workspace: str,
    label_selector: str | None,
    phase: Phase | str | Iterable[Phase | str] | None,
    all_workspaces: bool,
    page_size: int,
) -> pb.ListSandboxesRequest:
    if label_selector is not None and not isinstance(label_selector, str):
        raise InvalidArgument(
            f"label_selector must be a str such as 'team=ml', not {label_selector!r}"
        )
    phases = _core.check_phases(phase)
    _core.check_flag("all_workspaces", all_workspaces)
    if isinstance(page_size, bool) or not isinstance(page_size, int) or not 1 <= page_size <= 1000:
        raise InvalidArgument(f"invalid page_size {page_size!r}: use 1 to 1000")
    request = pb.ListSandboxesRequest(
        workspace=workspace,
        all_workspaces=all_workspaces,
        label_selector=label_selector or "",
        page_size=page_size,
    )
    request.phases.extend(phases)
    return request


def delete_request(
    workspace: str,
    name: str | None,
    id: str | None,
    wait: bool,
    timeout: float,
    grace_period: float | None,
    force: bool,
    ignore_not_found: bool,
) -> pb.DeleteSandboxRequest:
    target = _core.sandbox_ref(workspace, name, id)
    _core.check_flag("wait", wait)
    _core.check_timeout("timeout", timeout)
    grace = _core.check_grace_period(grace_period)
    _core.check_flag("force", force)
    _core.check_flag("ignore_not_found", ignore_not_found)
    # The deletion is requested without waiting; the wait is a separate call by id.
    request = pb.DeleteSandboxRequest(
        target=target, wait=False, force=force, ignore_not_found=ignore_not_found
    )
    if grace is not None:
        request.grace_period.CopyFrom(_core.to_duration(grace))
    return request


def watch_request(
    workspace: str,
    name: str | None,
    id: str | None,
    all_workspaces: bool,
    resume_revision: int,
    timeout: float | None,
) -> pb.WatchSandboxesRequest:
    _core.check_flag("all_workspaces", all_workspaces)
    if (
        isinstance(resume_revision, bool)
        or not isinstance(resume_revision, int)
        or resume_revision < 0
    ):
        raise InvalidArgument(
            f"invalid resume_revision {resume_revision!r}: use the revision of an event, or 0"
        )
    if timeout is not None:
        _core.check_timeout("timeout", timeout)
    request = pb.WatchSandboxesRequest(
        workspace=workspace, all_workspaces=all_workspaces, resume_revision=resume_revision
    )
    if name is not None and id is not None:
        raise InvalidArgument(f"give either name or id, not both (name={name!r}, id={id!r})")
    if name is not None:
        request.name = _core.check_dns_label("name", name)
    elif id is not None:
        request.id = _core.check_id(id)
    return request


ERROR_SETTLE = 5.0
"""Seconds a wait for READY keeps waiting on an ERROR sandbox, because ERROR can recover."""


def raise_if_not_starting(sandbox: Sandbox) -> None:
    if sandbox.phase in (Phase.PROVISIONING, Phase.UNKNOWN, Phase.READY):
        return
    raise not_ready(sandbox)


def not_ready(sandbox: Sandbox) -> SandboxNotReady:
    return SandboxNotReady(
        f"sandbox {sandbox.name!r} (id {sandbox.id}) is {sandbox.phase.value}, not READY: "
        f"{sandbox.phase_reason}",
        sandbox=sandbox,
    )


def error_deadline(sandbox: Sandbox, since: float | None, now: float) -> float | None:
    """Return until when a wait for READY waits on `sandbox`, or None if it is not ERROR.

    EXITED and DELETING end the wait at once. ERROR ends it after `ERROR_SETTLE` seconds
    without recovery, because a sandbox's condition can go from ERROR back to READY.
    """
    if sandbox.phase == Phase.ERROR:
        return since if since is not None else now + ERROR_SETTLE
    raise_if_not_starting(sandbox)
    return None


def removed_while_waiting(sandbox: Sandbox) -> SandboxNotReady:
    return SandboxNotReady(
        f"sandbox {sandbox.name!r} (id {sandbox.id}) was removed before it became READY",
        sandbox=sandbox,
    )


def ready_timeout(sandbox: Sandbox) -> SandboxNotReady:
    return SandboxNotReady(
        f"sandbox {sandbox.name!r} (id {sandbox.id}) is still {sandbox.phase.value} after the "
        f"timeout: {sandbox.phase_reason}",
        sandbox=sandbox,
        code="DEADLINE_EXCEEDED",
    )


def attach_context(delete_error: BaseException, body_error: BaseException) -> None:
    """Make the body's exception the shown `__context__` of the delete error raised on exit.

    The SDK raises its errors `from None`, which would hide the body's exception otherwise.
    """
    if delete_error is not body_error:
        delete_error.__context__ = body_error
        delete_error.__suppress_context__ = False
