//! Lifecycle orchestration: creation, deletion tasks, waits and the application of driver
//! observations. Every store write computes its change with `sandgate_core::lifecycle`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use dashmap::DashMap;
use sandgate_core::lifecycle::{self, Change, DeleteParams, DeletionDecision};
use sandgate_core::{
    DriverDetails, LiveStatus, Observed, RemovalPath, SandboxId, SandboxRecord, Tombstone,
};
use sandgate_driver::{DeletePlan, Driver, DriverError};
use sandgate_store::{Modified, SandboxState, Store, StoreError, Write};
use tokio::sync::{Notify, watch};
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::error::ApiError;
use crate::faults::{self, Fault};

/// The outcome of a delete request.
#[derive(Clone, Debug)]
pub enum DeleteResult {
    /// The deletion is recorded and under way; this is the record.
    Accepted(SandboxRecord),
    /// The sandbox is gone.
    Deleted(Tombstone),
}

/// Shared state of the running server's lifecycle work.
pub struct Lifecycle {
    store: Store,
    driver: Arc<dyn Driver>,
    /// Creations in flight: the value turns true when the driver's create call has returned.
    creating: DashMap<SandboxId, watch::Receiver<bool>>,
    /// Deletion tasks that run, with the signal that makes them re-issue the delete at once.
    deleters: DashMap<SandboxId, Arc<Notify>>,
    shutdown: watch::Receiver<bool>,
}

/// Interval at which a deletion task re-issues its delete after the kill deadline, as a backstop
/// for a lost signal or a missed observation. Waiters never poll: they wake on removal.
const DELETE_RECHECK: Duration = Duration::from_secs(10);
/// Time after the kill deadline at which a deletion task first re-checks.
const KILL_SLACK: Duration = Duration::from_secs(2);
/// Backoff limits for retried driver calls.
const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Attempts at a transient create failure before the sandbox is marked ERROR.
const CREATE_ATTEMPTS: u32 = 4;

impl Lifecycle {
    /// Creates the lifecycle over a store and a driver. `shutdown` turns true when the server
    /// stops.
    pub fn new(store: Store, driver: Arc<dyn Driver>, shutdown: watch::Receiver<bool>) -> Self {
        Self {
            store,
            driver,
            creating: DashMap::new(),
            deleters: DashMap::new(),
            shutdown,
        }
    }

    /// Returns the store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Returns a receiver that turns true when the server stops.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.clone()
    }

    /// Returns the driver.
    pub fn driver(&self) -> &Arc<dyn Driver> {
        &self.driver
    }

    /// Returns whether a creation of `id` is in flight in this process.
    pub fn is_creating(&self, id: &SandboxId) -> bool {
        self.creating.get(id).is_some_and(|done| !*done.borrow())
    }

    // ===== create =====

    /// Commits a PROVISIONING record, then starts its compute, then records the driver's details.
    ///
    /// # Errors
    /// Returns [`ApiError`] if the driver cannot run the spec, the name is taken, or the store
    /// cannot record the sandbox. A failure to start after the record was committed is not an
    /// error of the call: the sandbox is then ERROR with the reason.
    ///
    /// # Cancel safety
    /// Once the record is committed, the rest runs in its own task: a caller that goes away does
    /// not interrupt the creation.
    pub async fn create(
        self: &Arc<Self>,
        record: SandboxRecord,
    ) -> Result<SandboxRecord, ApiError> {
        self.driver.validate(&record)?;

        let record = match self.store.insert(record).await {
            Ok(record) => record,
            Err(StoreError::NameTaken { holder, .. }) => return Err(ApiError::name_taken(&holder)),
            Err(source) => {
                return Err(ApiError::store("cannot record the new sandbox", source));
            }
        };
        info!(
            sandbox_id = %record.id,
            name = %record.qualified_name(),
            phase = %record.phase,
            "Sandbox recorded"
        );
        faults::hit(Fault::AfterCreateCommit);

        let (done, done_receiver) = watch::channel(false);
        self.creating.insert(record.id, done_receiver);
        let this = self.clone();
        let id = record.id;
        let task = tokio::spawn(
            async move {
                let result = this.start_compute(record).await;
                let _ = done.send(true);
                this.creating.remove(&id);
                result
            }
            .instrument(info_span!(parent: None, "create", sandbox_id = %id)),
        );
        match task.await {
            Ok(record) => Ok(record),
            Err(join_error) => Err(ApiError::Driver(DriverError::Permanent(format!(
                "the create task failed: {join_error}"
            )))),
        }
    }

    async fn start_compute(&self, record: SandboxRecord) -> SandboxRecord {
        let mut backoff = BACKOFF_START;
        let mut attempt = 1;
        let outcome = loop {
            match self.driver.create(&record).await {
                Ok(details) => break Ok(details),
                Err(error) if error.is_transient() && attempt < CREATE_ATTEMPTS => {
                    warn!(%error, attempt, "Starting the sandbox failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    attempt += 1;
                }
                Err(error) => break Err(error),
            }
        };

        match outcome {
            Ok(details) => self
                .record_details(record.id, details)
                .await
                .unwrap_or(record),
            Err(error) => {
                error!(%error, "Starting the sandbox failed");
                let observed = Observed::Present {
                    status: LiveStatus::Error(format!("failed to start: {error}")),
                    terminating: None,
                };
                self.apply(record.id, observed, RemovalPath::Request).await;
                self.store.get(&record.id).unwrap_or(record)
            }
        }
    }

    /// Records what the driver reported of a sandbox's compute.
    pub async fn record_details(
        &self,
        id: SandboxId,
        details: DriverDetails,
    ) -> Option<SandboxRecord> {
        let result = self
            .store
            .modify(id, move |current| {
                let mut next = current.clone();
                next.driver = details;
                Write::Update(next)
            })
            .await;
        match result {
            Ok(Modified::Updated(record) | Modified::Kept(record)) => Some(record),
            Ok(Modified::Missing | Modified::Removed(_)) => None,
            Err(error) => {
                error!(sandbox_id = %id, %error, "Recording the driver's details failed");
                None
            }
        }
    }

    // ===== observations =====

    /// Applies one driver observation, through the state machine.
    ///
    /// A `Gone` observation of a live record whose creation is in flight is ignored, because the
    /// backend may not show the compute yet.
    pub async fn apply(
        &self,
        id: SandboxId,
        observed: Observed,
        path: RemovalPath,
    ) -> Option<Modified> {
        if matches!(observed, Observed::Gone { .. }) {
            // Compute that a create has not reached yet is not gone: the creation is in flight
            // here, or a crash interrupted it and the reconciler resolves it by the sandbox id.
            let unstarted = self.store.get(&id).is_some_and(|record| {
                !record.is_deleting() && (record.driver.driver.is_empty() || self.is_creating(&id))
            });
            if unstarted {
                debug!(sandbox_id = %id, "Ignoring a removal observed before the compute started");
                return None;
            }
        }

        let now = SystemTime::now();
        let result = self
            .store
            .modify(id, move |current| {
                match lifecycle::apply_observation(current, &observed, path, now) {
                    Change::Unchanged => Write::Keep,
                    Change::Updated(next) => Write::Update(next),
                    Change::Removed(tombstone) => Write::Remove(tombstone),
                }
            })
            .await;

        match result {
            Ok(Modified::Updated(record)) => {
                info!(
                    sandbox_id = %record.id,
                    name = %record.qualified_name(),
                    phase = %record.phase,
                    reason = %record.phase_reason,
                    "Sandbox changed"
                );
                Some(Modified::Updated(record))
            }
            Ok(Modified::Removed(tombstone)) => {
                info!(
                    sandbox_id = %tombstone.id,
                    name = %format!("{}/{}", tombstone.workspace, tombstone.name),
                    path = tombstone.path.as_str(),
                    "Sandbox removed"
                );
                Some(Modified::Removed(tombstone))
            }
            Ok(other) => Some(other),
            Err(error) => {
                error!(sandbox_id = %id, %error, "Recording an observation failed");
                None
            }
        }
    }

    // ===== delete =====

    /// Commits the deletion of `record` (or joins or escalates the one under way), then makes
    /// sure a deletion task drives it.
    ///
    /// # Errors
    /// Returns [`ApiError::Store`] if the deletion could not be recorded; nothing was signalled
    /// or deleted then.
    ///
    /// # Cancel safety
    /// The store write completes even if the caller goes away, and the deletion task runs on its
    /// own, so a dropped call never leaves a recorded deletion without a task.
    pub async fn delete(
        self: &Arc<Self>,
        id: SandboxId,
        params: DeleteParams,
    ) -> Result<DeleteResult, ApiError> {
        let now = SystemTime::now();
        let result = self
            .store
            .modify(id, move |current| {
                match lifecycle::request_deletion(current, params, now) {
                    DeletionDecision::Started(next) | DeletionDecision::Escalated(next) => {
                        Write::Update(next)
                    }
                    DeletionDecision::Joined => Write::Keep,
                }
            })
            .await;

        let record = match result {
            Ok(Modified::Updated(record)) => {
                info!(
                    sandbox_id = %record.id,
                    name = %record.qualified_name(),
                    force = params.force,
                    grace_period = ?params.grace_period,
                    "Sandbox deletion recorded"
                );
                if params.force {
                    warn!(sandbox_id = %record.id, name = %record.qualified_name(), "Forced deletion");
                }
                faults::hit(Fault::AfterDeleteCommit);
                self.drive_deletion(record.id, true);
                record
            }
            Ok(Modified::Kept(record)) => {
                self.drive_deletion(record.id, false);
                record
            }
            Ok(Modified::Removed(tombstone)) => return Ok(DeleteResult::Deleted(tombstone)),
            Ok(Modified::Missing) => {
                return match self.store.tombstone(&id) {
                    Some(tombstone) => Ok(DeleteResult::Deleted(tombstone)),
                    None => Err(ApiError::NotFound(format!("sandbox with id {id}"))),
                };
            }
            Err(source) => {
                error!(sandbox_id = %id, error = %source, "Recording a deletion failed");
                return Err(ApiError::store(
                    format!("cannot record the deletion of sandbox {id}"),
                    source,
                ));
            }
        };
        Ok(DeleteResult::Accepted(record))
    }

    /// Makes sure a deletion task runs for `id`; with `reissue`, a running task issues the delete
    /// again at once (after an escalation).
    pub fn drive_deletion(self: &Arc<Self>, id: SandboxId, reissue: bool) {
        use dashmap::mapref::entry::Entry;

        match self.deleters.entry(id) {
            Entry::Occupied(entry) => {
                if reissue {
                    entry.get().notify_one();
                }
            }
            Entry::Vacant(entry) => {
                let wake = Arc::new(Notify::new());
                entry.insert(wake.clone());
                let this = self.clone();
                tokio::spawn(
                    async move {
                        this.run_deletion(id, wake).await;
                        this.deleters.remove(&id);
                    }
                    .instrument(info_span!(parent: None, "deletion", sandbox_id = %id)),
                );
            }
        }
    }

    /// Issues the delete until the record is removed. The task ends on removal or shutdown; the
    /// reconciler starts a new one for a DELETING record that has none.
    async fn run_deletion(&self, id: SandboxId, wake: Arc<Notify>) {
        let Some(mut state) = self.store.subscribe(&id) else {
            return;
        };
        let mut shutdown = self.shutdown.clone();

        // A delete that arrives while the create is in flight waits for it, so that the driver
        // deletes the compute the create made instead of racing it.
        if let Some(mut done) = self.creating.get(&id).map(|entry| entry.clone()) {
            tokio::select! {
                _ = done.wait_for(|done| *done) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }

        let mut backoff = BACKOFF_START;
        loop {
            let Some(record) = self.store.get(&id) else {
                return;
            };
            let Some(deletion) = record.deletion.clone() else {
                error!("A deletion task runs for a record that is not DELETING");
                return;
            };
            let plan = DeletePlan {
                kill_at: deletion.kill_at,
                force: deletion.force,
            };

            let next_check = match self.driver.delete(&record, plan).await {
                Ok(()) => {
                    backoff = BACKOFF_START;
                    match self.driver.observe(&record).await {
                        Ok(observed) => {
                            self.apply(id, observed, RemovalPath::Request).await;
                        }
                        Err(error) => debug!(%error, "Observing a deletion failed"),
                    }
                    let now = SystemTime::now();
                    let until_kill = plan.kill_at.duration_since(now).unwrap_or_default();
                    if until_kill > Duration::ZERO {
                        until_kill + KILL_SLACK
                    } else {
                        DELETE_RECHECK
                    }
                }
                Err(error) => {
                    if error.is_transient() {
                        debug!(%error, "Issuing the delete failed; retrying");
                    } else {
                        error!(%error, "Issuing the delete failed; retrying");
                    }
                    // The record states why the deletion does not progress, so that a wait that
                    // times out meanwhile names the real cause.
                    let blocked = Observed::Present {
                        status: LiveStatus::Unknown(String::new()),
                        terminating: Some(format!("the delete cannot be issued yet: {error}")),
                    };
                    self.apply(id, blocked, RemovalPath::Request).await;
                    let wait = backoff;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    wait
                }
            };

            tokio::select! {
                _ = state.wait_for(|state| matches!(state, SandboxState::Removed(_))) => return,
                _ = wake.notified() => {}
                _ = tokio::time::sleep(next_check) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    }

    // ===== wait =====

    /// Waits until the sandbox with `id` is removed, for at most `timeout`.
    ///
    /// # Errors
    /// Returns [`ApiError::StillPresent`] with the last record when the timeout passes,
    /// [`ApiError::NotFound`] for an id that is neither recorded nor tombstoned, and
    /// [`ApiError::ShuttingDown`] when the server stops first.
    ///
    /// # Cancel safety
    /// Cancel safe: the wait only reads. Dropping it never affects the deletion.
    pub async fn wait_removed(
        &self,
        id: SandboxId,
        timeout: Duration,
    ) -> Result<Tombstone, ApiError> {
        // The index first, then the tombstones: a removal inserts its tombstone before it drops
        // the record, so one of the two always finds it.
        let Some(mut state) = self.store.subscribe(&id) else {
            return self
                .store
                .tombstone(&id)
                .ok_or_else(|| ApiError::NotFound(format!("sandbox with id {id}")));
        };
        let mut shutdown = self.shutdown.clone();
        debug!(sandbox_id = %id, timeout = ?timeout, "Waiting for removal");

        let removed = async {
            match state
                .wait_for(|state| matches!(state, SandboxState::Removed(_)))
                .await
            {
                Ok(state) => match &*state {
                    SandboxState::Removed(tombstone) => Some(tombstone.clone()),
                    SandboxState::Present(_) => None,
                },
                Err(_) => None,
            }
        };

        tokio::select! {
            tombstone = removed => match tombstone {
                Some(tombstone) => Ok(tombstone),
                None => self
                    .store
                    .tombstone(&id)
                    .ok_or_else(|| ApiError::NotFound(format!("sandbox with id {id}"))),
            },
            _ = tokio::time::sleep(timeout) => {
                match self.store.get(&id) {
                    Some(record) => Err(ApiError::StillPresent { record: Box::new(record), waited: timeout }),
                    None => self
                        .store
                        .tombstone(&id)
                        .ok_or_else(|| ApiError::NotFound(format!("sandbox with id {id}"))),
                }
            }
            _ = shutdown.wait_for(|stop| *stop) => Err(ApiError::ShuttingDown),
        }
    }
}
