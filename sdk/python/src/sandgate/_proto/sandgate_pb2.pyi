import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SandboxPhase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SANDBOX_PHASE_UNSPECIFIED: _ClassVar[SandboxPhase]
    SANDBOX_PHASE_PROVISIONING: _ClassVar[SandboxPhase]
    SANDBOX_PHASE_READY: _ClassVar[SandboxPhase]
    SANDBOX_PHASE_EXITED: _ClassVar[SandboxPhase]
    SANDBOX_PHASE_ERROR: _ClassVar[SandboxPhase]
    SANDBOX_PHASE_UNKNOWN: _ClassVar[SandboxPhase]
    SANDBOX_PHASE_DELETING: _ClassVar[SandboxPhase]

class DeleteOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DELETE_OUTCOME_UNSPECIFIED: _ClassVar[DeleteOutcome]
    DELETE_OUTCOME_ACCEPTED: _ClassVar[DeleteOutcome]
    DELETE_OUTCOME_DELETED: _ClassVar[DeleteOutcome]
    DELETE_OUTCOME_ALREADY_ABSENT: _ClassVar[DeleteOutcome]

class RemovalPath(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REMOVAL_PATH_UNSPECIFIED: _ClassVar[RemovalPath]
    REMOVAL_PATH_REQUEST: _ClassVar[RemovalPath]
    REMOVAL_PATH_RECONCILER: _ClassVar[RemovalPath]
    REMOVAL_PATH_FORCE: _ClassVar[RemovalPath]

class WatchEventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WATCH_EVENT_TYPE_UNSPECIFIED: _ClassVar[WatchEventType]
    WATCH_EVENT_TYPE_ADDED: _ClassVar[WatchEventType]
    WATCH_EVENT_TYPE_MODIFIED: _ClassVar[WatchEventType]
    WATCH_EVENT_TYPE_DELETED: _ClassVar[WatchEventType]
    WATCH_EVENT_TYPE_SYNCED: _ClassVar[WatchEventType]
SANDBOX_PHASE_UNSPECIFIED: SandboxPhase
SANDBOX_PHASE_PROVISIONING: SandboxPhase
SANDBOX_PHASE_READY: SandboxPhase
SANDBOX_PHASE_EXITED: SandboxPhase
SANDBOX_PHASE_ERROR: SandboxPhase
SANDBOX_PHASE_UNKNOWN: SandboxPhase
SANDBOX_PHASE_DELETING: SandboxPhase
DELETE_OUTCOME_UNSPECIFIED: DeleteOutcome
DELETE_OUTCOME_ACCEPTED: DeleteOutcome
DELETE_OUTCOME_DELETED: DeleteOutcome
DELETE_OUTCOME_ALREADY_ABSENT: DeleteOutcome
REMOVAL_PATH_UNSPECIFIED: RemovalPath
REMOVAL_PATH_REQUEST: RemovalPath
REMOVAL_PATH_RECONCILER: RemovalPath
REMOVAL_PATH_FORCE: RemovalPath
WATCH_EVENT_TYPE_UNSPECIFIED: WatchEventType
WATCH_EVENT_TYPE_ADDED: WatchEventType
WATCH_EVENT_TYPE_MODIFIED: WatchEventType
WATCH_EVENT_TYPE_DELETED: WatchEventType
WATCH_EVENT_TYPE_SYNCED: WatchEventType

class SandboxSpec(_message.Message):
    __slots__ = ("command", "args", "env", "grace_period", "image")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    GRACE_PERIOD_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    command: _containers.RepeatedScalarFieldContainer[str]
    args: _containers.RepeatedScalarFieldContainer[str]
    env: _containers.ScalarMap[str, str]
    grace_period: _duration_pb2.Duration
    image: str
    def __init__(self, command: _Optional[_Iterable[str]] = ..., args: _Optional[_Iterable[str]] = ..., env: _Optional[_Mapping[str, str]] = ..., grace_period: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., image: _Optional[str] = ...) -> None: ...

class DriverDetails(_message.Message):
    __slots__ = ("driver", "attributes")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DRIVER_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    driver: str
    attributes: _containers.ScalarMap[str, str]
    def __init__(self, driver: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Sandbox(_message.Message):
    __slots__ = ("id", "workspace", "name", "labels", "spec", "phase", "phase_reason", "reason_since", "created_at", "deletion_requested_at", "exit_code", "driver", "revision", "kill_at")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    PHASE_REASON_FIELD_NUMBER: _ClassVar[int]
    REASON_SINCE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    DELETION_REQUESTED_AT_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    DRIVER_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    KILL_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    workspace: str
    name: str
    labels: _containers.ScalarMap[str, str]
    spec: SandboxSpec
    phase: SandboxPhase
    phase_reason: str
    reason_since: _timestamp_pb2.Timestamp
    created_at: _timestamp_pb2.Timestamp
    deletion_requested_at: _timestamp_pb2.Timestamp
    exit_code: int
    driver: DriverDetails
    revision: int
    kill_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., workspace: _Optional[str] = ..., name: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., spec: _Optional[_Union[SandboxSpec, _Mapping]] = ..., phase: _Optional[_Union[SandboxPhase, str]] = ..., phase_reason: _Optional[str] = ..., reason_since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., deletion_requested_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., exit_code: _Optional[int] = ..., driver: _Optional[_Union[DriverDetails, _Mapping]] = ..., revision: _Optional[int] = ..., kill_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SandboxRef(_message.Message):
    __slots__ = ("workspace", "name", "id")
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    workspace: str
    name: str
    id: str
    def __init__(self, workspace: _Optional[str] = ..., name: _Optional[str] = ..., id: _Optional[str] = ...) -> None: ...

class CreateSandboxRequest(_message.Message):
    __slots__ = ("workspace", "name", "labels", "spec")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    workspace: str
    name: str
    labels: _containers.ScalarMap[str, str]
    spec: SandboxSpec
    def __init__(self, workspace: _Optional[str] = ..., name: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., spec: _Optional[_Union[SandboxSpec, _Mapping]] = ...) -> None: ...

class GetSandboxRequest(_message.Message):
    __slots__ = ("target",)
    TARGET_FIELD_NUMBER: _ClassVar[int]
    target: SandboxRef
    def __init__(self, target: _Optional[_Union[SandboxRef, _Mapping]] = ...) -> None: ...

class ListSandboxesRequest(_message.Message):
    __slots__ = ("workspace", "all_workspaces", "label_selector", "phases", "page_size", "page_token")
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    ALL_WORKSPACES_FIELD_NUMBER: _ClassVar[int]
    LABEL_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    PHASES_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    workspace: str
    all_workspaces: bool
    label_selector: str
    phases: _containers.RepeatedScalarFieldContainer[SandboxPhase]
    page_size: int
    page_token: str
    def __init__(self, workspace: _Optional[str] = ..., all_workspaces: _Optional[bool] = ..., label_selector: _Optional[str] = ..., phases: _Optional[_Iterable[_Union[SandboxPhase, str]]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListSandboxesResponse(_message.Message):
    __slots__ = ("sandboxes", "next_page_token", "revision")
    SANDBOXES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    sandboxes: _containers.RepeatedCompositeFieldContainer[Sandbox]
    next_page_token: str
    revision: int
    def __init__(self, sandboxes: _Optional[_Iterable[_Union[Sandbox, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., revision: _Optional[int] = ...) -> None: ...

class DeleteSandboxRequest(_message.Message):
    __slots__ = ("target", "wait", "timeout", "grace_period", "force", "ignore_not_found")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    GRACE_PERIOD_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    IGNORE_NOT_FOUND_FIELD_NUMBER: _ClassVar[int]
    target: SandboxRef
    wait: bool
    timeout: _duration_pb2.Duration
    grace_period: _duration_pb2.Duration
    force: bool
    ignore_not_found: bool
    def __init__(self, target: _Optional[_Union[SandboxRef, _Mapping]] = ..., wait: _Optional[bool] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., grace_period: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., force: _Optional[bool] = ..., ignore_not_found: _Optional[bool] = ...) -> None: ...

class Tombstone(_message.Message):
    __slots__ = ("id", "workspace", "name", "deletion_requested_at", "deleted_at", "path")
    ID_FIELD_NUMBER: _ClassVar[int]
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DELETION_REQUESTED_AT_FIELD_NUMBER: _ClassVar[int]
    DELETED_AT_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    id: str
    workspace: str
    name: str
    deletion_requested_at: _timestamp_pb2.Timestamp
    deleted_at: _timestamp_pb2.Timestamp
    path: RemovalPath
    def __init__(self, id: _Optional[str] = ..., workspace: _Optional[str] = ..., name: _Optional[str] = ..., deletion_requested_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., deleted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., path: _Optional[_Union[RemovalPath, str]] = ...) -> None: ...

class DeleteSandboxResponse(_message.Message):
    __slots__ = ("id", "outcome", "sandbox", "tombstone")
    ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    TOMBSTONE_FIELD_NUMBER: _ClassVar[int]
    id: str
    outcome: DeleteOutcome
    sandbox: Sandbox
    tombstone: Tombstone
    def __init__(self, id: _Optional[str] = ..., outcome: _Optional[_Union[DeleteOutcome, str]] = ..., sandbox: _Optional[_Union[Sandbox, _Mapping]] = ..., tombstone: _Optional[_Union[Tombstone, _Mapping]] = ...) -> None: ...

class WaitSandboxDeletedRequest(_message.Message):
    __slots__ = ("id", "timeout")
    ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    id: str
    timeout: _duration_pb2.Duration
    def __init__(self, id: _Optional[str] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class DeletionStatus(_message.Message):
    __slots__ = ("id", "phase", "phase_reason", "reason_since")
    ID_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    PHASE_REASON_FIELD_NUMBER: _ClassVar[int]
    REASON_SINCE_FIELD_NUMBER: _ClassVar[int]
    id: str
    phase: SandboxPhase
    phase_reason: str
    reason_since: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., phase: _Optional[_Union[SandboxPhase, str]] = ..., phase_reason: _Optional[str] = ..., reason_since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class WatchSandboxesRequest(_message.Message):
    __slots__ = ("workspace", "all_workspaces", "name", "id", "resume_revision")
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    ALL_WORKSPACES_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    RESUME_REVISION_FIELD_NUMBER: _ClassVar[int]
    workspace: str
    all_workspaces: bool
    name: str
    id: str
    resume_revision: int
    def __init__(self, workspace: _Optional[str] = ..., all_workspaces: _Optional[bool] = ..., name: _Optional[str] = ..., id: _Optional[str] = ..., resume_revision: _Optional[int] = ...) -> None: ...

class WatchEvent(_message.Message):
    __slots__ = ("type", "revision", "sandbox", "snapshot")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    type: WatchEventType
    revision: int
    sandbox: Sandbox
    snapshot: bool
    def __init__(self, type: _Optional[_Union[WatchEventType, str]] = ..., revision: _Optional[int] = ..., sandbox: _Optional[_Union[Sandbox, _Mapping]] = ..., snapshot: _Optional[bool] = ...) -> None: ...
