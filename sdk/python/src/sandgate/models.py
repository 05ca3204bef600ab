"""The SDK's own types for sandboxes, delete results and watch events."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime


class Phase(enum.StrEnum):
    """Lifecycle phase of a sandbox, as the gateway reports it."""

    PROVISIONING = "PROVISIONING"
    """The record exists and the compute is being started."""
    READY = "READY"
    """The sandbox's command runs."""
    EXITED = "EXITED"
    """The command ended on its own, and `Sandbox.exit_code` contains its status."""
    ERROR = "ERROR"
    """The sandbox could not be started or kept running, for a reason other than its exit."""
    UNKNOWN = "UNKNOWN"
    """The driver cannot observe the sandbox right now."""
    DELETING = "DELETING"
    """A deletion is recorded and in progress. A sandbox leaves this phase only by removal."""


class DeleteOutcome(enum.StrEnum):
    """Result of a delete or of a wait for a deletion."""

    ACCEPTED = "ACCEPTED"
    """The deletion is recorded and in progress (only returned by `delete(wait=False)`)."""
    DELETED = "DELETED"
    """The sandbox is confirmed gone: none of its processes remains."""
    ALREADY_ABSENT = "ALREADY_ABSENT"
    """Nothing had that name or id, and `ignore_not_found` was set."""


class WatchEventType(enum.StrEnum):
    """Kind of a watch event."""

    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    """A change of phase, reason, spec, labels or driver details."""
    DELETED = "DELETED"
    """The sandbox was removed after its compute was confirmed gone."""
    SYNCED = "SYNCED"
    """Sent once after the initial snapshot or replay: the stream is now up to date."""


@dataclass(frozen=True)
class Sandbox:
    """One sandbox as the gateway last reported it.

    Times are timezone-aware datetimes in UTC, or None when the gateway sent none.
    """

    id: str
    """Server-assigned UUID, stable for the sandbox's whole life."""
    workspace: str
    name: str
    labels: dict[str, str]
    phase: Phase
    phase_reason: str
    """A stable sentence saying why the sandbox is in its phase, or what a deletion waits for."""
    reason_since: datetime | None
    """When `phase_reason` last changed."""
    created_at: datetime | None
    deletion_requested_at: datetime | None
    exit_code: int | None
    """Exit status of the command once it ended; negative means killed by that signal number."""
    command: list[str] = field(default_factory=list)
    """The full command line: the spec's command followed by its args."""
    env: dict[str, str] = field(default_factory=dict)
    image: str = ""
    grace_period: float | None = None
    """Seconds between the stop signal and the forced kill, or None for the gateway's default."""
    driver: str = ""
    """Driver that runs the sandbox, for example "process"."""
    driver_attributes: dict[str, str] = field(default_factory=dict)
    """Driver-specific facts for operators, such as the supervisor pid."""
    kill_at: datetime | None = None
    """While DELETING: when whatever still runs is killed; a later forced or shorter delete
    moves it earlier."""
    revision: int = 0
    """Store revision of the sandbox's last change."""


@dataclass(frozen=True)
class DeleteResult:
    """Outcome of `delete` or `wait_deleted` for one sandbox."""

    id: str
    """The sandbox id, or "" when nothing had the requested name (ALREADY_ABSENT by name)."""
    outcome: DeleteOutcome
    sandbox: Sandbox | None = None
    """The last known record. For a removed sandbox only the fields its tombstone keeps are set."""
    deleted_at: datetime | None = None
    """When the gateway confirmed the sandbox gone, for outcome DELETED."""


@dataclass(frozen=True)
class WatchEvent:
    """One event of a watch stream."""

    type: WatchEventType
    revision: int
    """Store revision of this event: pass the last one seen as `resume_revision` to resume."""
    sandbox: Sandbox | None
    """The sandbox after the change, or None on SYNCED events."""
    snapshot: bool = False
    """True on the ADDED events of a snapshot and on the SYNCED event that ends it, which also
    marks an empty snapshot. After a resume, a snapshot replaces what the caller knew: drop
    every sandbox that it does not contain."""
