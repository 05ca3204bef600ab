//! [`ProcessDriver`]: the [`Driver`] implementation that starts supervisors, requests
//! deletions through `control.json`, and watches each sandbox with one task.
//!
//! The gateway kills a sandbox itself only as a backstop. It does so when a deletion's kill time
//! plus [`BACKSTOP_DELAY`](watcher::BACKSTOP_DELAY) has passed and the supervisor still runs.
//! It also does so when the supervisor is gone while the sandbox cgroup is still populated.
//!
//! The driver decides what remains of a sandbox from what it recorded at create (supervisor pid,
//! start time, and the cgroup `<base>/<id>`) and from the deletion plans it requested, which it
//! keeps in memory. The files of the sandbox directory, which the sandbox's command can rewrite
//! or remove, never name what the driver signals or kills.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use rustix::process::Signal;
use sandgate_core::{DriverDetails, Observed, SandboxId, SandboxRecord};
use sandgate_driver::{DeletePlan, Driver, DriverError, Found, Observation};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::cgroup;
use crate::files::{self, CONTROL_FILE, ControlFile, HandleFile, LOG_FILE, SandboxDir};
use crate::snapshot::{DRIVER_NAME, Snapshot, Tracking};
use crate::verify::SupervisorIdentity;
use crate::watch::{self, ChangeHub};

mod spawn;
mod watcher;

/// How often the same warning about one sandbox's unreadable state is logged at most.
const STATE_WARNING_INTERVAL: Duration = Duration::from_secs(60);

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
    /// Directory whose `sandboxes/<id>/` subdirectories hold the sandboxes' state, and whose
    /// `work/<id>/` subdirectories are the commands' working directories.
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
    work_root: PathBuf,
    cgroup_mount: Option<PathBuf>,
    cgroup_base: Option<PathBuf>,
    sink: Mutex<Option<mpsc::UnboundedSender<Observation>>>,
    watchers: Mutex<HashMap<SandboxId, Watcher>>,
    create_lock: tokio::sync::Mutex<()>,
    /// The inotify instance of all watchers, created with the first watcher, since it needs
    /// the runtime. `None` until then, and again after a failed attempt.
    changes: Mutex<Option<Arc<ChangeHub>>>,
    tracked: Mutex<HashMap<SandboxId, Tracked>>,
    state_warnings: Mutex<HashMap<SandboxId, (String, Instant)>>,
}

/// The task that watches one sandbox, and the wake-up a deletion request sends it.
struct Watcher {
    task: JoinHandle<()>,
    wake: Arc<tokio::sync::Notify>,
}

/// What the driver keeps in memory about one sandbox.
#[derive(Clone, Debug, Default)]
struct Tracked {
    /// The supervisor recorded at create, or found and verified for a record without details.
    handle: Option<HandleFile>,
    /// The hardest deletion plan requested so far.
    plan: Option<ControlFile>,
}

/// Reads the supervisor handle from `details` as the store recorded it at create.
fn handle_from_details(details: &DriverDetails) -> Option<HandleFile> {
    if details.driver != DRIVER_NAME {
        return None;
    }
    let pid = details.attributes.get("pid")?.parse().ok()?;
    let start_time = details.attributes.get("start_time")?.parse().ok()?;
    Some(HandleFile {
        pid,
        start_time,
        cgroup: None,
    })
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
        let work_root = canonical.parent().map_or_else(
            || config.data_dir.join("work"),
            |parent| parent.join("work"),
        );
        fs::create_dir_all(&work_root).map_err(|error| {
            DriverError::Permanent(format!("failed to create {}: {error}", work_root.display()))
        })?;

        for parent in [&canonical, &work_root] {
            match files::remove_leftovers(parent) {
                Ok(0) => {}
                Ok(count) => tracing::info!(
                    dir = %parent.display(),
                    count,
                    "removed directories that an interrupted removal left behind"
                ),
                Err(error) => tracing::warn!(
                    dir = %parent.display(),
                    %error,
                    "failed to remove directories that an interrupted removal left behind"
                ),
            }
        }

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
                work_root,
                cgroup_mount: cgroup_base.as_ref().and_then(|_| cgroup::mount_point()),
                cgroup_base,
                sink: Mutex::new(None),
                watchers: Mutex::new(HashMap::new()),
                create_lock: tokio::sync::Mutex::new(()),
                changes: Mutex::new(None),
                tracked: Mutex::new(HashMap::new()),
                state_warnings: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Returns the cgroup directory under which sandbox cgroups are created, if cgroups are
    /// used.
    pub fn cgroup_base(&self) -> Option<&Path> {
        self.inner.cgroup_base.as_deref()
    }

    /// Returns the state directory of sandbox `id`.
    pub fn sandbox_dir(&self, id: SandboxId) -> PathBuf {
        self.inner.dir(id).path
    }

    /// Returns the working directory of the command of sandbox `id`, `<data_dir>/work/<id>`.
    pub fn work_dir(&self, id: SandboxId) -> PathBuf {
        self.inner.work_dir(id)
    }
}

impl Drop for ProcessDriver {
    /// Stops the watchers, and removes the base cgroup when no sandbox cgroup is left in it.
    /// The sandboxes and their supervisors keep running.
    fn drop(&mut self) {
        let watchers = std::mem::take(&mut *lock(&self.inner.watchers));
        for (_, watcher) in watchers {
            watcher.task.abort();
        }
        // The kernel refuses to remove a cgroup that has children, so a running sandbox keeps
        // its base. A later create makes the base again.
        if let Some(base) = &self.inner.cgroup_base {
            let _ = fs::remove_dir(base);
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

    fn work_dir(&self, id: SandboxId) -> PathBuf {
        self.work_root.join(id.to_string())
    }

    /// Returns the sandbox cgroup `<base>/<id>`, the only cgroup the driver ever kills for `id`.
    fn sandbox_cgroup(&self, id: SandboxId) -> Option<PathBuf> {
        self.cgroup_base
            .as_ref()
            .map(|base| base.join(id.to_string()))
    }

    /// Returns what a supervisor of `id` looks like in `/proc`.
    fn supervisor_identity(&self, id: SandboxId) -> SupervisorIdentity<'_> {
        let dir = self.dir(id);
        let argv = self
            .config
            .supervisor
            .iter()
            .map(OsString::as_os_str)
            .chain([dir.path.as_os_str()]);
        SupervisorIdentity {
            cmdline: SupervisorIdentity::cmdline_of(argv),
            cgroup_mount: self.cgroup_mount.as_deref(),
            cgroup_base: self.cgroup_base.as_deref(),
            sandbox_cgroup: self.sandbox_cgroup(id),
        }
    }

    /// Remembers the supervisor that `record` names, which the store took from `create`. The
    /// record's details win over anything found later.
    fn remember(&self, record: &SandboxRecord) {
        if let Some(handle) = handle_from_details(&record.driver) {
            lock(&self.tracked).entry(record.id).or_default().handle = Some(handle);
        }
    }

    /// Looks for the supervisor of a sandbox whose supervisor the driver does not know (a crash
    /// interrupted its create before the store recorded it): the handle file if it names a
    /// verified supervisor of `id`, else a search of `/proc`.
    fn discover_supervisor(&self, id: SandboxId) -> Option<HandleFile> {
        let dir = self.dir(id);
        let dir_exists = fs::symlink_metadata(&dir.path).is_ok();
        let cgroup_exists = self.sandbox_cgroup(id).is_some_and(|path| path.exists());
        if !dir_exists && !cgroup_exists {
            return None;
        }
        let identity = self.supervisor_identity(id);
        if let Ok(Some(handle)) = dir.read_handle() {
            if identity.matches(&handle) {
                return Some(HandleFile {
                    cgroup: None,
                    ..handle
                });
            }
            tracing::warn!(
                sandbox_id = %id,
                pid = handle.pid,
                "handle file does not name a supervisor of this sandbox, so it is ignored"
            );
        }
        identity.find_in_proc()
    }

    /// Returns what the driver trusts about `id`, discovering the supervisor if it is unknown.
    fn tracking(&self, id: SandboxId) -> Tracking {
        let known = lock(&self.tracked).get(&id).cloned().unwrap_or_default();
        let handle = match known.handle {
            Some(handle) => Some(handle),
            None => {
                let found = self.discover_supervisor(id);
                if let Some(handle) = &found {
                    tracing::info!(sandbox_id = %id, pid = handle.pid, "supervisor found for a sandbox without recorded details");
                    lock(&self.tracked).entry(id).or_default().handle = Some(handle.clone());
                }
                found
            }
        };
        Tracking {
            handle,
            cgroup: self.sandbox_cgroup(id),
            plan: known.plan,
        }
    }

    /// Reads `id` now. Logs an unreadable state once per distinct error, and again at most
    /// every [`STATE_WARNING_INTERVAL`].
    fn snapshot(&self, id: SandboxId) -> Snapshot {
        let snapshot = Snapshot::read(&self.dir(id), self.tracking(id));
        if let Some(error) = &snapshot.state_error {
            let mut warnings = lock(&self.state_warnings);
            let repeated = warnings
                .get(&id)
                .is_some_and(|(last, at)| last == error && at.elapsed() < STATE_WARNING_INTERVAL);
            if !repeated {
                tracing::warn!(sandbox_id = %id, %error, "cannot read sandbox state, so the sandbox is tracked by its supervisor and cgroup");
                warnings.insert(id, (error.clone(), Instant::now()));
            }
        }
        snapshot
    }

    fn send(&self, id: SandboxId, observed: Observed) {
        if let Some(sink) = lock(&self.sink).as_ref() {
            let _ = sink.send(Observation { id, observed });
        }
    }

    /// Starts a watcher for `id` unless one runs.
    fn ensure_watcher(self: &Arc<Self>, id: SandboxId) {
        let mut watchers = lock(&self.watchers);
        watchers.retain(|_, watcher| !watcher.task.is_finished());
        watchers.entry(id).or_insert_with(|| self.spawn_watcher(id));
    }

    /// Makes the watcher of `id` re-read the sandbox now, or when it next waits, and starts
    /// one if none runs. Under the same lock as [`Inner::retire_watcher`], so a watcher that
    /// is returning either gets the wake-up or is replaced.
    fn wake_watcher(self: &Arc<Self>, id: SandboxId) {
        let mut watchers = lock(&self.watchers);
        watchers.retain(|_, watcher| !watcher.task.is_finished());
        match watchers.get(&id) {
            Some(watcher) => watcher.wake.notify_one(),
            None => {
                watchers.insert(id, self.spawn_watcher(id));
            }
        }
    }

    fn spawn_watcher(self: &Arc<Self>, id: SandboxId) -> Watcher {
        let inner = Arc::clone(self);
        let wake = Arc::new(tokio::sync::Notify::new());
        let woken = Arc::clone(&wake);
        let task = tokio::spawn(async move { inner.watch(id, woken).await });
        Watcher { task, wake }
    }

    /// Records the merged deletion plan, writes it to `control.json` and signals the supervisor
    /// to read it.
    ///
    /// An unreadable `control.json` is replaced by the new plan. A directory that is missing or
    /// cannot be written only loses the supervisor's part: the plan stays in memory, and the
    /// watcher's backstop kills by the recorded supervisor and cgroup at the kill time plus
    /// [`BACKSTOP_DELAY`](watcher::BACKSTOP_DELAY).
    fn request_deletion(self: &Arc<Self>, id: SandboxId, plan: DeletePlan) {
        let now = SystemTime::now();
        let mut control = ControlFile {
            kill_at_ms: files::unix_millis(plan.kill_at),
            force: plan.force,
        };
        if plan.force {
            control.kill_at_ms = control.kill_at_ms.min(files::unix_millis(now));
        }
        {
            let mut tracked = lock(&self.tracked);
            let entry = tracked.entry(id).or_default();
            control = entry.plan.map_or(control, |known| known.merge(control));
            entry.plan = Some(control);
        }

        let dir = self.dir(id);
        let control_path = dir.file(CONTROL_FILE);
        if fs::symlink_metadata(&dir.path).is_ok_and(|metadata| metadata.is_dir()) {
            match dir.read_control() {
                Ok(Some(existing)) => control = existing.merge(control),
                Ok(None) => {}
                Err(error) => tracing::warn!(
                    sandbox_id = %id,
                    file = %control_path.display(),
                    %error,
                    "deletion plan is unreadable, so it is replaced"
                ),
            }
            if let Err(error) = files::write_json(&control_path, &control) {
                tracing::warn!(sandbox_id = %id, file = %control_path.display(), %error, "failed to write the deletion plan, so the watcher's backstop kills the sandbox");
            }
        } else {
            tracing::warn!(sandbox_id = %id, dir = %dir.path.display(), "sandbox directory is missing, so the watcher's backstop kills the sandbox");
        }

        if let Some(handle) = self.tracking(id).handle {
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
        // The file write may have failed or gone unseen, so the plan may reach the watcher
        // only from memory.
        self.wake_watcher(id);
    }

    /// Cleans up after a sandbox of which nothing remains: removes its cgroup, and removes its
    /// directory if a deletion was requested, so that `list` stops reporting it.
    fn settle(&self, id: SandboxId, snapshot: &Snapshot) {
        if let Some(path) = &snapshot.cgroup
            && let Err(error) = cgroup::remove_tree(path)
        {
            tracing::warn!(sandbox_id = %id, cgroup = %path.display(), %error, "failed to remove sandbox cgroup");
        }
        if snapshot.control.is_some() {
            // A directory removed in place could be read half removed after a crash, and then
            // pass for a sandbox whose supervisor has not started yet.
            for path in [self.dir(id).path, self.work_dir(id)] {
                match files::remove_dir_whole(&path) {
                    Ok(()) => {}
                    Err(error) => tracing::warn!(
                        sandbox_id = %id,
                        dir = %path.display(),
                        %error,
                        "failed to remove sandbox directory"
                    ),
                }
            }
            tracing::info!(sandbox_id = %id, "sandbox removed");
            lock(&self.tracked).remove(&id);
            lock(&self.state_warnings).remove(&id);
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
            self.inner.remember(&record);
            self.inner.ensure_watcher(record.id);
        }
        Ok(())
    }

    async fn create(&self, record: &SandboxRecord) -> Result<DriverDetails, DriverError> {
        self.validate(record)?;
        let _guard = self.inner.create_lock.lock().await;
        let dir = self.inner.dir(record.id);

        self.inner.remember(record);
        let existing = self.inner.snapshot(record.id);
        let adopt = existing.supervisor_alive || existing.started.is_some();
        if adopt {
            tracing::info!(sandbox_id = %record.id, "sandbox already exists, so create adopts it");
        } else {
            self.inner.spawn_supervisor(record, &dir).await?;
        }

        let mut snapshot = self.inner.snapshot(record.id);
        if !snapshot.supervisor_alive && snapshot.started.is_none() {
            // The new supervisor exits at once if another one holds the lock of this id, which
            // a handle file that the driver ignored may have hidden.
            if let Some(handle) = self.inner.discover_supervisor(record.id) {
                lock(&self.inner.tracked)
                    .entry(record.id)
                    .or_default()
                    .handle = Some(handle);
                snapshot = self.inner.snapshot(record.id);
            }
        }
        if !snapshot.supervisor_alive && snapshot.started.is_none() {
            return Err(DriverError::Transient(format!(
                "supervisor exited before it started the command; see {}",
                dir.file(LOG_FILE).display()
            )));
        }
        self.inner.ensure_watcher(record.id);
        Ok(snapshot.details(&dir))
    }

    async fn delete(&self, record: &SandboxRecord, plan: DeletePlan) -> Result<(), DriverError> {
        self.inner.remember(record);
        self.inner.request_deletion(record.id, plan);
        Ok(())
    }

    async fn observe(&self, record: &SandboxRecord) -> Result<Observed, DriverError> {
        self.inner.remember(record);
        let snapshot = self.inner.snapshot(record.id);
        if snapshot.exists || snapshot.anything_remains() {
            self.inner.ensure_watcher(record.id);
        }
        Ok(snapshot.observed(SystemTime::now()))
    }

    /// Lists every sandbox directory, then every populated sandbox cgroup and every sandbox
    /// the driver tracks whose directory is missing. One directory that cannot be read is
    /// listed with an `Unknown` status and never fails the list.
    async fn list(&self) -> Result<Vec<Found>, DriverError> {
        let entries = fs::read_dir(&self.inner.sandboxes_dir)
            .map_err(|error| transient("failed to list", &self.inner.sandboxes_dir, error))?;
        let mut found = Vec::new();
        let mut seen = HashSet::new();
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(error) => {
                    tracing::warn!(dir = %self.inner.sandboxes_dir.display(), %error, "failed to read a directory entry, so it is skipped");
                    continue;
                }
            };
            let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<SandboxId>().ok())
            else {
                continue;
            };
            seen.insert(id);
            found.push(self.inner.found(id));
        }

        let mut dirless: Vec<SandboxId> = lock(&self.inner.tracked).keys().copied().collect();
        if let Some(base) = &self.inner.cgroup_base {
            match cgroup::children(base) {
                Ok(children) => dirless.extend(
                    children
                        .iter()
                        .filter_map(|(name, _)| name.parse::<SandboxId>().ok()),
                ),
                Err(error) => {
                    tracing::warn!(cgroup = %base.display(), %error, "failed to list sandbox cgroups");
                }
            }
        }
        for id in dirless {
            if !seen.insert(id) {
                continue;
            }
            let item = self.inner.found(id);
            if !matches!(item.observed, Observed::Gone { .. }) {
                // A create may have made the directory since the directory was listed.
                if fs::symlink_metadata(self.inner.dir(id).path).is_err() {
                    tracing::warn!(sandbox_id = %id, "processes of a sandbox without a directory remain");
                }
                found.push(item);
            }
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
        );
        Ok(())
    }
}

impl Inner {
    /// Reads `id` for [`Driver::list`], settling it if nothing of it remains.
    fn found(&self, id: SandboxId) -> Found {
        let dir = self.dir(id);
        let snapshot = self.snapshot(id);
        let observed = snapshot.observed(SystemTime::now());
        if matches!(observed, Observed::Gone { .. }) {
            // Reported once more, then the directory of a deleted sandbox is removed.
            self.settle(id, &snapshot);
        }
        Found {
            id,
            created_at: snapshot.created_at,
            details: snapshot.details(&dir),
            observed,
        }
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
