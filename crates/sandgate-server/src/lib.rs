//! The sandgate server: the gRPC service, lifecycle orchestration, delete-and-wait, watch streams
//! and the reconciler, over a store and a driver.

pub mod convert;
pub mod error;
pub mod faults;
pub mod lifecycle;
pub mod reconcile;
pub mod service;
pub mod watch;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sandgate_core::RemovalPath;
use sandgate_driver::{Driver, Observation};
use sandgate_proto::v1::sandbox_service_server::SandboxServiceServer;
use sandgate_store::{Store, StoreOptions};
use tokio::sync::mpsc;
use tracing::{Instrument, info, info_span, warn};

use crate::lifecycle::Lifecycle;
use crate::reconcile::ReconcilerConfig;

/// Settings of one `sandgate serve`.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Address to listen on; must be loopback.
    pub listen: SocketAddr,
    /// Directory of the store (and of the process driver's sandboxes).
    pub data_dir: PathBuf,
    /// Time between reconciler passes; at least 1 s.
    pub reconcile_interval: Duration,
    /// How long tombstones are kept.
    pub tombstone_retention: Duration,
    /// Age after which backend objects without a record are deleted.
    pub orphan_grace: Duration,
}

/// Time that open calls get to finish after a shutdown was requested.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Calls that one HTTP/2 connection may have open at once; clients queue the rest.
///
/// Without a limit, a client that opens thousands of calls at once gets its connection closed
/// with GOAWAY ENHANCE_YOUR_CALM. h2 (0.4.21) allows 512 KiB, half the connection window, of
/// unread DATA frame overhead. It charges 256 bytes less the payload for each small frame, and
/// each call's request is one small frame, so about 2,700 unread requests close a connection.
const MAX_CONCURRENT_STREAMS: u32 = 1000;

/// Shortest reconcile interval accepted.
pub const MIN_RECONCILE_INTERVAL: Duration = Duration::from_secs(1);

/// Runs the server until `shutdown` completes, then returns UNAVAILABLE to waiting callers and
/// returns. Sandboxes keep running; deletions under way continue at the next start.
///
/// # Errors
/// Returns an error if the data directory is in use or unreadable, the listen address is not
/// loopback or cannot be bound, or the driver fails to start.
pub async fn run(
    config: ServerConfig,
    driver: Arc<dyn Driver>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    if !config.listen.ip().is_loopback() {
        anyhow::bail!(
            "invalid listen address {}: sandgate runs any command it is given and does not \
             authenticate callers yet, so it listens only on loopback, such as 127.0.0.1:7878",
            config.listen
        );
    }
    if config.reconcile_interval < MIN_RECONCILE_INTERVAL {
        anyhow::bail!(
            "invalid reconcile interval {:?}: use at least 1s",
            config.reconcile_interval
        );
    }

    let store = Store::open(&config.data_dir, StoreOptions::default())?;
    faults::install_store_fault(&store);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let local = listener.local_addr()?;

    let (observations, mut observed) = mpsc::unbounded_channel::<Observation>();
    driver
        .start(store.records(), observations)
        .await
        .context("starting the driver failed")?;

    let (stop, stop_signal) = tokio::sync::watch::channel(false);
    let lifecycle = Arc::new(Lifecycle::new(store.clone(), driver.clone(), stop_signal));

    // Deletions that an earlier run accepted continue at once. The reconciler re-drives them
    // too, but its pass walks the records in id order, so a gateway that crashes again soon
    // after each start may never reach the last ones.
    let mut resumed = 0;
    for record in store.records() {
        if record.is_deleting() {
            lifecycle.drive_deletion(record.id, false);
            resumed += 1;
        }
    }
    if resumed > 0 {
        info!(
            deletions = resumed,
            "Resuming deletions of the previous run"
        );
    }

    let observer = {
        let lifecycle = lifecycle.clone();
        tokio::spawn(
            async move {
                while let Some(observation) = observed.recv().await {
                    lifecycle
                        .apply(observation.id, observation.observed, RemovalPath::Request)
                        .await;
                }
            }
            .instrument(info_span!("observer")),
        )
    };
    let reconciler = tokio::spawn(reconcile::run(
        lifecycle.clone(),
        ReconcilerConfig {
            interval: config.reconcile_interval,
            orphan_grace: config.orphan_grace,
            tombstone_retention: config.tombstone_retention,
        },
    ));

    info!(
        listen = %local,
        data_dir = %config.data_dir.display(),
        driver = driver.name(),
        records = store.len(),
        "sandgate serving"
    );

    let service = service::Service::new(lifecycle.clone());
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let (stopping, stopped) = tokio::sync::oneshot::channel();
    let signal = async move {
        shutdown.await;
        info!("Shutting down: rejecting new calls and returning UNAVAILABLE to waiting calls");
        let _ = stop.send(true);
        let _ = stopping.send(());
    };
    let mut server = tokio::spawn(
        tonic::transport::Server::builder()
            .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
            .add_service(SandboxServiceServer::new(service))
            .serve_with_incoming_shutdown(incoming, signal),
    );
    // A client that never reads its response would hold a graceful shutdown open forever, so the
    // calls get a bounded time to finish.
    let drained = async {
        if stopped.await.is_ok() {
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = &mut server => {
            result.context("the gRPC server task failed")?.context("serving gRPC failed")?;
        }
        _ = drained => {
            warn!(grace = ?SHUTDOWN_GRACE, "Connections still open after the shutdown grace; closing them");
            server.abort();
        }
    }

    reconciler.abort();
    observer.abort();
    info!("sandgate stopped; sandboxes keep running");
    Ok(())
}
