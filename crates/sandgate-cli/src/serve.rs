//! `sandgate serve`, which runs the gateway until SIGTERM or SIGINT, and the hidden
//! `sandgate supervise`, which hands its arguments to the process driver's supervisor.

use std::ffi::OsString;
use std::future::Future;
use std::io::IsTerminal;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use sandgate_driver::Driver;
use sandgate_server::ServerConfig;
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

use crate::cli::{DriverKind, ServeArgs};
use crate::client::Failure;

/// Exit code after a second SIGTERM or SIGINT cut a graceful shutdown short (128 + SIGINT).
const EXIT_FORCED: i32 = 130;

/// Hands the raw arguments to the process driver's supervisor and exits with its code.
///
/// This runs before any tokio runtime or tracing subscriber exists, because the supervisor
/// sets up its own.
pub fn supervise(args: Vec<OsString>) -> ! {
    let code = sandgate_process::supervisor::main(args);
    std::process::exit(code)
}

/// Runs `sandgate serve` until a shutdown signal, then returns after the graceful shutdown.
pub fn serve(args: ServeArgs) -> Result<(), Failure> {
    init_tracing();
    let data_dir = match args.data_dir {
        Some(dir) => dir,
        None => default_data_dir().map_err(Failure::usage)?,
    };
    create_data_dir(&data_dir).map_err(|error| Failure::failed(format!("{error:#}")))?;

    let kube_config = sandgate_kube::KubeDriverConfig {
        kubeconfig: args.kubeconfig,
        namespace: args.namespace,
        instance: args.instance,
    };
    let config = ServerConfig {
        listen: args.listen,
        data_dir: data_dir.clone(),
        reconcile_interval: args.reconcile_interval,
        tombstone_retention: args.tombstone_retention,
        orphan_grace: args.orphan_grace,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| Failure::failed(format!("cannot start the async runtime: {error}")))?;

    let result = runtime.block_on(async move {
        let driver = match args.driver {
            DriverKind::Process => process_driver(&data_dir)?,
            DriverKind::Kubernetes => kube_driver(kube_config).await?,
        };
        let shutdown =
            shutdown_signal().context("cannot install the SIGTERM and SIGINT handlers")?;
        tracing::info!(
            listen = %config.listen,
            data_dir = %config.data_dir.display(),
            driver = driver.name(),
            "starting sandgate"
        );
        sandgate_server::run(config, driver, shutdown).await
    });
    match result {
        Ok(()) => {
            tracing::info!("sandgate stopped");
            Ok(())
        }
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "sandgate failed");
            Err(Failure::failed(format!("{error:#}")))
        }
    }
}

/// Creates the process driver, which starts each sandbox's supervisor as
/// `<this binary> supervise ...`.
fn process_driver(data_dir: &Path) -> anyhow::Result<Arc<dyn Driver>> {
    use sandgate_process::{CgroupMode, ProcessDriver, ProcessDriverConfig};

    let current_exe =
        std::env::current_exe().context("cannot find the path of the running sandgate binary")?;
    let config = ProcessDriverConfig {
        data_dir: data_dir.to_path_buf(),
        supervisor: vec![current_exe.into(), "supervise".into()],
        cgroup: CgroupMode::Auto,
    };
    let driver = ProcessDriver::new(config)
        .map_err(|error| anyhow::anyhow!("cannot start the process driver: {error}"))?;
    Ok(Arc::new(driver))
}

/// Connects the Kubernetes driver.
async fn kube_driver(config: sandgate_kube::KubeDriverConfig) -> anyhow::Result<Arc<dyn Driver>> {
    let driver = sandgate_kube::KubeDriver::connect(config)
        .await
        .map_err(|error| anyhow::anyhow!("cannot start the kubernetes driver: {error}"))?;
    Ok(Arc::new(driver))
}

/// Installs a subscriber that logs to stderr, filtered by RUST_LOG (default "info"), in color
/// only when stderr is a terminal.
fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Returns the default data directory: `$XDG_STATE_HOME/sandgate`, or
/// `~/.local/state/sandgate` when XDG_STATE_HOME is unset, empty or relative.
///
/// # Errors
/// Returns a message asking for --data-dir when neither variable gives a directory.
fn default_data_dir() -> Result<PathBuf, String> {
    data_dir_from(std::env::var_os("XDG_STATE_HOME"), std::env::var_os("HOME"))
}

fn data_dir_from(state_home: Option<OsString>, home: Option<OsString>) -> Result<PathBuf, String> {
    let absolute =
        |value: Option<OsString>| value.map(PathBuf::from).filter(|path| path.is_absolute());
    if let Some(state_home) = absolute(state_home) {
        return Ok(state_home.join("sandgate"));
    }
    if let Some(home) = absolute(home) {
        return Ok(home.join(".local/state/sandgate"));
    }
    Err(
        "cannot find a default data directory because neither XDG_STATE_HOME nor HOME is set \
         to an absolute path: give one with --data-dir DIR"
            .to_string(),
    )
}

/// Creates the data directory and its parents, readable by the owner only.
fn create_data_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() && !dir.is_dir() {
        anyhow::bail!(
            "invalid data directory {}: it exists and is not a directory; pass --data-dir a \
             directory path",
            dir.display()
        );
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))
}

/// Returns a future that completes at the first SIGTERM or SIGINT. A second signal during the
/// graceful shutdown exits at once, and recorded deletions continue at the next start.
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("received SIGTERM, shutting down"),
            _ = interrupt.recv() => tracing::info!("received SIGINT, shutting down"),
        }
        tokio::spawn(async move {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
            tracing::warn!("received a second shutdown signal, exiting without waiting");
            std::process::exit(EXIT_FORCED);
        });
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_dir_prefers_xdg_state_home() {
        let dir = data_dir_from(Some("/state".into()), Some("/home/me".into()));
        assert_eq!(dir, Ok(PathBuf::from("/state/sandgate")));
    }

    #[test]
    fn data_dir_falls_back_to_home() {
        let relative = data_dir_from(Some("state".into()), Some("/home/me".into()));
        assert_eq!(
            relative,
            Ok(PathBuf::from("/home/me/.local/state/sandgate"))
        );
        let unset = data_dir_from(None, Some("/home/me".into()));
        assert_eq!(unset, Ok(PathBuf::from("/home/me/.local/state/sandgate")));
    }

    #[test]
    fn data_dir_without_home_asks_for_flag() {
        let error = data_dir_from(None, None).unwrap_err();
        assert!(error.contains("--data-dir"), "{error}");
    }
}
