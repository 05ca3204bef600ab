//! The task that watches one sandbox until nothing of it remains, and the backstop with which
//! the gateway kills a sandbox whose supervisor cannot finish a deletion.

use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustix::process::{Pid, Signal};
use sandgate_core::{Observed, SandboxId};

use super::{Inner, lock};
use crate::cgroup;
use crate::files::HandleFile;
use crate::procfs;
use crate::snapshot::Snapshot;
use crate::watch::{self, ChangeHub, ChangeWatches, ExitWatch};

/// How long after a deletion's kill time the gateway waits for the supervisor before it kills
/// the sandbox itself.
pub(super) const BACKSTOP_DELAY: Duration = Duration::from_secs(3);

/// Interval of the re-check that a watcher makes even when no event arrives, as a safety net.
const SAFETY_NET_INTERVAL: Duration = Duration::from_secs(60);

/// How often a watcher re-reads a sandbox whose directory is missing or unreadable while
/// processes remain, since inotify may not report changes then.
const DEGRADED_INTERVAL: Duration = Duration::from_secs(2);

impl Inner {
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
        let cgroup_path = snapshot.cgroup.clone();

        if snapshot.supervisor_alive && now >= kill_at + BACKSTOP_DELAY {
            let Some(handle) = &snapshot.handle else {
                return false;
            };
            tracing::warn!(
                sandbox_id = %id,
                pid = handle.pid,
                "supervisor did not finish the deletion in time, so the gateway kills the sandbox"
            );
            if let Some(path) = &cgroup_path
                && let Err(error) = cgroup::kill(path)
            {
                tracing::warn!(sandbox_id = %id, cgroup = %path.display(), %error, "failed to kill sandbox cgroup");
            }
            // Before the supervisor dies, so that descendants outside the cgroup are still
            // found below it.
            kill_descendants(handle);
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

    /// Returns the driver's inotify instance, creating it on first use. Returns `None`, and
    /// logs why, if the kernel refuses one; the next watcher tries again.
    fn change_hub(&self) -> Option<Arc<ChangeHub>> {
        let mut changes = lock(&self.changes);
        if let Some(hub) = changes.as_ref() {
            return Some(Arc::clone(hub));
        }
        match ChangeHub::start() {
            Ok(hub) => {
                *changes = Some(Arc::clone(&hub));
                Some(hub)
            }
            Err(error) => {
                tracing::warn!(%error, "failed to create an inotify instance, so only periodic re-checks observe sandboxes; raise fs.inotify.max_user_instances if it is reached");
                None
            }
        }
    }

    /// Watches one sandbox until nothing of it remains, sending every change of its
    /// observation. Its inotify watches wake `wake`, as deletion requests do.
    pub(super) async fn watch(self: Arc<Self>, id: SandboxId, wake: Arc<tokio::sync::Notify>) {
        let mut changes = self.change_hub().map(|hub| hub.watches(Arc::clone(&wake)));
        // Whether an inotify watch reports changes of the sandbox directory and of the
        // cgroup's `populated`. Until both do, the watcher re-reads every DEGRADED_INTERVAL.
        let mut dir_watched = false;
        let mut dir_watch_warned = false;
        let mut cgroup_events_watched = false;
        if let Some(changes) = &mut changes {
            dir_watched = self.watch_dir(id, changes, &mut dir_watch_warned);
        }
        let mut exit_watch: Option<ExitWatch> = None;
        let mut supervisor_checked = false;
        let mut cgroup_watched = false;
        let mut terminated_orphans = false;
        let mut last_sent: Option<Observed> = None;

        loop {
            // Set when something may have changed between the snapshot and a new watch, so the
            // loop reads again without waiting. Unlike a permit of `wake`, it ends with this
            // task, so `retire_watcher` only finds wake-ups from outside.
            let mut read_again = false;
            let snapshot = self.snapshot(id);

            // The directory may appear, or a watch become available, after the watcher
            // starts. A change between the snapshot and the new watch is caught by the
            // re-read that notify_one forces.
            if !dir_watched
                && snapshot.exists
                && let Some(changes) = &mut changes
                && self.watch_dir(id, changes, &mut dir_watch_warned)
            {
                dir_watched = true;
                read_again = true;
            }

            if !supervisor_checked && let Some(handle) = &snapshot.handle {
                supervisor_checked = true;
                match watch::open_supervisor(handle)
                    .and_then(|fd| fd.map(ExitWatch::new).transpose())
                {
                    Ok(None) => {
                        // The supervisor exited, perhaps after the snapshot read it as alive,
                        // and no pidfd will report that exit, so read the sandbox again.
                        read_again = true;
                    }
                    Ok(found) => exit_watch = found,
                    Err(error) => {
                        tracing::warn!(sandbox_id = %id, pid = handle.pid, %error, "failed to open a pidfd of the supervisor")
                    }
                }
            }
            if !cgroup_watched
                && let (Some(changes), Some(path)) = (&mut changes, &snapshot.cgroup)
                && path.exists()
            {
                cgroup_watched = true;
                for (index, events) in [
                    path.join("cgroup.events"),
                    path.join(cgroup::PAYLOAD_LEAF).join("cgroup.events"),
                ]
                .into_iter()
                .enumerate()
                {
                    match changes.add_events_file(&events) {
                        // `populated` of the sandbox cgroup counts the payload leaf too, so
                        // this first watch alone reports when the last process exits.
                        Ok(()) if index == 0 => cgroup_events_watched = true,
                        Ok(()) => {}
                        Err(error) => {
                            tracing::debug!(sandbox_id = %id, file = %events.display(), %error, "cannot watch cgroup events file");
                        }
                    }
                }
                // The cgroup may have changed between the snapshot and the watch, so the loop
                // reads it again.
                read_again = true;
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
                self.retire_watcher(id, &wake);
                return;
            }
            if read_again {
                continue;
            }

            let mut wait = next_wakeup(&snapshot, now);
            let cgroup_unwatched = snapshot.cgroup_populated && !cgroup_events_watched;
            if !changes.as_ref().is_some_and(ChangeWatches::is_live)
                || (snapshot.exists && !dir_watched)
                || cgroup_unwatched
            {
                wait = wait.min(DEGRADED_INTERVAL);
            }
            let exited = async {
                match &exit_watch {
                    Some(exit_watch) => exit_watch.exited().await,
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
                () = wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Removes the watcher of `id`, which found nothing left, from the driver's watchers. A
    /// wake-up that arrived after its last read, such as a deletion of the sandbox whose
    /// command had just exited, starts a new watcher, which reads and reports the sandbox
    /// afresh.
    fn retire_watcher(self: &Arc<Self>, id: SandboxId, wake: &tokio::sync::Notify) {
        let mut watchers = lock(&self.watchers);
        watchers.remove(&id);
        let pending = std::pin::pin!(wake.notified());
        if pending.enable() {
            watchers.insert(id, self.spawn_watcher(id));
        }
    }

    /// Adds the inotify watch of the sandbox directory to `changes`, and returns whether it
    /// is in place. Logs the first failure other than a missing directory.
    fn watch_dir(&self, id: SandboxId, changes: &mut ChangeWatches, warned: &mut bool) -> bool {
        match changes.add_dir(&self.dir(id).path) {
            Ok(()) => true,
            Err(error) if error.kind() == io::ErrorKind::NotFound => false,
            Err(error) => {
                if !*warned {
                    *warned = true;
                    tracing::warn!(sandbox_id = %id, %error, interval = ?DEGRADED_INTERVAL, "failed to watch sandbox directory, so the watcher re-reads it on a timer");
                }
                false
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
    if !snapshot.exists || snapshot.state_error.is_some() {
        wait = wait.min(DEGRADED_INTERVAL);
    }
    wait
}

/// Sends SIGKILL to every descendant found in `/proc` of the supervisor `handle`, a few rounds
/// to catch processes forked during a scan. It does nothing unless `handle` names a running
/// process other than init and the gateway, with the recorded start time.
///
/// NOTE: the supervisor can exit and its pid be reused between the check and the scan. The
/// window is short, and the pid is reused only after the supervisor is reaped.
fn kill_descendants(handle: &HandleFile) {
    let ancestor = handle.pid;
    if ancestor <= 1 || ancestor == std::process::id() as i32 {
        return;
    }
    for _ in 0..5 {
        if !procfs::is_alive(ancestor, handle.start_time).unwrap_or(false) {
            return;
        }
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
