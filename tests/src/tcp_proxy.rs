//! A loopback TCP proxy that a test puts in front of kube-apiserver or a gateway, so that it can
//! cut the connection: [`TcpProxy::cut`] resets every open connection and refuses new ones
//! until [`TcpProxy::restore`]. TLS passes through unchanged, so a gateway still verifies the
//! API server's certificate for 127.0.0.1.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A running proxy. Dropping it stops accepting and closes every connection.
pub struct TcpProxy {
    address: SocketAddr,
    cut: Arc<AtomicBool>,
    generation: watch::Sender<u64>,
    accepted: Arc<AtomicU64>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Starts a proxy on 127.0.0.1 on a free port that forwards to `upstream`, which must be a
    /// loopback address.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        assert!(
            upstream.ip().is_loopback(),
            "the test proxy forwards only to loopback addresses, not {upstream}"
        );
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let cut = Arc::new(AtomicBool::new(false));
        let (generation, _) = watch::channel(0u64);
        let accepted = Arc::new(AtomicU64::new(0));
        let accept_task = tokio::spawn(accept_loop(
            listener,
            upstream,
            cut.clone(),
            generation.clone(),
            accepted.clone(),
        ));
        Ok(Self {
            address,
            cut,
            generation,
            accepted,
            accept_task,
        })
    }

    /// Returns the address the proxy listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Returns the URL a kubeconfig uses to reach the API server through the proxy.
    pub fn url(&self) -> String {
        format!("https://{}", self.address)
    }

    /// Resets every open connection and refuses new ones until [`TcpProxy::restore`].
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.generation.send_modify(|generation| *generation += 1);
    }

    /// Accepts and forwards connections again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }

    /// Returns how many connections were forwarded so far.
    pub fn forwarded(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
        self.accept_task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    cut: Arc<AtomicBool>,
    generation: watch::Sender<u64>,
    accepted: Arc<AtomicU64>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        // Subscribe before reading the flag: a cut between the two then still reaches this
        // connection through the signal.
        let mut cut_signal = generation.subscribe();
        if cut.load(Ordering::SeqCst) {
            reset(client);
            continue;
        }
        accepted.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            let Ok(mut server) = TcpStream::connect(upstream).await else {
                reset(client);
                return;
            };
            let mut client = client;
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                _ = cut_signal.changed() => reset(client),
            }
        });
    }
}

/// Closes `stream` with a TCP reset: SO_LINGER of zero makes close send RST.
// tokio deprecates set_linger because a non-zero linger blocks the thread on drop; a zero
// linger does not block.
#[allow(deprecated)]
fn reset(stream: TcpStream) {
    let _ = stream.set_linger(Some(std::time::Duration::ZERO));
    drop(stream);
}
