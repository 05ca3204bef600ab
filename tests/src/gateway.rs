//! A `sandgate serve` started from the real binary on a free loopback port, with a temporary data
//! directory, for end-to-end tests.
//!
//! The gateway listens on `127.0.0.1:0` and the harness reads the bound address from its log, so
//! parallel tests never race for a port. Dropping a [`Gateway`] kills it, and kills every sandbox
//! process recorded in its data directory, so nothing a test started outlives it, also when the
//! test fails.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sandgate_proto::v1::sandbox_service_client::SandboxServiceClient;
use tonic::transport::Channel;

/// How long a gateway may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Returns the path of the `sandgate` binary: `SANDGATE_BIN`, else the workspace's debug build.
///
/// # Panics
/// Panics with the command to run if the binary does not exist.
pub fn sandgate_binary() -> PathBuf {
    let path = match std::env::var_os("SANDGATE_BIN") {
        Some(path) => PathBuf::from(path),
        None => {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
            // A release build of the tests, such as a benchmark, runs the release binary.
            let profile = if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            };
            target.join(profile).join("sandgate")
        }
    };
    assert!(
        path.exists(),
        "sandgate binary {} not found: build it with `cargo build -p sandgate-cli` (with \
         --release for a release build of the tests), or set SANDGATE_BIN",
        path.display()
    );
    path
}

/// A running gateway.
pub struct Gateway {
    child: Option<Child>,
    data_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    address: String,
    log: Arc<Mutex<Vec<String>>>,
    extra_args: Vec<String>,
    env: Vec<(String, String)>,
}

/// Options for starting a gateway.
#[derive(Clone, Debug, Default)]
pub struct GatewayOptions {
    /// Extra arguments after `serve`.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
}

impl Gateway {
    /// Starts a gateway on a new temporary data directory, with a 1 s reconcile interval.
    pub fn start() -> Self {
        Self::start_with(GatewayOptions::default())
    }

    /// Starts a gateway with extra options.
    pub fn start_with(options: GatewayOptions) -> Self {
        let temp = tempfile::Builder::new()
            .prefix("sandgate-e2e-")
            .tempdir()
            .expect("temporary data directory");
        let data_dir = temp.path().to_path_buf();
        let mut gateway = Self {
            child: None,
            data_dir,
            _temp: Some(temp),
            address: String::new(),
            log: Arc::new(Mutex::new(Vec::new())),
            extra_args: options.args,
            env: options.env,
        };
        gateway.spawn();
        gateway
    }

    /// Starts the gateway process again on the same data directory, after [`Gateway::kill`] or
    /// [`Gateway::terminate`]. The address may change.
    pub fn restart(&mut self) {
        assert!(
            self.child.is_none(),
            "restart needs the previous gateway stopped first"
        );
        self.spawn();
    }

    /// Starts the gateway process again with different environment variables.
    pub fn restart_with_env(&mut self, env: Vec<(String, String)>) {
        self.env = env;
        self.restart();
    }

    fn spawn(&mut self) {
        let mut command = Command::new(sandgate_binary());
        command
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--reconcile-interval")
            .arg("1s")
            .args(&self.extra_args)
            .env("RUST_LOG", "info,sandgate_server=debug")
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("sandgate serve starts");

        let stderr = child.stderr.take().expect("piped stderr");
        let (address_tx, address_rx) = std::sync::mpsc::channel();
        let log = self.log.clone();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if !sent && let Some(address) = listen_address(&line) {
                    let _ = address_tx.send(address);
                    sent = true;
                }
                log.lock().unwrap().push(line);
            }
        });

        match address_rx.recv_timeout(START_TIMEOUT) {
            Ok(address) => self.address = address,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "sandgate serve did not report a listen address within {START_TIMEOUT:?}; \
                     its log:\n{}",
                    self.log_text()
                );
            }
        }
        self.child = Some(child);
    }

    /// Returns the gateway's URL, such as `http://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Returns the data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Returns the gateway's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("gateway running").id()
    }

    /// Returns everything the gateway logged so far.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Returns the number of log lines so far, for [`Gateway::wait_for_log_since`].
    pub fn log_mark(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// Waits until a log line contains `needle`, failing after `timeout`.
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) {
        self.wait_for_log_since(0, needle, timeout).await;
    }

    /// Waits until a log line after the first `mark` lines contains `needle`, failing after
    /// `timeout`.
    pub async fn wait_for_log_since(&self, mark: usize, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self
                .log
                .lock()
                .unwrap()
                .iter()
                .skip(mark)
                .any(|line| line.contains(needle))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "the gateway did not log {needle:?} within {timeout:?}; its log:\n{}",
            self.log_text()
        );
    }

    /// Returns a connected gRPC client.
    pub async fn client(&self) -> SandboxServiceClient<Channel> {
        SandboxServiceClient::connect(self.url())
            .await
            .expect("connect to the gateway")
    }

    /// Runs the `sandgate` CLI against this gateway.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(sandgate_binary())
            .args(args)
            .env("SANDGATE_SERVER", self.url())
            .env_remove("SANDGATE_WORKSPACE")
            .stdin(Stdio::null())
            .output()
            .expect("run the sandgate CLI")
    }

    /// Kills the gateway with SIGKILL, as a crash would, leaving its sandboxes running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits for the gateway to exit, returning its exit status.
    pub fn terminate(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("gateway running");
        send_signal(child.id() as i32, libc::SIGTERM);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("wait for the gateway") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the gateway did not exit within {timeout:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the gateway process to exit on its own, returning its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("gateway running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("wait for the gateway") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the gateway did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
        crate::processes::kill_sandboxes(&self.data_dir);
        crate::processes::remove_cgroups(&self.data_dir);
        if std::thread::panicking() {
            eprintln!("--- sandgate serve log ---\n{}\n---", self.log_text());
        }
    }
}

/// Reads `listen=ADDR` from the gateway's start line.
fn listen_address(line: &str) -> Option<String> {
    if !line.contains("sandgate serving") {
        return None;
    }
    let start = line.find("listen=")? + "listen=".len();
    let rest = &line[start..];
    let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
    Some(rest[..end].to_string())
}

/// Sends `signal` to `pid`.
pub fn send_signal(pid: i32, signal: i32) {
    // SAFETY: kill(2) takes plain integers and has no memory effects.
    unsafe {
        libc::kill(pid, signal);
    }
}
