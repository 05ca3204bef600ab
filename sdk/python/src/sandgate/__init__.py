"""Python client of the sandgate gateway, which creates, lists, watches and deletes sandboxes.

`Client` blocks and `AsyncClient` is its asyncio twin. Calls return the types in
`sandgate.models` and raise subclasses of `SandgateError`, never raw gRPC errors.
"""

from .aio import AsyncClient
from .client import Client
from .errors import (
    DeletionTimeout,
    GatewayUnavailable,
    InvalidArgument,
    SandboxAlreadyExists,
    SandboxNotFound,
    SandboxNotReady,
    SandboxStillDeleting,
    SandgateError,
)
from .models import DeleteOutcome, DeleteResult, Phase, Sandbox, WatchEvent, WatchEventType

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "Client",
    "DeleteOutcome",
    "DeleteResult",
    "DeletionTimeout",
    "GatewayUnavailable",
    "InvalidArgument",
    "Phase",
    "Sandbox",
    "SandboxAlreadyExists",
    "SandboxNotFound",
    "SandboxNotReady",
    "SandboxStillDeleting",
    "SandgateError",
    "WatchEvent",
    "WatchEventType",
]
