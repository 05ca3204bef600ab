//! The durable sandbox store. It keeps one record per sandbox in an in-memory index, backed by
//! SQLite in the data directory. It also keeps a store-wide revision, an event log for watches,
//! tombstones of removed sandboxes, and a per-sandbox channel that wakes waiters on removal.
//!
//! # Consistency
//! Every write runs under one lock: the database transaction commits first, then the index, the
//! event log and the per-sandbox channel change. A write that fails in the database changes
//! nothing in memory.
//!
//! A removal runs in this order: insert the tombstone, drop the record from the index, then
//! publish the removal on the sandbox's channel. A waiter looks up the index first and the
//! tombstones second, so it either has the channel before the removal is published (and finds
//! it, since a `watch` channel keeps its latest value) or finds the tombstone. No removal can
//! slip between a waiter's check and its wait.

pub mod error;
pub mod events;
pub mod lock;
pub mod persistence;

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use dashmap::DashMap;
use parking_lot::{Mutex, RwLock};
use sandgate_core::{SandboxId, SandboxRecord, Tombstone};
use tokio::sync::watch;

pub use error::StoreError;
pub use events::{EventKind, Since, StoreEvent};
pub use persistence::{Loaded, Persistence, Sqlite};

use events::EventLog;
use lock::DirectoryLock;

/// Name of the database file in the data directory.
pub const DATABASE_FILE: &str = "sandgate.db";

/// A test hook that returns a message while store writes should fail.
pub type FaultProbe = Box<dyn Fn() -> Option<String> + Send + Sync>;

/// Latest state of one sandbox, as its channel carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SandboxState {
    /// The record as last written.
    Present(SandboxRecord),
    /// The sandbox was removed.
    Removed(Tombstone),
}

/// A change computed from the current record, applied by [`Store::modify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    /// Write nothing.
    Keep,
    /// Replace the record.
    Update(SandboxRecord),
    /// Remove the record, keeping this tombstone.
    Remove(Tombstone),
}

/// The result of [`Store::modify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Modified {
    /// No record has that id.
    Missing,
    /// Nothing was written; this is the current record.
    Kept(SandboxRecord),
    /// This record was written.
    Updated(SandboxRecord),
    /// The record was removed with this tombstone.
    Removed(Tombstone),
}

/// Settings of a store.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// How many recent events watch streams can resume from.
    pub event_log_capacity: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            event_log_capacity: 10_000,
        }
    }
}

struct Entry {
    record: SandboxRecord,
    state: watch::Sender<SandboxState>,
}

struct Inner {
    persistence: Mutex<Box<dyn Persistence>>,
    index: DashMap<SandboxId, Entry>,
    names: DashMap<(String, String), SandboxId>,
    tombstones: DashMap<SandboxId, Tombstone>,
    log: RwLock<EventLog>,
    head: watch::Sender<u64>,
    fault: Mutex<Option<String>>,
    fault_probe: Mutex<Option<FaultProbe>>,
    _lock: Option<DirectoryLock>,
}

/// The sandbox store. Cloning is cheap and shares the store.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl Store {
    /// Opens the store in `data_dir`: takes the directory's lock, opens or creates the database,
    /// applies migrations and loads every record and tombstone.
    ///
    /// # Errors
    /// Returns [`StoreError::DirectoryInUse`] if another `sandgate serve` has the directory locked,
    /// and other variants if the database cannot be opened or read.
    pub fn open(data_dir: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        let lock = DirectoryLock::acquire(data_dir)?;
        let sqlite = Sqlite::open(&data_dir.join(DATABASE_FILE))?;
        Self::with_persistence(Box::new(sqlite), Some(lock), options)
    }

    /// Builds a store over any [`Persistence`], for tests and other backends.
    ///
    /// # Errors
    /// Returns an error if loading fails.
    pub fn with_persistence(
        mut persistence: Box<dyn Persistence>,
        lock: Option<DirectoryLock>,
        options: StoreOptions,
    ) -> Result<Self, StoreError> {
        let loaded = persistence.load()?;
        let index = DashMap::new();
        let names = DashMap::new();
        for record in loaded.records {
            names.insert((record.workspace.clone(), record.name.clone()), record.id);
            let (state, _) = watch::channel(SandboxState::Present(record.clone()));
            index.insert(record.id, Entry { record, state });
        }
        let tombstones = loaded
            .tombstones
            .into_iter()
            .map(|tombstone| (tombstone.id, tombstone))
            .collect();
        let (head, _) = watch::channel(loaded.revision);

        Ok(Self {
            inner: Arc::new(Inner {
                persistence: Mutex::new(persistence),
                index,
                names,
                tombstones,
                log: RwLock::new(EventLog::new(loaded.revision, options.event_log_capacity)),
                head,
                fault: Mutex::new(None),
                fault_probe: Mutex::new(None),
                _lock: lock,
            }),
        })
    }

    // ===== reads =====

    /// Returns the record with this id.
    pub fn get(&self, id: &SandboxId) -> Option<SandboxRecord> {
        self.inner.index.get(id).map(|entry| entry.record.clone())
    }

    /// Returns the live or DELETING record holding `name` in `workspace`.
    pub fn get_by_name(&self, workspace: &str, name: &str) -> Option<SandboxRecord> {
        let id = *self
            .inner
            .names
            .get(&(workspace.to_string(), name.to_string()))?;
        self.get(&id)
    }

    /// Returns the tombstone of a removed sandbox, while it is retained.
    pub fn tombstone(&self, id: &SandboxId) -> Option<Tombstone> {
        self.inner.tombstones.get(id).map(|entry| entry.clone())
    }

    /// Returns the channel of one sandbox's state, for waiting on its removal.
    ///
    /// `None` means no record has the id: look for its tombstone next. Because a removal inserts
    /// the tombstone before it drops the record, checking in this order never misses both.
    pub fn subscribe(&self, id: &SandboxId) -> Option<watch::Receiver<SandboxState>> {
        self.inner
            .index
            .get(id)
            .map(|entry| entry.state.subscribe())
    }

    /// Returns every record, ordered by workspace and name.
    pub fn records(&self) -> Vec<SandboxRecord> {
        let mut records: Vec<SandboxRecord> = self
            .inner
            .index
            .iter()
            .map(|entry| entry.record.clone())
            .collect();
        records.sort_by(|a, b| (&a.workspace, &a.name).cmp(&(&b.workspace, &b.name)));
        records
    }

    /// Returns the number of records.
    pub fn len(&self) -> usize {
        self.inner.index.len()
    }

    /// Returns whether the store has no record.
    pub fn is_empty(&self) -> bool {
        self.inner.index.is_empty()
    }

    /// Returns up to `limit` record ids greater than `after`, in id order, for passes over every
    /// record in pages.
    pub fn ids_after(&self, after: Option<SandboxId>, limit: usize) -> Vec<SandboxId> {
        let mut ids: Vec<SandboxId> = self
            .inner
            .index
            .iter()
            .map(|entry| *entry.key())
            .filter(|id| after.is_none_or(|after| *id > after))
            .collect();
        ids.sort();
        ids.truncate(limit);
        ids
    }

    /// Returns the revision of the latest change.
    pub fn revision(&self) -> u64 {
        self.inner.log.read().head()
    }

    /// Returns every record together with the revision they were read at. No write interleaves.
    pub fn snapshot(&self) -> (Vec<SandboxRecord>, u64) {
        let _writes = self.inner.persistence.lock();
        let revision = self.revision();
        (self.records(), revision)
    }

    /// Returns the events after `revision`, or [`Since::Expired`] if they are no longer retained.
    pub fn events_since(&self, revision: u64) -> Since {
        self.inner.log.read().since(revision)
    }

    /// Returns a channel of the latest revision, which changes after every write.
    pub fn subscribe_revision(&self) -> watch::Receiver<u64> {
        self.inner.head.subscribe()
    }

    /// Returns the tombstones retained, oldest first.
    pub fn tombstones(&self) -> Vec<Tombstone> {
        let mut all: Vec<Tombstone> = self
            .inner
            .tombstones
            .iter()
            .map(|entry| entry.clone())
            .collect();
        all.sort_by_key(|tombstone| tombstone.deleted_at);
        all
    }

    // ===== writes =====

    /// Makes every later write fail with `message` until called with `None`. This hook exists
    /// only for tests of store failures; the server enables it only through a test-only setting.
    pub fn inject_write_fault(&self, message: Option<String>) {
        *self.inner.fault.lock() = message;
    }

    /// Consults `probe` before every write, and fails the write with its message when it returns
    /// one. Like [`Store::inject_write_fault`], this exists only for tests.
    pub fn set_fault_probe(&self, probe: FaultProbe) {
        *self.inner.fault_probe.lock() = Some(probe);
    }

    /// Commits a new record, assigning its revision.
    ///
    /// # Errors
    /// Returns [`StoreError::NameTaken`] if a live or DELETING sandbox has the name, or a
    /// database error; nothing is written then.
    ///
    /// # Cancel safety
    /// The write runs on a blocking thread: dropping the future does not stop it, and the record
    /// may be committed even though the caller never sees the result.
    pub async fn insert(&self, record: SandboxRecord) -> Result<SandboxRecord, StoreError> {
        let inner = self.inner.clone();
        run_blocking(move || inner.insert(record)).await
    }

    /// Computes a change from the current record with `change` and commits it, as one atomic step.
    ///
    /// # Errors
    /// Returns a database error; nothing is written then.
    ///
    /// # Cancel safety
    /// As for [`Store::insert`]: once called, the write completes even if the future is dropped.
    pub async fn modify<F>(&self, id: SandboxId, change: F) -> Result<Modified, StoreError>
    where
        F: FnOnce(&SandboxRecord) -> Write + Send + 'static,
    {
        let inner = self.inner.clone();
        run_blocking(move || inner.modify(id, change)).await
    }

    /// Deletes tombstones of removals confirmed before `before`, returning how many.
    ///
    /// # Errors
    /// Returns a database error.
    ///
    /// # Cancel safety
    /// As for [`Store::insert`].
    pub async fn purge_tombstones(&self, before: SystemTime) -> Result<usize, StoreError> {
        let inner = self.inner.clone();
        run_blocking(move || {
            let mut persistence = inner.persistence.lock();
            let purged = persistence.purge_tombstones(before)?;
            inner
                .tombstones
                .retain(|_, tombstone| tombstone.deleted_at >= before);
            Ok(purged)
        })
        .await
    }
}

async fn run_blocking<T, F>(work: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| StoreError::Task(error.to_string()))?
}

impl Inner {
    fn check_fault(&self) -> Result<(), StoreError> {
        if let Some(message) = self.fault.lock().as_ref() {
            return Err(StoreError::InjectedFault(message.clone()));
        }
        if let Some(message) = self.fault_probe.lock().as_ref().and_then(|probe| probe()) {
            return Err(StoreError::InjectedFault(message));
        }
        Ok(())
    }

    fn insert(&self, mut record: SandboxRecord) -> Result<SandboxRecord, StoreError> {
        let mut persistence = self.persistence.lock();
        let key = (record.workspace.clone(), record.name.clone());
        if let Some(holder) = self.names.get(&key).and_then(|id| self.index.get(&id)) {
            return Err(StoreError::NameTaken {
                workspace: record.workspace,
                name: record.name,
                holder: Box::new(holder.record.clone()),
            });
        }
        self.check_fault()?;

        record.revision = self.log.read().head() + 1;
        persistence.insert(&record)?;

        let (state, _) = watch::channel(SandboxState::Present(record.clone()));
        self.index.insert(
            record.id,
            Entry {
                record: record.clone(),
                state,
            },
        );
        self.names.insert(key, record.id);
        self.publish(EventKind::Added, record.clone(), None);
        Ok(record)
    }

    fn modify<F>(&self, id: SandboxId, change: F) -> Result<Modified, StoreError>
    where
        F: FnOnce(&SandboxRecord) -> Write,
    {
        let mut persistence = self.persistence.lock();
        let Some(current) = self.index.get(&id).map(|entry| entry.record.clone()) else {
            return Ok(Modified::Missing);
        };
        let revision = self.log.read().head() + 1;

        match change(&current) {
            Write::Keep => Ok(Modified::Kept(current)),
            Write::Update(mut record) => {
                if record == current {
                    return Ok(Modified::Kept(current));
                }
                self.check_fault()?;
                record.revision = revision;
                persistence.update(&record)?;
                if let Some(mut entry) = self.index.get_mut(&id) {
                    entry.record = record.clone();
                    entry
                        .state
                        .send_replace(SandboxState::Present(record.clone()));
                }
                self.publish(EventKind::Modified, record.clone(), None);
                Ok(Modified::Updated(record))
            }
            Write::Remove(tombstone) => {
                self.check_fault()?;
                persistence.remove(&tombstone, revision)?;
                self.tombstones.insert(id, tombstone.clone());
                let entry = self.index.remove(&id).map(|(_, entry)| entry);
                self.names.remove_if(
                    &(current.workspace.clone(), current.name.clone()),
                    |_, v| *v == id,
                );
                let mut last = current;
                last.revision = revision;
                self.publish(EventKind::Deleted, last, Some(tombstone.clone()));
                if let Some(entry) = entry {
                    entry
                        .state
                        .send_replace(SandboxState::Removed(tombstone.clone()));
                }
                Ok(Modified::Removed(tombstone))
            }
        }
    }

    fn publish(&self, kind: EventKind, record: SandboxRecord, tombstone: Option<Tombstone>) {
        let revision = record.revision;
        self.log.write().push(StoreEvent {
            revision,
            kind,
            record,
            tombstone,
        });
        self.head.send_replace(revision);
    }
}

#[cfg(test)]
mod tests;
