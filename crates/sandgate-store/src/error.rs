//! Errors of the store.

use std::path::PathBuf;

use sandgate_core::SandboxRecord;
use thiserror::Error;

/// A failed store operation. Nothing of a failed write is visible: the database transaction and
/// the in-memory index change together or not at all.
#[derive(Debug, Error)]
pub enum StoreError {
    /// Another process has the data directory locked.
    #[error(
        "data directory {dir} is in use by another sandgate serve{holder}: stop it, or pass a \
         different --data-dir"
    )]
    DirectoryInUse {
        /// The data directory.
        dir: PathBuf,
        /// " (pid N)" when the holder wrote its pid.
        holder: String,
    },
    /// The data directory could not be created or opened.
    #[error("cannot open data directory {dir}: {source}")]
    OpenDirectory {
        /// The data directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The database was written by a newer sandgate.
    #[error(
        "database {path} has schema version {found}, newer than the {supported} this sandgate \
         supports: upgrade sandgate"
    )]
    SchemaTooNew {
        /// Database file.
        path: PathBuf,
        /// Version found.
        found: i64,
        /// Newest version known here.
        supported: i64,
    },
    /// A stored row could not be decoded.
    #[error("database row of sandbox {id} is corrupt: {detail}")]
    Corrupt {
        /// Sandbox id of the row.
        id: String,
        /// The decoding failure.
        detail: String,
    },
    /// The name is held by another sandbox of the workspace.
    #[error("name {name:?} is taken in workspace {workspace:?}")]
    NameTaken {
        /// Workspace.
        workspace: String,
        /// Name.
        name: String,
        /// The sandbox that has the name.
        holder: Box<SandboxRecord>,
    },
    /// The database refused a read or write.
    #[error("sandbox store write failed: {0}")]
    Database(#[from] rusqlite::Error),
    /// A write was refused by the test fault hook.
    #[error("sandbox store write failed: {0}")]
    InjectedFault(String),
    /// The blocking task that runs database work panicked or was cancelled.
    #[error("sandbox store task failed: {0}")]
    Task(String),
}
