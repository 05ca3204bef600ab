"""Exceptions of the SDK. Every failed call raises a subclass of SandgateError."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .models import Phase, Sandbox


class SandgateError(Exception):
    """Base class of every error the SDK raises.

    `code` is the name of the gRPC status code the gateway returned, such as "INTERNAL", or None
    for errors found before any call.
    """

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class InvalidArgument(SandgateError, ValueError):
    """An argument is invalid.

    The SDK raises it before any call for the checks it can make itself, and when the gateway
    returns INVALID_ARGUMENT. It is a ValueError, so `except ValueError` catches it too.
    """


class SandboxNotFound(SandgateError, LookupError):
    """No sandbox has the requested name or id (gateway status NOT_FOUND)."""


class SandboxAlreadyExists(SandgateError):
    """A live sandbox already has the requested name (gateway status ALREADY_EXISTS)."""


class SandboxStillDeleting(SandgateError):
    """The requested name is held by a sandbox whose deletion is still in progress.

    `sandbox_id` is the id of that sandbox when the gateway's message names it, so that a caller
    can wait for it with `wait_deleted(sandbox_id)` and then create the name again.
    """

    def __init__(self, message: str, *, code: str | None = None, sandbox_id: str | None = None):
        super().__init__(message, code=code)
        self.sandbox_id = sandbox_id


class SandboxNotReady(SandgateError):
    """A sandbox waited for did not become READY.

    It reached EXITED, ERROR or DELETING, or the timeout passed. `sandbox` is the last state seen.
    The sandbox is not deleted by this error, except by `Client.sandbox`, which always deletes.
    """

    def __init__(self, message: str, *, sandbox: Sandbox, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.sandbox = sandbox


class DeletionTimeout(SandgateError, TimeoutError):
    """A wait for a deletion timed out while the sandbox was still present.

    The deletion goes on in the gateway: wait again with `wait_deleted(error.id)`. `reason` is
    what the deletion still waits for, `phase` and `reason_since` come from the same report.
    They are None when the gateway's status carried no report.
    """

    def __init__(
        self,
        message: str,
        *,
        id: str,
        reason: str | None = None,
        phase: Phase | None = None,
        reason_since: datetime | None = None,
        code: str | None = "DEADLINE_EXCEEDED",
    ) -> None:
        super().__init__(message, code=code)
        self.id = id
        self.reason = reason
        self.phase = phase
        self.reason_since = reason_since


class GatewayUnavailable(SandgateError, ConnectionError):
    """The gateway could not be reached, or the connection was lost and did not come back.

    A deletion it accepted goes on when the gateway runs again. `target` is the address called.
    """

    def __init__(self, message: str, *, target: str, code: str | None = "UNAVAILABLE") -> None:
        super().__init__(message, code=code)
        self.target = target
