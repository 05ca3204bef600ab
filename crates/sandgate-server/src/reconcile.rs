//! The reconciler: at startup and then periodically, compares every store record with what the
//! driver observes, and settles what watch events alone could have missed.
//!
//! Each pass:
//! 1. lists everything the driver has, by sandbox id;
//! 2. walks every record in pages of ids. It re-drives the deletion of each DELETING record and
//!    completes those whose compute is gone. It applies the backend's state to live records,
//!    which makes compute that vanished without a delete ERROR. It resolves records whose
//!    creation a crash interrupted;
//! 3. deletes backend compute that has no record and is older than the orphan grace period;
//! 4. purges tombstones past their retention.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sandgate_core::lifecycle::{self, Change};
use sandgate_core::{LiveStatus, Observed, RemovalPath, SandboxRecord};
use sandgate_driver::Found;
use sandgate_store::Modified;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::lifecycle::Lifecycle;

/// Records per page of a pass.
const PAGE: usize = 500;
/// Age below which a record that the driver does not show yet is left alone: its creation may
/// still be reaching the backend.
const CREATION_GRACE: Duration = Duration::from_secs(10);
/// Reason of a record whose creation was interrupted before any compute existed.
pub const INTERRUPTED_REASON: &str =
    "creation was interrupted by a gateway restart before the sandbox started";

/// Settings of the reconciler.
#[derive(Clone, Copy, Debug)]
pub struct ReconcilerConfig {
    /// Time between passes.
    pub interval: Duration,
    /// Age after which compute without a record is deleted.
    pub orphan_grace: Duration,
    /// How long tombstones are kept.
    pub tombstone_retention: Duration,
}

/// Counts of one pass, for the log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Records examined.
    pub records: usize,
    /// DELETING records whose deletion was re-driven.
    pub deletions_driven: usize,
    /// Records removed because their compute was gone.
    pub removed: usize,
    /// Live records whose phase changed.
    pub changed: usize,
    /// Orphans deleted.
    pub orphans_deleted: usize,
    /// Tombstones purged.
    pub tombstones_purged: usize,
}

impl PassReport {
    /// Returns whether the pass changed nothing, so that it is logged at debug level only.
    pub fn is_quiet(&self) -> bool {
        self.removed == 0
            && self.changed == 0
            && self.orphans_deleted == 0
            && self.tombstones_purged == 0
    }
}

/// Runs passes until the server stops: one at once, then one per interval.
pub async fn run(lifecycle: Arc<Lifecycle>, config: ReconcilerConfig) {
    let mut shutdown = lifecycle.shutdown_signal();
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let span = info_span!("reconcile");
        match pass(&lifecycle, &config).instrument(span).await {
            Ok(report) if report.is_quiet() => debug!(
                records = report.records,
                deletions_driven = report.deletions_driven,
                "Reconciler pass finished with no change"
            ),
            Ok(report) => info!(
                records = report.records,
                deletions_driven = report.deletions_driven,
                removed = report.removed,
                changed = report.changed,
                orphans_deleted = report.orphans_deleted,
                tombstones_purged = report.tombstones_purged,
                "Reconciler pass finished"
            ),
            Err(error) => warn!(%error, "Reconciler pass failed; retrying at the next interval"),
        }
    }
}

/// Runs one pass.
///
/// # Errors
/// Returns the driver's error if it cannot list what it holds; nothing is changed then.
pub async fn pass(
    lifecycle: &Arc<Lifecycle>,
    config: &ReconcilerConfig,
) -> anyhow::Result<PassReport> {
    let store = lifecycle.store();
    let driver = lifecycle.driver();
    let mut report = PassReport::default();

    let mut found: HashMap<_, Found> = driver
        .list()
        .await?
        .into_iter()
        .map(|found| (found.id, found))
        .collect();
    let now = SystemTime::now();

    let mut after = None;
    loop {
        let ids = store.ids_after(after, PAGE);
        let Some(last) = ids.last() else {
            break;
        };
        after = Some(*last);
        for id in ids {
            let Some(record) = store.get(&id) else {
                continue;
            };
            report.records += 1;
            let backend = found.remove(&id);
            settle(lifecycle, &record, backend, now, &mut report).await;
        }
    }

    // What remains in `found` has no record.
    let mut candidates = Vec::new();
    for (id, orphan) in found {
        let tombstoned = store.tombstone(&id).is_some();
        if matches!(orphan.observed, Observed::Gone { .. }) {
            // Nothing of a removed sandbox runs, but the driver may still keep its files when
            // the removal was confirmed before the driver was asked to delete.
            if tombstoned && store.get(&id).is_none() {
                debug!(sandbox_id = %id, "Removing what the driver keeps of a removed sandbox");
                if let Err(error) = driver.delete_orphan(id).await {
                    warn!(sandbox_id = %id, %error, "Removing the files of a removed sandbox failed");
                }
            }
            continue;
        }
        let age = orphan
            .created_at
            .and_then(|created| now.duration_since(created).ok())
            .unwrap_or_default();
        if !tombstoned && age < config.orphan_grace {
            continue;
        }
        candidates.push((id, tombstoned, age));
    }
    // The list predates the walk over the records, so compute whose removal was confirmed in
    // between still shows in it. A second list, read after every candidate's record was found
    // missing, keeps only compute that is still there.
    let still_there: HashSet<_> = if candidates.is_empty() {
        HashSet::new()
    } else {
        driver
            .list()
            .await?
            .into_iter()
            .filter(|found| !matches!(found.observed, Observed::Gone { .. }))
            .map(|found| found.id)
            .collect()
    };
    for (id, tombstoned, age) in candidates {
        // A creation of this process may have committed its record after the list was read.
        if !still_there.contains(&id) || store.get(&id).is_some() {
            continue;
        }
        warn!(sandbox_id = %id, tombstoned, age = ?age, "Deleting compute that has no record");
        match driver.delete_orphan(id).await {
            Ok(()) => report.orphans_deleted += 1,
            Err(error) => error!(sandbox_id = %id, %error, "Deleting an orphan failed"),
        }
    }

    let before = now
        .checked_sub(config.tombstone_retention)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    match store.purge_tombstones(before).await {
        Ok(purged) => report.tombstones_purged = purged,
        Err(error) => error!(%error, "Purging tombstones failed"),
    }
    Ok(report)
}

async fn settle(
    lifecycle: &Arc<Lifecycle>,
    record: &SandboxRecord,
    backend: Option<Found>,
    now: SystemTime,
    report: &mut PassReport,
) {
    if lifecycle.is_creating(&record.id) {
        return;
    }
    let age = now.duration_since(record.created_at).unwrap_or_default();

    if record.is_deleting() {
        lifecycle.drive_deletion(record.id, false);
        report.deletions_driven += 1;
        let observed = match backend {
            Some(found) => found.observed,
            // Not listed: read it fresh before completing, since the list may predate a create.
            None => match lifecycle.driver().observe(record).await {
                Ok(observed) => observed,
                Err(error) => {
                    warn!(sandbox_id = %record.id, %error, "Observing a deletion failed");
                    return;
                }
            },
        };
        if let Some(Modified::Removed(_)) = lifecycle
            .apply(record.id, observed, RemovalPath::Reconciler)
            .await
        {
            report.removed += 1;
        }
        return;
    }

    let interrupted = record.driver.driver.is_empty();
    let observed = match backend {
        Some(found) if interrupted => {
            lifecycle.record_details(record.id, found.details).await;
            found.observed
        }
        // The list was read before the record, and across several API calls, so it may be older
        // than what the watchers last applied. A change it implies is confirmed with a fresh read
        // of this one sandbox first.
        Some(found) if would_change(record, &found.observed, now) => {
            match lifecycle.driver().observe(record).await {
                Ok(observed) => observed,
                Err(error) => {
                    warn!(sandbox_id = %record.id, %error, "Observing a sandbox failed");
                    return;
                }
            }
        }
        Some(found) => found.observed,
        None if age < CREATION_GRACE => return,
        None if interrupted => Observed::Present {
            status: LiveStatus::Error(INTERRUPTED_REASON.to_string()),
            terminating: None,
        },
        None => match lifecycle.driver().observe(record).await {
            Ok(observed) => observed,
            Err(error) => {
                warn!(sandbox_id = %record.id, %error, "Observing a sandbox failed");
                return;
            }
        },
    };
    if let Some(Modified::Updated(_)) = lifecycle
        .apply(record.id, observed, RemovalPath::Reconciler)
        .await
    {
        report.changed += 1;
    }
}

/// Returns whether applying `observed` would change `record`.
fn would_change(record: &SandboxRecord, observed: &Observed, now: SystemTime) -> bool {
    !matches!(
        lifecycle::apply_observation(record, observed, RemovalPath::Reconciler, now),
        Change::Unchanged
    )
}
