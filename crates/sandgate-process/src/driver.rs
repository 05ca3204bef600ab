//! [`ProcessDriver`]: the [`Driver`] implementation that starts supervisors, requests
//! deletions through `control.json`, and watches each sandbox with one task.
//!
//! The gateway kills a sandbox itself only as a backstop. It does so when a deletion's kill time
//! plus [`BACKSTOP_DELAY`] has passed and the supervisor still runs. It also does so when the
//! supervisor is gone while the sandbox cgroup is still populated.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use rustix::process::{Pid, Signal};
use sandgate_core::{DriverDetails, Observed, SandboxId, SandboxRecord};
use sandgate_driver::{DeletePlan, Driver, DriverError, Found, Observation};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::cgroup;
use crate::files::{
    self, CONTROL_FILE, ControlFile, LOG_FILE, SPEC_FILE, SandboxDir, SpecFile, WORK_DIR,
};
use crate::procfs;
use crate::snapshot::{DRIVER_NAME, Snapshot};
use crate::watch::{self, ChangeWatch, ExitWatch};

/// How long after a deletion's kill time the gateway waits for the supervisor before it kills
/// the sandbox itself.
pub const BACKSTOP_DELAY: Duration = Duration::from_secs(3);

/// Interval of the re-check that a watcher makes even when no event arrives, as a safety net.
const SAFETY_NET_INTERVAL: Duration = Duration::from_secs(60);

/// How long `create` waits for the supervisor to report that it started the command.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether the driver uses cgroup v2.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CgroupMode {
    /// Use a cgroup per sandbox if the cgroup2 file system is mounted and writable.
    #[default]
    Auto,
    /// Track processes only with the subreaper and `/proc`.
    Off,
}

/// Configuration of a [`ProcessDriver`].
#[derive(Clone, Debug)]
pub struct ProcessDriverConfig {
    /// Directory whose `sandboxes/<id>/` subdirectories hold the sandboxes.
    pub data_dir: PathBuf,
    /// Program and leading arguments that start a supervisor, such as
    /// `[current_exe, "supervise"]`. The driver appends the sandbox directory.
    pub supervisor: Vec<OsString>,
    /// Whether to use cgroup v2.
    pub cgroup: CgroupMode,
}

/// The driver that runs sandboxes as local processes.
pub struct ProcessDriver {
    inner: Arc<Inner>,
}

struct Inner {
    config: ProcessDriverConfig,
    sandboxes_dir: PathBuf,
    cgroup_base: Option<PathBuf>,
    sink: Mutex<Option<mpsc::UnboundedSender<Observation>>>,
    watchers: Mutex<HashMap<SandboxId, JoinHandle<()>>>,
    create_lock: tokio::sync::Mutex<()>,
}

fn transient(what: &str, path: &Path, error: impl std::fmt::Display) -> DriverError {
    DriverError::Transient(format!("{what} {}: {error}", path.display()))
}

/// Returns a stable 48-bit FNV-1a hash of `bytes` as 12 hex digits, to name the cgroup of one
/// data directory.
fn short_hash(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{:012x}", hash & 0xffff_ffff_ffff)
}

impl ProcessDriver {
    /// Creates the driver: creates `<data_dir>/sandboxes` and, in [`CgroupMode::Auto`], finds
    /// or creates the cgroup under which sandbox cgroups go. Logs which tracking it uses.
    ///
    /// # Errors
    /// Returns [`DriverError::Permanent`] if the supervisor command is empty or the sandboxes
    /// directory cannot be created.
    pub fn new(config: ProcessDriverConfig) -> Result<Self, DriverError> {
        if config.supervisor.is_empty() {
            return Err(DriverError::Permanent(
                "the supervisor command is empty: set it to the gateway's own program and its \
                 supervise subcommand"
                    .to_string(),
            ));
        }
        let sandboxes_dir = config.data_dir.join("sandboxes");
        fs::create_dir_all(&sandboxes_dir).map_err(|error| {
            DriverError::Permanent(format!(
                "failed to create {}: {error}",
                sandboxes_dir.display()
            ))
        })?;
        let canonical = fs::canonicalize(&sandboxes_dir).unwrap_or_else(|_| sandboxes_dir.clone());

        let cgroup_base = match config.cgroup {
            CgroupMode::Off => {
                tracing::info!(
                    data_dir = %config.data_dir.display(),
                    "cgroup tracking is off by configuration, so sandboxes are tracked by the \
                     supervisor as subreaper and by /proc"
                );
                None
            }
            CgroupMode::Auto => {
                match cgroup::find_base(&short_hash(canonical.as_os_str().as_encoded_bytes())) {
                    Ok(base) => {
                        tracing::info!(
                            cgroup = %base.display(),
                            "each sandbox gets a cgroup v2 under this directory"
                        );
                        Some(base)
                    }
                    Err(reason) => {
                        tracing::info!(
                            %reason,
                            "cgroup v2 is not used, so sandboxes are tracked by the supervisor \
                             as subreaper and by /proc"
                        );
                        None
                    }
                }
            }
        };

        Ok(Self {
            inner: Arc::new(Inner {
                config,
                sandboxes_dir: canonical,
                cgroup_base,
                sink: Mutex::new(None),
                watchers: Mutex::new(HashMap::new()),
                create_lock: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// Returns the cgroup directory under which sandbox cgroups are created, if cgroups are
    /// used.
    pub fn cgroup_base(&self) -> Option<&Path> {
        self.inner.cgroup_base.as_deref()
    }

    /// Returns the directory of sandbox `id`.
    pub fn sandbox_dir(&self, id: SandboxId) -> PathBuf {
        self.inner.dir(id).path
    }
}

impl Drop for ProcessDriver {
    /// Stops the watchers. The sandboxes and their supervisors keep running.
    fn drop(&mut self) {
        let watchers = std::mem::take(&mut *lock(&self.inner.watchers));
        for (_, watcher) in watchers {
            watcher.abort();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Inner {
    fn dir(&self, id: SandboxId) -> SandboxDir {
        SandboxDir::new(self.sandboxes_dir.join(id.to_string()))
    }

    fn snapshot(&self, id: SandboxId) -> Result<Snapshot, DriverError> {
        let dir = self.dir(id);
        Snapshot::read(&dir).map_err(|error| transient("failed to read sandbox", &dir.path, error))
    }

    fn send(&self, id: SandboxId, observed: Observed) {
        if let Some(sink) = lock(&self.sink).as_ref() {
            let _ = sink.send(Observation { id, observed });
        }
    }

    /// Starts a watcher for `id` unless one runs.
    fn ensure_watcher(self: &Arc<Self>, id: SandboxId) {
        let mut watchers = lock(&self.watchers);
        watchers.retain(|_, watcher| !watcher.is_finished());
        if watchers.contains_key(&id) {
            return;
        }
        let inner = Arc::clone(self);
        watchers.insert(id, tokio::spawn(async move { inner.watch(id).await }));
    }

    /// Writes the merged deletion plan and signals the supervisor to read it.
    fn request_deletion(
        self: &Arc<Self>,
        id: SandboxId,
        plan: DeletePlan,
    ) -> Result<(), DriverError> {
        let dir = self.dir(id);
        if !dir.path.exists() {
            self.ensure_watcher(id);
            return Ok(());
        }
        let now = SystemTime::now();
        let mut control = ControlFile {
            kill_at_ms: files::unix_millis(plan.kill_at),
            force: plan.force,
        };
        if plan.force {
            control.kill_at_ms = control.kill_at_ms.min(files::unix_millis(now));
        }
        let control_path = dir.file(CONTROL_FILE);
        if let Some(existing) = dir
            .read_control()
            .map_err(|error| transient("failed to read", &control_path, error))?
        {
            control = existing.merge(control);
        }
        files::write_json(&control_path, &control)
            .map_err(|error| transient("failed to write", &control_path, error))?;

        let handle = dir
            .read_handle()
            .map_err(|error| transient("failed to read handle of", &dir.path, error))?;
        if let Some(handle) = handle {
            match watch::signal_supervisor(&handle, Signal::USR1) {
                Ok(true) => {}
                Ok(false) => tracing::debug!(
                    sandbox_id = %id,
                    pid = handle.pid,
                    "supervisor no longer runs, so the watcher finishes the deletion"
                ),
                Err(error) => tracing::warn!(
                    sandbox_id = %id,
                    pid = handle.pid,
                    %error,
                    "failed to signal the supervisor, so the watcher's backstop kills the sandbox"
                ),
            }
        }
        tracing::info!(
            sandbox_id = %id,
            kill_at_ms = control.kill_at_ms,
            force = control.force,
            "deletion requested"
        );
        self.ensure_watcher(id);
        Ok(())
    }

    /// Cleans up after a sandbox of which nothing remains: removes its cgroup, and removes its
    /// directory if a deletion was requested, so that `list` stops reporting it.
    fn settle(&self, id: SandboxId, snapshot: &Snapshot) {
        if let Some(path) = snapshot.cgroup()
            && let Err(error) = cgroup::remove_tree(&path)
        {
            tracing::warn!(sandbox_id = %id, cgroup = %path.display(), %error, "failed to remove sandbox cgroup");
        }
        if snapshot.control.is_some() {
            let dir = self.dir(id);
            match fs::remove_dir_all(&dir.path) {
                Ok(()) => tracing::info!(sandbox_id = %id, "sandbox removed"),
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => tracing::warn!(
                    sandbox_id = %id,
                    dir = %dir.path.display(),
                    %error,
                    "failed to remove sandbox directory"
                ),
            }
        }
    }

    /// Kills the sandbox from the gateway when the supervisor cannot finish a deletion: it
    /// still runs after the kill time plus [`BACKSTOP_DELAY`], or it is gone while the cgroup
    /// still contains processes. Returns whether it sent any signal.
    fn enforce_backstop(
        &self,
        id: SandboxId,
        snapshot: &Snapshot,
        terminated_orphans: &mut bool,
    ) -> bool {
        let Some(control) = snapshot.control else {
            return false;
        };
        let now = SystemTime::now();
        let kill_at = control.kill_at();
        let cgroup_path = snapshot.cgroup();

        if snapshot.supervisor_alive && now >= kill_at + BACKSTOP_DELAY {
            let Some(handle) = &snapshot.handle else {
                return false;
            };
            tracing::warn!(
                sandbox_id = %id,
                pid = handle.pid,
                "supervisor did not finish the deletion in time, so the gateway kills the sandbox"
            );
            match &cgroup_path {
                Some(path) => {
                    if let Err(error) = cgroup::kill(path) {
                        tracing::warn!(sandbox_id = %id, cgroup = %path.display(), %error, "failed to kill sandbox cgroup");
                    }
                }
                None => kill_descendants(handle.pid),
            }
            if let Err(error) = watch::signal_supervisor(handle, Signal::KILL) {
                tracing::warn!(sandbox_id = %id, pid = handle.pid, %error, "failed to kill the supervisor");
            }
            return true;
        }

        if !snapshot.supervisor_alive && snapshot.cgroup_populated {
            let Some(path) = cgroup_path else {
                return false;
            };
            if control.force || now >= kill_at {
                tracing::warn!(sandbox_id = %id, cgroup = %path.display(), "supervisor is gone but processes remain, so the gateway kills the cgroup");
                if let Err(error) = cgroup::kill(&path) {
                    tracing::warn!(sandbox_id = %id, cgroup = %path.display(), %error, "failed to kill sandbox cgroup");
                }
                return true;
            }
            if !*terminated_orphans {
                *terminated_orphans = true;
                tracing::warn!(sandbox_id = %id, cgroup = %path.display(), "supervisor is gone but processes remain, so the gateway sends them SIGTERM");
                for pid in cgroup::procs_recursive(&path).unwrap_or_default() {
                    if let Some(pid) = Pid::from_raw(pid) {
                        let _ = rustix::process::kill_process(pid, Signal::TERM);
                    }
                }
                return true;
            }
        }
        false
    }

    /// Watches one sandbox until nothing of it remains, sending every change of its observation.
    async fn watch(self: Arc<Self>, id: SandboxId) {
        let dir = self.dir(id);
        let changes = match ChangeWatch::new(&dir.path) {
            Ok(changes) => Some(changes),
            Err(error) if error.kind() == io::ErrorKind::NotFound => None,
            Err(error) => {
                tracing::warn!(sandbox_id = %id, %error, "failed to watch sandbox directory, so only the periodic re-check observes it");
                None
            }
        };
        let mut exit_watch: Option<ExitWatch> = None;
        let mut supervisor_checked = false;
        let mut cgroup_watched = false;
        let mut terminated_orphans = false;
        let mut last_sent: Option<Observed> = None;

        loop {
            let snapshot = match Snapshot::read(&dir) {
                Ok(snapshot) => snapshot,
                Err(error) => {
                    tracing::warn!(sandbox_id = %id, %error, "failed to read sandbox, retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };

            if !supervisor_checked && let Some(handle) = &snapshot.handle {
                supervisor_checked = true;
                match watch::open_supervisor(handle)
                    .and_then(|fd| fd.map(ExitWatch::new).transpose())
                {
                    Ok(found) => exit_watch = found,
                    Err(error) => {
                        tracing::warn!(sandbox_id = %id, pid = handle.pid, %error, "failed to open a pidfd of the supervisor")
                    }
                }
            }
            if !cgroup_watched && let (Some(changes), Some(path)) = (&changes, snapshot.cgroup()) {
                cgroup_watched = true;
                for events in [
                    path.join("cgroup.events"),
                    path.join(cgroup::PAYLOAD_LEAF).join("cgroup.events"),
                ] {
                    if let Err(error) = changes.add_events_file(&events) {
                        tracing::debug!(sandbox_id = %id, file = %events.display(), %error, "cannot watch cgroup events file");
                    }
                }
            }

            if self.enforce_backstop(id, &snapshot, &mut terminated_orphans) {
                // Re-read right away: the kill changes what remains.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }

            let now = SystemTime::now();
            let observed = snapshot.observed(now);
            if last_sent.as_ref() != Some(&observed) {
                tracing::debug!(sandbox_id = %id, ?observed, "sandbox observed");
                self.send(id, observed.clone());
                last_sent = Some(observed.clone());
            }
            if matches!(observed, Observed::Gone { .. }) {
                self.settle(id, &snapshot);
                return;
            }

            let wait = next_wakeup(&snapshot, now);
            let exited = async {
                match &exit_watch {
                    Some(exit_watch) => exit_watch.exited().await,
                    None => std::future::pending().await,
                }
            };
            let changed = async {
                match &changes {
                    Some(changes) => changes.changed().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                result = exited => {
                    if let Err(error) = result {
                        tracing::warn!(sandbox_id = %id, %error, "failed to wait on the supervisor's pidfd");
                    }
                    // A pidfd stays readable after the exit, so stop waiting on it.
                    exit_watch = None;
                }
                result = changed => {
                    if let Err(error) = result {
                        tracing::warn!(sandbox_id = %id, %error, "failed to read inotify events");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// Returns how long a watcher may sleep before the observation can change with no event: until
/// the kill time or the backstop, or else the safety-net interval.
fn next_wakeup(snapshot: &Snapshot, now: SystemTime) -> Duration {
    let mut wait = SAFETY_NET_INTERVAL;
    if let Some(control) = snapshot.control {
        let kill_at = control.kill_at();
        for moment in [kill_at, kill_at + BACKSTOP_DELAY] {
            if let Ok(left) = moment.duration_since(now) {
                wait = wait.min(left + Duration::from_millis(10));
            }
        }
        if snapshot.supervisor_alive && now >= kill_at + BACKSTOP_DELAY {
            wait = wait.min(Duration::from_secs(1));
        }
    }
    wait
}

/// Sends SIGKILL to every descendant of `ancestor` found in `/proc`, a few rounds to catch
/// processes forked during a scan.
fn kill_descendants(ancestor: i32) {
    for _ in 0..5 {
        let Ok(found) = procfs::descendants(ancestor) else {
            return;
        };
        let alive: Vec<_> = found.iter().filter(|stat| !stat.is_dead()).collect();
        if alive.is_empty() {
            return;
        }
        for stat in alive {
            if let Some(pid) = Pid::from_raw(stat.pid) {
                let _ = rustix::process::kill_process(pid, Signal::KILL);
            }
        }
    }
}

impl Inner {
    /// Starts a supervisor for `record` and waits until it reports.
    async fn spawn_supervisor(
        self: &Arc<Self>,
        record: &SandboxRecord,
        dir: &SandboxDir,
    ) -> Result<(), DriverError> {
        let work = dir.file(WORK_DIR);
        fs::create_dir_all(&work).map_err(|error| transient("failed to create", &work, error))?;

        let cgroup = match &self.cgroup_base {
            Some(base) => match cgroup::create_sandbox(base, &record.id.to_string()) {
                Ok(path) => Some(path),
                Err(error) => {
                    tracing::warn!(sandbox_id = %record.id, cgroup_base = %base.display(), %error, "failed to create sandbox cgroup, so the sandbox runs without one");
                    None
                }
            },
            None => None,
        };

        let spec_path = dir.file(SPEC_FILE);
        let previous = dir.read_spec().ok().flatten();
        let spec = SpecFile {
            id: record.id.to_string(),
            argv: record.spec.argv(),
            env: record
                .spec
                .env
                .iter()
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect(),
            grace_period_ms: u64::try_from(record.spec.grace_period.as_millis())
                .unwrap_or(u64::MAX),
            cgroup,
            created_at_ms: previous.map_or_else(
                || files::unix_millis(SystemTime::now()),
                |spec| spec.created_at_ms,
            ),
        };
        files::write_json(&spec_path, &spec)
            .map_err(|error| transient("failed to write", &spec_path, error))?;

        let log_path = dir.file(LOG_FILE);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|error| transient("failed to open", &log_path, error))?;

        let (program, leading) =
            self.config.supervisor.split_first().ok_or_else(|| {
                DriverError::Permanent("the supervisor command is empty".to_string())
            })?;
        let mut command = Command::new(program);
        command
            .args(leading)
            .arg(&dir.path)
            .current_dir(&dir.path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        crate::sys::new_session_on_spawn(&mut command);
        let mut child = command.spawn().map_err(|error| {
            DriverError::Permanent(format!(
                "failed to start the supervisor {}: {error}",
                program.to_string_lossy()
            ))
        })?;
        let pid = child.id();
        let stdout = child.stdout.take().map(OwnedFd::from);
        // While the gateway runs, the supervisor is its child: this thread reaps it.
        let reaper = std::thread::Builder::new()
            .name(format!("sandgate-reap-{pid}"))
            .spawn(move || {
                let _ = child.wait();
            });
        if let Err(error) = reaper {
            tracing::warn!(sandbox_id = %record.id, pid, %error, "failed to start a reaper thread, so the supervisor stays a zombie after it exits");
        }
        tracing::info!(sandbox_id = %record.id, pid, "supervisor started");

        let Some(stdout) = stdout else {
            return Ok(());
        };
        let mut pipe =
            tokio::net::unix::pipe::Receiver::from_owned_fd(stdout).map_err(|error| {
                DriverError::Transient(format!("failed to read the supervisor's pipe: {error}"))
            })?;
        let mut report = Vec::new();
        match tokio::time::timeout(START_TIMEOUT, pipe.read_to_end(&mut report)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(DriverError::Transient(format!(
                "failed to read the supervisor's pipe: {error}"
            ))),
            Err(_) => Err(DriverError::Transient(format!(
                "supervisor {pid} did not report within {} s; see {}",
                START_TIMEOUT.as_secs(),
                log_path.display()
            ))),
        }
    }
}

#[async_trait]
impl Driver for ProcessDriver {
    fn name(&self) -> &'static str {
        DRIVER_NAME
    }

    fn validate(&self, record: &SandboxRecord) -> Result<(), DriverError> {
        if record
            .spec
            .image
            .as_deref()
            .is_some_and(|image| !image.is_empty())
        {
            return Err(DriverError::Unsupported {
                field: "spec.image".to_string(),
                message: "the process driver runs commands, not images: leave image empty, or \
                          run serve --driver kubernetes"
                    .to_string(),
            });
        }
        if record.spec.command.is_empty() || record.spec.command[0].is_empty() {
            return Err(DriverError::Unsupported {
                field: "spec.command".to_string(),
                message: "a command is required: the process driver runs it as the sandbox"
                    .to_string(),
            });
        }
        Ok(())
    }

    async fn start(
        &self,
        records: Vec<SandboxRecord>,
        sink: mpsc::UnboundedSender<Observation>,
    ) -> Result<(), DriverError> {
        *lock(&self.inner.sink) = Some(sink);
        for record in records {
            self.inner.ensure_watcher(record.id);
        }
        Ok(())
    }

    async fn create(&self, record: &SandboxRecord) -> Result<DriverDetails, DriverError> {
        self.validate(record)?;
        let _guard = self.inner.create_lock.lock().await;
        let dir = self.inner.dir(record.id);

        let existing = self.inner.snapshot(record.id)?;
        let adopt = existing.supervisor_alive || existing.started.is_some();
        if adopt {
            tracing::info!(sandbox_id = %record.id, "sandbox already exists, so create adopts it");
        } else {
            self.inner.spawn_supervisor(record, &dir).await?;
        }

        let snapshot = self.inner.snapshot(record.id)?;
        if snapshot.handle.is_none() {
            return Err(DriverError::Transient(format!(
                "supervisor exited before writing its handle; see {}",
                dir.file(LOG_FILE).display()
            )));
        }
        self.inner.ensure_watcher(record.id);
        Ok(snapshot.details(&dir))
    }

    async fn delete(&self, record: &SandboxRecord, plan: DeletePlan) -> Result<(), DriverError> {
        self.inner.request_deletion(record.id, plan)
    }

    async fn observe(&self, record: &SandboxRecord) -> Result<Observed, DriverError> {
        let snapshot = self.inner.snapshot(record.id)?;
        if snapshot.exists {
            self.inner.ensure_watcher(record.id);
        }
        Ok(snapshot.observed(SystemTime::now()))
    }

    async fn list(&self) -> Result<Vec<Found>, DriverError> {
        let entries = fs::read_dir(&self.inner.sandboxes_dir)
            .map_err(|error| transient("failed to list", &self.inner.sandboxes_dir, error))?;
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry
                .map_err(|error| transient("failed to list", &self.inner.sandboxes_dir, error))?;
            let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<SandboxId>().ok())
            else {
                continue;
            };
            let dir = self.inner.dir(id);
            let snapshot = self.inner.snapshot(id)?;
            let observed = snapshot.observed(SystemTime::now());
            if matches!(observed, Observed::Gone { .. }) {
                // Reported once more, then the directory of a deleted sandbox is removed.
                self.inner.settle(id, &snapshot);
            }
            found.push(Found {
                id,
                created_at: snapshot.created_at,
                details: snapshot.details(&dir),
                observed,
            });
        }
        found.sort_by_key(|item| item.id);
        Ok(found)
    }

    async fn delete_orphan(&self, id: SandboxId) -> Result<(), DriverError> {
        let now = SystemTime::now();
        self.inner.request_deletion(
            id,
            DeletePlan {
                kill_at: now,
                force: true,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_hash_is_stable() {
        assert_eq!(
            short_hash(b"/var/lib/sandgate"),
            short_hash(b"/var/lib/sandgate")
        );
        assert_ne!(short_hash(b"/a"), short_hash(b"/b"));
        assert_eq!(short_hash(b"").len(), 12);
    }
}
