"""Argument checks, message conversions and the mapping of gRPC errors, shared by both clients."""

from __future__ import annotations

import math
import os
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from ._proto import sandgate_pb2 as pb
from .errors import (
    DeletionTimeout,
    GatewayUnavailable,
    InvalidArgument,
    SandboxAlreadyExists,
    SandboxNotFound,
    SandboxStillDeleting,
    SandgateError,
)
from .models import DeleteOutcome, DeleteResult, Phase, Sandbox, WatchEvent, WatchEventType

DEFAULT_TARGET = "127.0.0.1:7878"
DEFAULT_WORKSPACE = "default"
SERVER_ENV = "SANDGATE_SERVER"


def resolve_target(target: str | None) -> str:
    """Return the HOST:PORT to dial for `target`.

    None means $SANDGATE_SERVER when it is set and not empty, as for the CLI, and else
    127.0.0.1:7878. An http:// URL, as the CLI takes, is reduced to its HOST:PORT.
    """
    if target is None:
        target = os.environ.get(SERVER_ENV) or DEFAULT_TARGET
    if not isinstance(target, str) or not target:
        raise InvalidArgument(f"target must be a HOST:PORT string, not {target!r}")
    if target.startswith("https://"):
        raise InvalidArgument(
            f"invalid target {target!r}: the gateway serves plain HTTP/2 on loopback, "
            "so use HOST:PORT or an http:// URL"
        )
    address = target.removeprefix("http://").rstrip("/")
    if not address or "/" in address:
        raise InvalidArgument(
            f"invalid target {target!r}: use HOST:PORT, such as 127.0.0.1:7878, or an "
            "http:// URL with no path"
        )
    return address

MIN_WAIT_TIMEOUT = 1.0
MAX_WAIT_TIMEOUT = 3600.0
MAX_GRACE_PERIOD = 3600.0

# Deadline of calls that do not wait for a deletion or for READY.
UNARY_RPC_TIMEOUT = 30.0
# Extra time a waiting call's RPC deadline allows beyond the wait's own timeout, so that the
# gateway's DEADLINE_EXCEEDED status, which contains what the deletion waits for, arrives first.
RPC_DEADLINE_MARGIN = 5.0
# How long a wait keeps retrying by id after the connection to the gateway was lost.
RECONNECT_WINDOW = 30.0
INITIAL_RETRY_DELAY = 0.2
MAX_RETRY_DELAY = 2.0

# The channel's own reconnect backoff. gRPC's default starts at 1 s and grows to 120 s, which
# could keep a channel failing calls long after the gateway is back within RECONNECT_WINDOW.
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
]

DELETION_STATUS_TYPE_URL = "type.googleapis.com/sandgate.v1.DeletionStatus"
STATUS_DETAILS_KEY = "grpc-status-details-bin"

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_HOLDER_ID = re.compile(r"\(id ([0-9a-fA-F-]{36})")

_PHASE_FROM_PROTO: dict[int, Phase] = {
    pb.SANDBOX_PHASE_PROVISIONING: Phase.PROVISIONING,
    pb.SANDBOX_PHASE_READY: Phase.READY,
    pb.SANDBOX_PHASE_EXITED: Phase.EXITED,
    pb.SANDBOX_PHASE_ERROR: Phase.ERROR,
    pb.SANDBOX_PHASE_UNKNOWN: Phase.UNKNOWN,
    pb.SANDBOX_PHASE_DELETING: Phase.DELETING,
}
_PHASE_TO_PROTO: dict[Phase, int] = {phase: number for number, phase in _PHASE_FROM_PROTO.items()}
_OUTCOME_FROM_PROTO: dict[int, DeleteOutcome] = {
    pb.DELETE_OUTCOME_ACCEPTED: DeleteOutcome.ACCEPTED,
    pb.DELETE_OUTCOME_DELETED: DeleteOutcome.DELETED,
    pb.DELETE_OUTCOME_ALREADY_ABSENT: DeleteOutcome.ALREADY_ABSENT,
}
_EVENT_TYPE_FROM_PROTO: dict[int, WatchEventType] = {
    pb.WATCH_EVENT_TYPE_ADDED: WatchEventType.ADDED,
    pb.WATCH_EVENT_TYPE_MODIFIED: WatchEventType.MODIFIED,
    pb.WATCH_EVENT_TYPE_DELETED: WatchEventType.DELETED,
    pb.WATCH_EVENT_TYPE_SYNCED: WatchEventType.SYNCED,
}


# --- Argument checks. Each raises InvalidArgument naming the argument, the value and the fix.


def check_dns_label(argument: str, value: object) -> str:
    """Check that `value` is a DNS-1123 label and return it."""
    rule = (
        "use 1 to 63 lowercase letters, digits or '-', starting and ending with a letter or digit"
    )
    if not isinstance(value, str):
        raise InvalidArgument(f"{argument} must be a str, not {type(value).__name__}: {rule}")
    if len(value) > 63:
        raise InvalidArgument(
            f"invalid {argument} {value!r}: it has {len(value)} characters, the maximum is 63"
        )
    if not _DNS_LABEL.fullmatch(value):
        raise InvalidArgument(f"invalid {argument} {value!r}: {rule}")
    return value


def check_id(value: object) -> str:
    """Check that `value` is a sandbox id (a UUID string) and return it."""
    if not isinstance(value, str):
        raise InvalidArgument(f"id must be a str, not {type(value).__name__}")
    try:
        uuid.UUID(value)
    except ValueError:
        raise InvalidArgument(
            f"invalid id {value!r}: use the UUID that create, get or list returned"
        ) from None
    return value


def sandbox_ref(workspace: str, name: str | None, id: str | None) -> pb.SandboxRef:
    """Build the reference to one sandbox from exactly one of `name` and `id`."""
    if name is not None and id is not None:
        raise InvalidArgument(f"give either name or id, not both (name={name!r}, id={id!r})")
    if name is not None:
        return pb.SandboxRef(workspace=workspace, name=check_dns_label("name", name))
    if id is not None:
        return pb.SandboxRef(id=check_id(id))
    raise InvalidArgument("a sandbox name or id is required")


def _check_seconds(argument: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(f"{argument} must be a number of seconds, not {value!r}")
    seconds = float(value)
    if not math.isfinite(seconds):
        raise InvalidArgument(f"invalid {argument} {value!r}: use a finite number of seconds")
    return seconds


def check_timeout(argument: str, value: object) -> float:
    """Check a wait timeout, which the gateway accepts from 1 s to 1 h, and return it."""
    seconds = _check_seconds(argument, value)
    if not MIN_WAIT_TIMEOUT <= seconds <= MAX_WAIT_TIMEOUT:
        raise InvalidArgument(
            f"invalid {argument} {value!r}: use from {MIN_WAIT_TIMEOUT:g} to "
            f"{MAX_WAIT_TIMEOUT:g} seconds"
        )
    return seconds


def check_grace_period(value: object) -> float | None:
    """Check an optional grace period, from 0 s to 1 h, and return it."""
    if value is None:
        return None
    seconds = _check_seconds("grace_period", value)
    if seconds < 0:
        raise InvalidArgument(f"invalid grace_period {value!r}: it must not be negative")
    if seconds > MAX_GRACE_PERIOD:
        raise InvalidArgument(
            f"invalid grace_period {value!r}: the maximum is {MAX_GRACE_PERIOD:g} seconds"
        )
    return seconds


def check_command(value: object) -> list[str]:
    """Check that `value` is a non-empty sequence of strings and return it as a list."""
    if isinstance(value, str | bytes):
        raise InvalidArgument(
            f"command must be a list of arguments, not the string {value!r}: "
            f"use for example ['sh', '-c', {value!r}]"
        )
    if not isinstance(value, Sequence) or len(value) == 0:
        raise InvalidArgument(
            f"command must be a non-empty list of strings, with the program first, not {value!r}"
        )
    for index, argument in enumerate(value):
        if not isinstance(argument, str):
            raise InvalidArgument(
                f"command[{index}] must be a str, not {type(argument).__name__} ({argument!r})"
            )
    if value[0] == "":
        raise InvalidArgument("command[0] is empty: give the program to run first")
    return list(value)


def check_string_map(argument: str, value: object) -> dict[str, str]:
    """Check that `value` is None or a mapping of str to str and return it as a dict."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidArgument(
            f"{argument} must be a mapping of str to str, not {type(value).__name__}"
        )
    for key, item in value.items():
        if not isinstance(key, str):
            raise InvalidArgument(
                f"{argument} keys must be str, but {key!r} is {type(key).__name__}"
            )
        if not isinstance(item, str):
            raise InvalidArgument(
                f"{argument}[{key!r}] must be a str, not {type(item).__name__} ({item!r})"
            )
    return dict(value)


def check_phases(value: Phase | str | Iterable[Phase | str] | None) -> list[int]:
    """Convert a phase filter (one phase, several, or None for all) to protobuf enum numbers."""
    if value is None:
        return []
    items: Iterable[Phase | str] = [value] if isinstance(value, str) else value
    numbers = []
    for item in items:
        try:
            phase = Phase(item)
        except ValueError:
            choices = ", ".join(phase.value for phase in Phase)
            raise InvalidArgument(f"invalid phase {item!r}: use one of {choices}") from None
        numbers.append(_PHASE_TO_PROTO[phase])
    return numbers


def check_flag(argument: str, value: object) -> bool:
    """Check that `value` is a bool and return it."""
    if not isinstance(value, bool):
        raise InvalidArgument(f"{argument} must be True or False, not {value!r}")
    return value


# --- Conversions.


def to_duration(seconds: float) -> Duration:
    """Convert float seconds to a protobuf Duration."""
    whole = math.floor(seconds)
    return Duration(seconds=whole, nanos=round((seconds - whole) * 1e9))


def _from_timestamp(message: pb.Sandbox, field: str) -> datetime | None:
    if not message.HasField(field):
        return None
    timestamp: Timestamp = getattr(message, field)
    value: datetime = timestamp.ToDatetime(tzinfo=UTC)
    return value


def to_phase(number: int) -> Phase:
    """Convert a protobuf phase number; an unspecified or unknown number reads as UNKNOWN."""
    return _PHASE_FROM_PROTO.get(number, Phase.UNKNOWN)


def to_sandbox(message: pb.Sandbox) -> Sandbox:
    """Convert a protobuf Sandbox to the SDK's type."""
    spec = message.spec
    grace_period = None
    if spec.HasField("grace_period"):
        grace_period = spec.grace_period.ToTimedelta().total_seconds()
    return Sandbox(
        id=message.id,
        workspace=message.workspace,
        name=message.name,
        labels=dict(message.labels),
        phase=to_phase(message.phase),
        phase_reason=message.phase_reason,
        reason_since=_from_timestamp(message, "reason_since"),
        created_at=_from_timestamp(message, "created_at"),
        deletion_requested_at=_from_timestamp(message, "deletion_requested_at"),
        kill_at=_from_timestamp(message, "kill_at"),
        exit_code=message.exit_code if message.HasField("exit_code") else None,
        command=[*spec.command, *spec.args],
        env=dict(spec.env),
        image=spec.image,
        grace_period=grace_period,
        driver=message.driver.driver,
        driver_attributes=dict(message.driver.attributes),
        revision=message.revision,
    )


def to_delete_result(message: pb.DeleteSandboxResponse) -> DeleteResult:
    """Convert a DeleteSandboxResponse to the SDK's type."""
    outcome = _OUTCOME_FROM_PROTO.get(message.outcome)
    if outcome is None:
        raise SandgateError(
            f"the gateway sent no valid outcome ({message.outcome}) for sandbox id {message.id!r}"
        )
    deleted_at = None
    if message.HasField("tombstone") and message.tombstone.HasField("deleted_at"):
        deleted_at = message.tombstone.deleted_at.ToDatetime(tzinfo=UTC)
    sandbox = to_sandbox(message.sandbox) if message.HasField("sandbox") else None
    return DeleteResult(id=message.id, outcome=outcome, sandbox=sandbox, deleted_at=deleted_at)


def to_watch_event(message: pb.WatchEvent) -> WatchEvent | None:
    """Convert a WatchEvent, or return None for an event type this SDK does not know."""
    event_type = _EVENT_TYPE_FROM_PROTO.get(message.type)
    if event_type is None:
        return None
    sandbox = to_sandbox(message.sandbox) if message.HasField("sandbox") else None
    return WatchEvent(
        type=event_type, revision=message.revision, sandbox=sandbox, snapshot=message.snapshot
    )


# --- Status details and error mapping.


def _build_status_class() -> Any:
    """Build a message class wire-compatible with google.rpc.Status.

    It lives in a private descriptor pool under a private file name, so it needs no extra
    dependency and cannot clash with googleapis-common-protos if the caller imports that too.
    """
    pool = descriptor_pool.DescriptorPool()
    any_file = descriptor_pb2.FileDescriptorProto()
    any_pb2.DESCRIPTOR.CopyToProto(any_file)
    pool.Add(any_file)

    status_file = descriptor_pb2.FileDescriptorProto(
        name="sandgate/_private/rpc_status.proto",
        package="google.rpc",
        syntax="proto3",
        dependency=[any_file.name],
    )
    message = status_file.message_type.add(name="Status")
    field_type = descriptor_pb2.FieldDescriptorProto
    message.field.add(
        name="code", number=1, type=field_type.TYPE_INT32, label=field_type.LABEL_OPTIONAL
    )
    message.field.add(
        name="message", number=2, type=field_type.TYPE_STRING, label=field_type.LABEL_OPTIONAL
    )
    message.field.add(
        name="details",
        number=3,
        type=field_type.TYPE_MESSAGE,
        type_name=".google.protobuf.Any",
        label=field_type.LABEL_REPEATED,
    )
    pool.Add(status_file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("google.rpc.Status"))


_RpcStatus = _build_status_class()


def deletion_status(metadata: Iterable[tuple[str, str | bytes]] | None) -> pb.DeletionStatus | None:
    """Read the DeletionStatus from a call's trailing metadata, if it carries one."""
    for key, value in metadata or ():
        if key != STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        try:
            status = _RpcStatus.FromString(value)
            for detail in status.details:
                if detail.type_url == DELETION_STATUS_TYPE_URL:
                    report: pb.DeletionStatus = pb.DeletionStatus.FromString(detail.value)
                    return report
        except Exception:  # noqa: BLE001 - a malformed detail only loses the extra report
            return None
    return None


def _status_code(error: grpc.RpcError) -> grpc.StatusCode:
    code = getattr(error, "code", None)
    result = code() if callable(code) else None
    if isinstance(result, grpc.StatusCode):
        return result
    return grpc.StatusCode.UNKNOWN


def status_message(error: grpc.RpcError) -> str:
    """Return the status message of a failed call."""
    details = getattr(error, "details", None)
    message = details() if callable(details) else None
    return str(message) if message else str(error)


def is_unavailable(error: grpc.RpcError) -> bool:
    """Tell whether a failed call means the gateway could not be reached or went away."""
    return bool(_status_code(error) == grpc.StatusCode.UNAVAILABLE)


def watch_timed_out(timeout: float) -> SandgateError:
    """Return the error that ends a watch whose own `timeout` ran out."""
    return SandgateError(
        f"the watch ended after its timeout of {timeout:g} s; to go on, watch again with "
        "resume_revision set to the revision of the last event",
        code="DEADLINE_EXCEEDED",
    )


def is_deadline_exceeded(error: grpc.RpcError) -> bool:
    """Tell whether a call ended with DEADLINE_EXCEEDED."""
    return bool(_status_code(error) == grpc.StatusCode.DEADLINE_EXCEEDED)


def gateway_unavailable(
    target: str, error: grpc.RpcError | None, context: str
) -> GatewayUnavailable:
    """Build the error for an unreachable gateway. `context` describes what was attempted."""
    detail = f": {status_message(error)}" if error is not None else ""
    return GatewayUnavailable(
        f"the sandgate gateway at {target} is unavailable ({context}){detail}", target=target
    )


def deletion_timeout(
    error: grpc.RpcError, sandbox_id: str, metadata: Iterable[tuple[str, str | bytes]] | None
) -> DeletionTimeout:
    """Build the DeletionTimeout for a wait that ended with DEADLINE_EXCEEDED."""
    status = deletion_status(metadata)
    if status is None:
        return DeletionTimeout(
            f"the wait for the deletion of sandbox {sandbox_id} timed out before the gateway "
            f"reported what it waits for: {status_message(error)}; the deletion continues, "
            f"call wait_deleted({sandbox_id!r}) to wait again",
            id=sandbox_id,
        )
    reason_since = None
    if status.HasField("reason_since"):
        reason_since = status.reason_since.ToDatetime(tzinfo=UTC)
    return DeletionTimeout(
        f"{status_message(error)}; the deletion continues, call "
        f"wait_deleted({status.id or sandbox_id!r}) to wait again",
        id=status.id or sandbox_id,
        reason=status.phase_reason,
        phase=to_phase(status.phase),
        reason_since=reason_since,
    )


def map_error(error: grpc.RpcError, target: str) -> SandgateError:
    """Convert a failed call to the SDK's exception for its status code."""
    code = _status_code(error)
    message = status_message(error)
    name = code.name
    if code == grpc.StatusCode.NOT_FOUND:
        return SandboxNotFound(message, code=name)
    if code == grpc.StatusCode.ALREADY_EXISTS:
        return SandboxAlreadyExists(message, code=name)
    if code == grpc.StatusCode.FAILED_PRECONDITION and "still being deleted" in message:
        holder = _HOLDER_ID.search(message)
        return SandboxStillDeleting(
            message, code=name, sandbox_id=holder.group(1) if holder else None
        )
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument(message, code=name)
    if code == grpc.StatusCode.UNAVAILABLE:
        return GatewayUnavailable(
            f"the sandgate gateway at {target} is unavailable: {message}", target=target
        )
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return SandgateError(
            f"the sandgate gateway at {target} did not respond in time: {message}", code=name
        )
    return SandgateError(f"the sandgate gateway at {target} returned {name}: {message}", code=name)


def is_connect_failure(error: grpc.RpcError) -> bool:
    """Tell whether a call failed because no connection to the gateway could be made.

    Such a call never reached the gateway, unlike one the gateway rejected with UNAVAILABLE because
    it is shutting down, or one whose connection broke while it ran.
    """
    # NOTE: gRPC core reports this case only in the message text, "failed to connect to all
    # addresses" in grpcio 1.85. If a later version words it otherwise, a first wait that cannot
    # connect retries for up to RECONNECT_WINDOW instead of raising at once.
    message = status_message(error)
    return "failed to connect" in message or "DNS resolution failed" in message
