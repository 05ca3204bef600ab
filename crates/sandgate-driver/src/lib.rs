//! The interface every sandbox backend implements: the process driver on a single machine, and
//! the Kubernetes driver on a cluster.
//!
//! The server owns the records and the state machine. A driver only starts compute, stops it,
//! and reports what it observes, as [`Observed`] values keyed by sandbox id. It never decides a
//! phase and never removes a record: the server applies observations through
//! `sandgate_core::lifecycle`, which keeps DELETING sticky.
//!
//! # Observation contract
//! - [`Driver::observe`] and [`Driver::list`] report the backend's current state, read fresh.
//! - The channel given to [`Driver::start`] receives an [`Observation`] whenever a sandbox's
//!   state may have changed (a process exited, a watch event arrived, a re-list finished). A
//!   driver may send duplicates; the state machine ignores observations that change nothing.
//! - `Observed::Gone` is sent only when nothing of the sandbox remains: every process including
//!   its supervisor, or the custom resource and every Pod.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use sandgate_core::{DriverDetails, Observed, SandboxId, SandboxRecord};
use tokio::sync::mpsc;

/// One observation sent by a driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    /// The sandbox observed.
    pub id: SandboxId,
    /// The observed state.
    pub observed: Observed,
}

/// Something the backend holds for a sandbox id, as found by [`Driver::list`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// The sandbox id the backend object is labelled with.
    pub id: SandboxId,
    /// When the backend object was created, for the orphan grace period.
    pub created_at: Option<SystemTime>,
    /// Its observed state.
    pub observed: Observed,
    /// The details the store records, for a record whose creation a crash interrupted.
    pub details: DriverDetails,
}

/// The deadline and force of a deletion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeletePlan {
    /// When whatever still runs must be killed. Past for a forced deletion.
    pub kill_at: SystemTime,
    /// Kill at once, and skip every grace period.
    pub force: bool,
}

impl DeletePlan {
    /// Returns the grace period left at `now`: zero once `kill_at` has passed.
    pub fn grace_left(&self, now: SystemTime) -> Duration {
        self.kill_at.duration_since(now).unwrap_or(Duration::ZERO)
    }
}

/// A failure of a driver call.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The request cannot be run by this driver (for example an image on the process driver).
    #[error("{field}: {message}")]
    Unsupported {
        /// Field of the request.
        field: String,
        /// The problem and the fix.
        message: String,
    },
    /// A failure that may pass: the caller retries with backoff.
    #[error("{0}")]
    Transient(String),
    /// A failure that retrying will not fix.
    #[error("{0}")]
    Permanent(String),
}

impl DriverError {
    /// Returns whether retrying may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, DriverError::Transient(_))
    }
}

/// A backend that runs sandboxes.
///
/// Every method is idempotent: the server calls them again after a restart, on retries and from
/// the reconciler. All methods are cancel safe in the sense that dropping the future leaves the
/// backend in a state that a later call of the same method completes.
#[async_trait]
pub trait Driver: Send + Sync + 'static {
    /// Returns the driver's name, such as "process".
    fn name(&self) -> &'static str;

    /// Checks that the driver can run `spec` before any record is written.
    ///
    /// # Errors
    /// Returns [`DriverError::Unsupported`] naming the field that this driver cannot run.
    fn validate(&self, record: &SandboxRecord) -> Result<(), DriverError>;

    /// Starts the driver's background work (watchers, exit observers) and begins sending
    /// observations on `sink`. `records` are the store's live and DELETING records at startup,
    /// whose compute the driver must observe again.
    async fn start(
        &self,
        records: Vec<SandboxRecord>,
        sink: mpsc::UnboundedSender<Observation>,
    ) -> Result<(), DriverError>;

    /// Starts the compute of a committed PROVISIONING record and returns what to record of it.
    ///
    /// If compute for this id already exists (a retried create), it is adopted, not duplicated.
    async fn create(&self, record: &SandboxRecord) -> Result<DriverDetails, DriverError>;

    /// Starts or escalates the deletion of a DELETING record. Returns once the backend has
    /// accepted it, not when the compute is gone: removal arrives as an `Observed::Gone`.
    async fn delete(&self, record: &SandboxRecord, plan: DeletePlan) -> Result<(), DriverError>;

    /// Observes one sandbox now. `record.driver` may be empty if a crash interrupted its
    /// creation; the driver then looks for compute by the sandbox id.
    async fn observe(&self, record: &SandboxRecord) -> Result<Observed, DriverError>;

    /// Lists everything this driver instance holds, by sandbox id, for the reconciler.
    async fn list(&self) -> Result<Vec<Found>, DriverError>;

    /// Removes compute that has no record (an orphan), with no grace period.
    async fn delete_orphan(&self, id: SandboxId) -> Result<(), DriverError>;
}
