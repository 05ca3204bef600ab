//! WatchSandboxes streams: a snapshot (or a replay from a revision), then every change from the
//! store's event log.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use sandgate_core::validate;
use sandgate_core::{SandboxId, SandboxRecord};
use sandgate_proto::v1 as pb;
use sandgate_store::{EventKind, Since, StoreEvent};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tracing::{Instrument, debug, info_span};

use crate::convert;
use crate::error::ApiError;
use crate::lifecycle::Lifecycle;

/// The stream type of WatchSandboxes.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<pb::WatchEvent, Status>> + Send>>;

/// Events buffered per stream before the producer waits for the client.
const STREAM_BUFFER: usize = 256;

/// The set of sandboxes a stream follows.
#[derive(Clone, Debug)]
enum Scope {
    Workspace(String),
    All,
    One(SandboxId),
}

impl Scope {
    fn covers(&self, record: &SandboxRecord) -> bool {
        match self {
            Scope::Workspace(workspace) => record.workspace == *workspace,
            Scope::All => true,
            Scope::One(id) => record.id == *id,
        }
    }
}

/// Validates the request and starts the stream's producer task.
///
/// # Errors
/// Returns INVALID_ARGUMENT for a bad workspace, name or id, and NOT_FOUND for a sandbox that is
/// neither recorded nor tombstoned.
pub fn start(
    lifecycle: Arc<Lifecycle>,
    request: pb::WatchSandboxesRequest,
) -> Result<EventStream, Status> {
    let store = lifecycle.store();
    let (sender, receiver) = mpsc::channel(STREAM_BUFFER);

    let scope = match &request.target {
        Some(pb::watch_sandboxes_request::Target::Id(id)) => {
            let id = SandboxId::parse_field("id", id).map_err(ApiError::from)?;
            if store.get(&id).is_none() {
                let tombstone = store
                    .tombstone(&id)
                    .ok_or_else(|| ApiError::NotFound(format!("sandbox with id {id}")))?;
                let event = pb::WatchEvent {
                    r#type: pb::WatchEventType::Deleted as i32,
                    revision: store.revision(),
                    sandbox: Some(convert::sandbox_from_tombstone(&tombstone)),
                    snapshot: false,
                };
                let _ = sender.try_send(Ok(event));
                return Ok(Box::pin(ReceiverStream::new(receiver)));
            }
            Scope::One(id)
        }
        Some(pb::watch_sandboxes_request::Target::Name(name)) => {
            let workspace =
                validate::workspace("workspace", &request.workspace).map_err(ApiError::from)?;
            validate::name("name", name).map_err(ApiError::from)?;
            let record = store.get_by_name(&workspace, name).ok_or_else(|| {
                ApiError::NotFound(format!("sandbox {name:?} in workspace {workspace:?}"))
            })?;
            Scope::One(record.id)
        }
        None if request.all_workspaces => Scope::All,
        None => Scope::Workspace(
            validate::workspace("workspace", &request.workspace).map_err(ApiError::from)?,
        ),
    };

    let span = info_span!("watch", scope = ?scope);
    tokio::spawn(
        async move {
            let producer = Producer {
                lifecycle,
                scope,
                sender,
            };
            if let Err(reason) = producer.run(request.resume_revision).await {
                debug!(reason, "Watch stream ended");
            }
        }
        .instrument(span),
    );
    Ok(Box::pin(ReceiverStream::new(receiver)))
}

struct Producer {
    lifecycle: Arc<Lifecycle>,
    scope: Scope,
    sender: mpsc::Sender<Result<pb::WatchEvent, Status>>,
}

/// The reason a producer stopped.
type Stop = &'static str;

impl Producer {
    async fn send(&self, event: pb::WatchEvent) -> Result<(), Stop> {
        self.sender
            .send(Ok(event))
            .await
            .map_err(|_| "client went away")
    }

    /// Sends SYNCED at `revision`, marked as the end of a snapshot when `snapshot` is set.
    async fn synced(&self, revision: u64, snapshot: bool) -> Result<(), Stop> {
        self.send(pb::WatchEvent {
            r#type: pb::WatchEventType::Synced as i32,
            revision,
            sandbox: None,
            snapshot,
        })
        .await
    }

    /// Sends ADDED for every sandbox in scope, then SYNCED; returns the snapshot's revision.
    async fn snapshot(&self) -> Result<u64, Stop> {
        let (records, revision) = self.lifecycle.store().snapshot();
        for record in records.iter().filter(|record| self.scope.covers(record)) {
            self.send(pb::WatchEvent {
                r#type: pb::WatchEventType::Added as i32,
                revision: record.revision,
                sandbox: Some(convert::sandbox(record)),
                snapshot: true,
            })
            .await?;
        }
        self.synced(revision, true).await?;
        Ok(revision)
    }

    /// Sends the events in scope; returns the revision reached, and whether the one sandbox a
    /// stream follows was deleted.
    async fn replay(
        &self,
        events: &[Arc<StoreEvent>],
        mut cursor: u64,
    ) -> Result<(u64, bool), Stop> {
        for event in events {
            cursor = event.revision;
            if !self.scope.covers(&event.record) {
                continue;
            }
            let kind = match event.kind {
                EventKind::Added => pb::WatchEventType::Added,
                EventKind::Modified => pb::WatchEventType::Modified,
                EventKind::Deleted => pb::WatchEventType::Deleted,
            };
            let mut sandbox = convert::sandbox(&event.record);
            if event.kind == EventKind::Deleted {
                // The same reason as a DELETED event built from the tombstone, so that a reader
                // does not take the last DELETING reason for something still awaited.
                sandbox.phase_reason = convert::REMOVED_REASON.to_string();
                if let Some(tombstone) = self.lifecycle.store().tombstone(&event.record.id) {
                    sandbox.reason_since = convert::timestamp(tombstone.deleted_at);
                }
            }
            self.send(pb::WatchEvent {
                r#type: kind as i32,
                revision: event.revision,
                sandbox: Some(sandbox),
                snapshot: false,
            })
            .await?;
            if matches!(self.scope, Scope::One(_)) && event.kind == EventKind::Deleted {
                return Ok((cursor, true));
            }
        }
        Ok((cursor, false))
    }

    async fn run(self, resume: u64) -> Result<(), Stop> {
        let store = self.lifecycle.store().clone();
        // Subscribe before reading, so no change between the read and the wait is missed.
        let mut head = store.subscribe_revision();
        let mut shutdown = self.lifecycle_shutdown();

        let mut cursor = match (resume, store.events_since(resume)) {
            (1.., Since::Events(events)) => {
                let (cursor, ended) = self.replay(&events, resume).await?;
                if ended {
                    return Ok(());
                }
                self.synced(cursor, false).await?;
                cursor
            }
            _ => self.snapshot().await?,
        };
        if let Scope::One(id) = self.scope
            && store.get(&id).is_none()
        {
            // Removed before the snapshot: the stream's one sandbox is gone.
            if let Some(tombstone) = store.tombstone(&id) {
                self.send(pb::WatchEvent {
                    r#type: pb::WatchEventType::Deleted as i32,
                    revision: cursor,
                    sandbox: Some(convert::sandbox_from_tombstone(&tombstone)),
                    snapshot: false,
                })
                .await?;
            }
            return Ok(());
        }

        loop {
            match store.events_since(cursor) {
                Since::Events(events) if events.is_empty() => {
                    let stopping = tokio::select! {
                        changed = head.changed() => {
                            changed.map_err(|_| "store closed")?;
                            false
                        }
                        _ = self.sender.closed() => return Err("client went away"),
                        _ = shutdown.wait_for(|stop| *stop) => true,
                    };
                    if stopping {
                        let status = Status::unavailable(
                            "sandgate is shutting down: resume the watch from the last revision",
                        );
                        let _ = self.sender.send(Err(status)).await;
                        return Err("server shutting down");
                    }
                }
                Since::Events(events) => {
                    let (reached, ended) = self.replay(&events, cursor).await?;
                    if ended {
                        return Ok(());
                    }
                    cursor = reached;
                }
                Since::Expired => {
                    debug!(
                        cursor,
                        "Watch fell behind the event log; sending a fresh snapshot"
                    );
                    cursor = self.snapshot().await?;
                }
            }
        }
    }

    fn lifecycle_shutdown(&self) -> tokio::sync::watch::Receiver<bool> {
        self.lifecycle.shutdown_signal()
    }
}
