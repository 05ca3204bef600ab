//! The store's event log: the recent changes that watch streams replay and resume from.

use std::collections::VecDeque;
use std::sync::Arc;

use sandgate_core::{SandboxRecord, Tombstone};

/// Kind of a store change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A record was inserted.
    Added,
    /// A record changed.
    Modified,
    /// A record was removed.
    Deleted,
}

/// One committed change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreEvent {
    /// Revision of the change; revisions increase by one per change across the store.
    pub revision: u64,
    /// What happened.
    pub kind: EventKind,
    /// The record after the change; for `Deleted`, the last record before removal.
    pub record: SandboxRecord,
    /// The tombstone, for `Deleted`.
    pub tombstone: Option<Tombstone>,
}

/// Result of asking for the events after a revision.
#[derive(Debug)]
pub enum Since {
    /// Every event after the revision, oldest first (possibly none).
    Events(Vec<Arc<StoreEvent>>),
    /// Some of those events are no longer retained: the caller needs a fresh snapshot.
    Expired,
}

/// A bounded log of the most recent events.
#[derive(Debug)]
pub struct EventLog {
    events: VecDeque<Arc<StoreEvent>>,
    capacity: usize,
    head: u64,
}

impl EventLog {
    /// Creates an empty log whose last revision is `head`, keeping at most `capacity` events.
    pub fn new(head: u64, capacity: usize) -> Self {
        Self {
            events: VecDeque::with_capacity(capacity.min(1024)),
            capacity: capacity.max(1),
            head,
        }
    }

    /// Returns the revision of the latest change.
    pub fn head(&self) -> u64 {
        self.head
    }

    /// Appends an event, dropping the oldest past capacity.
    pub fn push(&mut self, event: StoreEvent) {
        self.head = event.revision;
        if self.events.len() == self.capacity {
            self.events.pop_front();
        }
        self.events.push_back(Arc::new(event));
    }

    /// Returns the events after `revision`, or [`Since::Expired`] if the log no longer contains all
    /// of them (or `revision` is from the future, as after a restore from an older backup).
    pub fn since(&self, revision: u64) -> Since {
        if revision == self.head {
            return Since::Events(Vec::new());
        }
        if revision > self.head {
            return Since::Expired;
        }
        let Some(oldest) = self.events.front() else {
            return Since::Expired;
        };
        if oldest.revision > revision + 1 {
            return Since::Expired;
        }
        let skip = (revision + 1 - oldest.revision) as usize;
        Since::Events(self.events.iter().skip(skip).cloned().collect())
    }
}
