//! Errors of the service and their one mapping to gRPC statuses.

use std::time::{Duration, SystemTime};

use sandgate_core::duration;
use sandgate_core::{SandboxRecord, Tombstone, ValidationError};
use sandgate_driver::DriverError;
use sandgate_store::StoreError;
use tonic::{Code, Status};

use crate::convert;

/// A failed call.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A request field is invalid.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// Nothing matches the target.
    #[error("{0} not found")]
    NotFound(String),
    /// The id belongs to a sandbox whose removal was confirmed.
    #[error(
        "sandbox with id {id} not found: it was {name:?} in workspace {workspace:?}, deleted {ago} \
         ago"
    )]
    Removed {
        /// Id of the removed sandbox.
        id: String,
        /// Its workspace.
        workspace: String,
        /// Its name.
        name: String,
        /// Time since the removal was confirmed.
        ago: String,
    },
    /// The name is held by a live sandbox.
    #[error(
        "sandbox {name:?} already exists in workspace {workspace:?} (id {id}): delete it first, or \
         choose another name"
    )]
    AlreadyExists {
        /// Workspace.
        workspace: String,
        /// Name.
        name: String,
        /// Id of the holder.
        id: String,
    },
    /// The name is held by a sandbox whose deletion is still in progress.
    #[error(
        "sandbox {name:?} in workspace {workspace:?} is still being deleted (id {id}, deletion \
         requested {ago} ago: {reason}): wait for the deletion to finish, or choose another name"
    )]
    StillDeleting {
        /// Workspace.
        workspace: String,
        /// Name.
        name: String,
        /// Id of the DELETING holder.
        id: String,
        /// Time since the deletion was requested.
        ago: String,
        /// The deletion's current reason.
        reason: String,
    },
    /// The store could not record a change; nothing was acted on.
    #[error("{action}: {source}; nothing was changed")]
    Store {
        /// The change that could not be recorded.
        action: String,
        /// The store's failure.
        #[source]
        source: StoreError,
    },
    /// The driver cannot run the request.
    #[error("{0}")]
    Driver(#[from] DriverError),
    /// A waiting call timed out while the sandbox is still present.
    #[error(
        "sandbox {name:?} (id {id}) is still present after {waited}: {reason} (for {since})",
        name = record.name,
        id = record.id,
        waited = duration::format(*waited),
        reason = record.phase_reason,
        since = elapsed(record.reason_since),
    )]
    StillPresent {
        /// Last record.
        record: Box<SandboxRecord>,
        /// How long the call waited.
        waited: Duration,
    },
    /// The server is shutting down.
    #[error(
        "sandgate is shutting down; deletions under way continue when it restarts: retry by id"
    )]
    ShuttingDown,
}

/// Returns the time elapsed since `since`, formatted, for messages.
pub fn elapsed(since: SystemTime) -> String {
    let elapsed = SystemTime::now().duration_since(since).unwrap_or_default();
    duration::format(elapsed)
}

impl ApiError {
    /// Builds the error for a store failure while doing `action`.
    pub fn store(action: impl Into<String>, source: StoreError) -> Self {
        ApiError::Store {
            action: action.into(),
            source,
        }
    }

    /// Builds the error for a read of a removed sandbox's id.
    pub fn removed(tombstone: &Tombstone) -> Self {
        ApiError::Removed {
            id: tombstone.id.to_string(),
            workspace: tombstone.workspace.clone(),
            name: tombstone.name.clone(),
            ago: elapsed(tombstone.deleted_at),
        }
    }

    /// Builds the error for a name held by `holder`.
    pub fn name_taken(holder: &SandboxRecord) -> Self {
        match &holder.deletion {
            Some(deletion) if holder.is_deleting() => ApiError::StillDeleting {
                workspace: holder.workspace.clone(),
                name: holder.name.clone(),
                id: holder.id.to_string(),
                ago: elapsed(deletion.requested_at),
                reason: holder.phase_reason.clone(),
            },
            _ => ApiError::AlreadyExists {
                workspace: holder.workspace.clone(),
                name: holder.name.clone(),
                id: holder.id.to_string(),
            },
        }
    }
}

fn is_full(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DiskFull)
    )
}

/// Maximum length in bytes of a status message; gRPC carries it in a header, and clients reject large headers.
const MAX_MESSAGE_BYTES: usize = 4096;

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Self {
        let mut message = error.to_string();
        if message.len() > MAX_MESSAGE_BYTES {
            let mut end = MAX_MESSAGE_BYTES;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push_str("...");
        }
        match &error {
            ApiError::Invalid(_) => Status::invalid_argument(message),
            ApiError::NotFound(_) | ApiError::Removed { .. } => Status::not_found(message),
            ApiError::AlreadyExists { .. } => Status::already_exists(message),
            ApiError::StillDeleting { .. } => Status::failed_precondition(message),
            ApiError::Store { source, .. } => match source {
                StoreError::Database(error) if is_full(error) => Status::resource_exhausted(
                    format!("{message}: free space on the file system of the data directory"),
                ),
                StoreError::InjectedFault(_) => Status::resource_exhausted(message),
                StoreError::NameTaken { .. } => Status::failed_precondition(message),
                _ => Status::internal(message),
            },
            ApiError::Driver(DriverError::Unsupported { .. }) => Status::invalid_argument(message),
            ApiError::Driver(DriverError::Transient(_)) => Status::unavailable(message),
            ApiError::Driver(DriverError::Permanent(_)) => Status::internal(message),
            ApiError::StillPresent { record, .. } => {
                sandgate_proto::deletion_timeout_status(message, &convert::deletion_status(record))
            }
            ApiError::ShuttingDown => Status::new(Code::Unavailable, message),
        }
    }
}
