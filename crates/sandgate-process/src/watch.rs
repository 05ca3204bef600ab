//! Event sources that wake a sandbox's watcher without polling: a pidfd of the supervisor,
//! which becomes readable when it exits, and inotify watches on the sandbox directory (files
//! renamed into place) and on the cgroup's `cgroup.events` files (populated changes), all in
//! one inotify instance per driver.

use std::collections::HashMap;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
use rustix::process::{Pid, PidfdFlags, Signal};
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;

use crate::files::HandleFile;
use crate::procfs;

/// Opens a pidfd of the supervisor named by `handle`, or returns `None` if that process no
/// longer runs. The start time is checked after opening, so the pidfd cannot refer to a
/// process that reused the pid.
pub fn open_supervisor(handle: &HandleFile) -> io::Result<Option<OwnedFd>> {
    let Some(pid) = Pid::from_raw(handle.pid) else {
        return Ok(None);
    };
    let fd = match rustix::process::pidfd_open(pid, PidfdFlags::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::SRCH) => return Ok(None),
        Err(error) => return Err(error.into()),
    };
    if procfs::is_alive(handle.pid, handle.start_time)? {
        Ok(Some(fd))
    } else {
        Ok(None)
    }
}

/// Sends `signal` to the supervisor named by `handle` through a pidfd, so that a reused pid is
/// never signalled. Returns whether the supervisor was running.
pub fn signal_supervisor(handle: &HandleFile, signal: Signal) -> io::Result<bool> {
    let Some(fd) = open_supervisor(handle)? else {
        return Ok(false);
    };
    match rustix::process::pidfd_send_signal(&fd, signal) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::SRCH) => Ok(false),
        Err(error) => Err(error.into()),
    }
}

/// A pidfd registered with the tokio reactor.
pub struct ExitWatch {
    fd: AsyncFd<OwnedFd>,
}

impl ExitWatch {
    /// Registers `pidfd` with the reactor.
    pub fn new(pidfd: OwnedFd) -> io::Result<Self> {
        Ok(Self {
            fd: crate::sys::register_readable(pidfd)?,
        })
    }

    /// Waits until the process exits.
    ///
    /// # Errors
    /// Returns an error if the reactor fails.
    ///
    /// # Cancel safety
    /// Cancel safe: a pidfd stays readable once its process has exited.
    pub async fn exited(&self) -> io::Result<()> {
        let _guard = self.fd.readable().await?;
        Ok(())
    }
}

/// The one inotify instance of a driver, shared by the watchers of all its sandboxes.
///
/// The kernel limits inotify instances per user (`fs.inotify.max_user_instances`, 128 by
/// default), and watches far higher. So one instance with a few watches per sandbox scales to
/// thousands of sandboxes, where an instance per sandbox stops at about a hundred.
///
/// A task reads the events and wakes the [`Notify`] of each watch's owner with
/// [`Notify::notify_one`], which keeps a permit when the owner is not waiting, so an event
/// that arrives between two waits is not lost.
pub struct ChangeHub {
    shared: Arc<HubShared>,
    reader: tokio::task::AbortHandle,
}

struct HubShared {
    fd: AsyncFd<OwnedFd>,
    /// The owners of each watch descriptor. The kernel returns the same descriptor for the same
    /// inode, so one descriptor can have several owners.
    owners: Mutex<HashMap<i32, Vec<Owner>>>,
    next_owner: AtomicU64,
    /// Set when the reader task stops because the reactor failed, after which no event
    /// wakes an owner. An abort or a runtime shutdown stops the task without setting it.
    failed: AtomicBool,
}

/// One owner of a watch: its number in the hub, and what its events wake.
type Owner = (u64, Arc<Notify>);

impl ChangeHub {
    /// Creates the inotify instance and starts the task that reads it.
    ///
    /// # Errors
    /// Returns an error if the kernel refuses another inotify instance (`EMFILE` once
    /// `fs.inotify.max_user_instances` is reached), or if the reactor cannot register it.
    ///
    /// # Panics
    /// Panics outside a tokio runtime, or in one whose I/O driver is disabled.
    pub fn start() -> io::Result<Arc<Self>> {
        let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)?;
        let shared = Arc::new(HubShared {
            fd: crate::sys::register_readable(fd)?,
            owners: Mutex::new(HashMap::new()),
            next_owner: AtomicU64::new(0),
            failed: AtomicBool::new(false),
        });
        let reader = tokio::spawn(Arc::clone(&shared).read_events()).abort_handle();
        Ok(Arc::new(Self { shared, reader }))
    }

    /// Returns a set of watches, empty at first, whose events wake `wake`.
    pub fn watches(self: &Arc<Self>, wake: Arc<Notify>) -> ChangeWatches {
        ChangeWatches {
            hub: Arc::clone(self),
            owner: self.shared.next_owner.fetch_add(1, Ordering::Relaxed),
            wake,
            descriptors: Vec::new(),
        }
    }

    /// Returns how many watch descriptors have owners, for tests.
    #[cfg(test)]
    fn watched(&self) -> usize {
        lock(&self.shared.owners).len()
    }
}

impl Drop for ChangeHub {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl HubShared {
    /// Reads events until the reactor fails, and wakes the owners of each event's watch. A
    /// queue overflow wakes every owner, since any event may be among those dropped.
    async fn read_events(self: Arc<Self>) {
        let mut buffer = [MaybeUninit::<u8>::uninit(); 8192];
        loop {
            let mut guard = match self.fd.readable().await {
                Ok(guard) => guard,
                Err(error) => {
                    tracing::warn!(%error, "the inotify instance failed, so sandboxes are observed only by periodic re-checks");
                    self.failed.store(true, Ordering::Relaxed);
                    self.wake_all();
                    return;
                }
            };
            let mut reader = inotify::Reader::new(self.fd.get_ref(), &mut buffer);
            loop {
                match reader.next() {
                    Ok(event) => self.dispatch(event.wd(), event.events()),
                    Err(rustix::io::Errno::WOULDBLOCK) => {
                        guard.clear_ready();
                        break;
                    }
                    Err(rustix::io::Errno::INTR) => {}
                    Err(error) => {
                        tracing::warn!(%error, "failed to read inotify events, so every sandbox is re-checked");
                        self.wake_all();
                        guard.clear_ready();
                        break;
                    }
                }
            }
        }
    }

    fn dispatch(&self, wd: i32, flags: ReadFlags) {
        if flags.contains(ReadFlags::QUEUE_OVERFLOW) {
            self.wake_all();
            return;
        }
        let mut owners = lock(&self.owners);
        let ignored = flags.contains(ReadFlags::IGNORED);
        let woken = if ignored {
            // The kernel removed the watch: its file is gone, or a Drop below removed it.
            // Linux allocates descriptors cyclically up to INT_MAX, so a late IGNORED does
            // not name a newer watch in practice (man 7 inotify, BUGS).
            owners.remove(&wd).unwrap_or_default()
        } else {
            owners.get(&wd).cloned().unwrap_or_default()
        };
        drop(owners);
        for (_, wake) in woken {
            wake.notify_one();
        }
    }

    fn wake_all(&self) {
        let owners = lock(&self.owners);
        for (_, wake) in owners.values().flatten() {
            wake.notify_one();
        }
    }
}

/// The watches of one owner in a [`ChangeHub`]. Dropping it removes them.
pub struct ChangeWatches {
    hub: Arc<ChangeHub>,
    owner: u64,
    wake: Arc<Notify>,
    descriptors: Vec<i32>,
}

impl ChangeWatches {
    /// Returns whether events still wake the owner. After the hub's reader has failed, the
    /// owner must re-check on a timer.
    pub fn is_live(&self) -> bool {
        !self.hub.shared.failed.load(Ordering::Relaxed)
    }

    /// Watches `dir` for files renamed into it and for its own removal.
    pub fn add_dir(&mut self, dir: &Path) -> io::Result<()> {
        self.add(
            dir,
            WatchFlags::MOVED_TO
                | WatchFlags::CREATE
                | WatchFlags::DELETE_SELF
                | WatchFlags::MOVE_SELF
                | WatchFlags::ONLYDIR
                | WatchFlags::DONT_FOLLOW,
        )
    }

    /// Also watches a `cgroup.events` file, which the kernel modifies when `populated` changes.
    pub fn add_events_file(&mut self, path: &Path) -> io::Result<()> {
        self.add(path, WatchFlags::MODIFY)
    }

    fn add(&mut self, path: &Path, flags: WatchFlags) -> io::Result<()> {
        let shared = &self.hub.shared;
        // MASK_ADD keeps the events that another owner of the same inode asked for. The lock
        // is held across the call, so the reader task cannot see an event of the new watch
        // before its owner is recorded.
        let mut owners = lock(&shared.owners);
        let wd = inotify::add_watch(shared.fd.get_ref(), path, flags | WatchFlags::MASK_ADD)?;
        let entry = owners.entry(wd).or_default();
        if !entry.iter().any(|(owner, _)| *owner == self.owner) {
            entry.push((self.owner, Arc::clone(&self.wake)));
        }
        if !self.descriptors.contains(&wd) {
            self.descriptors.push(wd);
        }
        Ok(())
    }
}

impl Drop for ChangeWatches {
    fn drop(&mut self) {
        let shared = &self.hub.shared;
        let mut owners = lock(&shared.owners);
        for wd in self.descriptors.drain(..) {
            let Some(entry) = owners.get_mut(&wd) else {
                // The kernel removed the watch already.
                continue;
            };
            entry.retain(|(owner, _)| *owner != self.owner);
            if entry.is_empty() {
                owners.remove(&wd);
                // Fails with EINVAL if the kernel removed the watch already and the reader
                // has not yet read its IGNORED, or a queue overflow dropped that event.
                let _ = inotify::remove_watch(shared.fd.get_ref(), wd);
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const BOUND: Duration = Duration::from_secs(5);

    async fn woken(wake: &Notify, what: &str) {
        tokio::time::timeout(BOUND, wake.notified())
            .await
            .unwrap_or_else(|_| panic!("{what} did not wake its owner within {BOUND:?}"));
    }

    #[tokio::test]
    async fn hub_wakes_only_the_changed_owner() {
        let hub = ChangeHub::start().unwrap();
        let root = tempfile::tempdir().unwrap();
        let (a, b) = (root.path().join("a"), root.path().join("b"));
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        let (wake_a, wake_b) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let mut watches_a = hub.watches(Arc::clone(&wake_a));
        let mut watches_b = hub.watches(Arc::clone(&wake_b));
        watches_a.add_dir(&a).unwrap();
        watches_b.add_dir(&b).unwrap();

        std::fs::write(a.join("state.json"), b"{}").unwrap();
        woken(&wake_a, "a file created in a").await;
        // b's owner has no permit: a wait on it times out.
        assert!(
            tokio::time::timeout(Duration::from_millis(200), wake_b.notified())
                .await
                .is_err(),
            "a change in a woke the owner of b"
        );
    }

    #[tokio::test]
    async fn hub_keeps_event_before_wait() {
        let hub = ChangeHub::start().unwrap();
        let root = tempfile::tempdir().unwrap();
        let wake = Arc::new(Notify::new());
        let mut watches = hub.watches(Arc::clone(&wake));
        watches.add_dir(root.path()).unwrap();
        std::fs::write(root.path().join("handle.json"), b"{}").unwrap();
        // Let the reader task deliver the event while no task waits.
        tokio::time::sleep(Duration::from_millis(100)).await;
        woken(&wake, "a file created before the wait").await;
    }

    #[tokio::test]
    async fn hub_forgets_dropped_and_removed_watches() {
        let hub = ChangeHub::start().unwrap();
        let root = tempfile::tempdir().unwrap();
        let (kept, removed) = (root.path().join("kept"), root.path().join("removed"));
        std::fs::create_dir(&kept).unwrap();
        std::fs::create_dir(&removed).unwrap();

        let wake = Arc::new(Notify::new());
        let mut watches = hub.watches(Arc::clone(&wake));
        watches.add_dir(&kept).unwrap();
        drop(watches);
        assert_eq!(hub.watched(), 0, "a dropped set of watches left an owner");

        let mut watches = hub.watches(Arc::clone(&wake));
        watches.add_dir(&removed).unwrap();
        std::fs::remove_dir(&removed).unwrap();
        woken(&wake, "the removal of a watched directory").await;
        let deadline = tokio::time::Instant::now() + BOUND;
        while hub.watched() != 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the kernel's IGNORED event did not remove the owner within {BOUND:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(watches);
    }

    /// Returns the number of watches in the hub's inotify instance, read from its
    /// `/proc/self/fdinfo` entry.
    fn kernel_watches(hub: &ChangeHub) -> usize {
        use std::os::fd::AsRawFd;
        let fd = hub.shared.fd.get_ref().as_raw_fd();
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap();
        info.lines()
            .filter(|line| line.starts_with("inotify wd:"))
            .count()
    }

    fn max_queued_events() -> usize {
        std::fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// Creates 100 more files in `dir` than `max_queued_events`. The test runtime has one
    /// thread and this does not yield, so the reader task cannot drain the queue meanwhile.
    fn overflow_queue(dir: &Path) {
        for index in 0..max_queued_events() + 100 {
            std::fs::File::create(dir.join(index.to_string())).unwrap();
        }
    }

    #[tokio::test]
    async fn hub_wakes_every_owner_after_overflow() {
        let hub = ChangeHub::start().unwrap();
        let root = tempfile::tempdir().unwrap();
        let (noisy, quiet) = (root.path().join("noisy"), root.path().join("quiet"));
        std::fs::create_dir(&noisy).unwrap();
        std::fs::create_dir(&quiet).unwrap();
        let (wake_noisy, wake_quiet) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let mut watches_noisy = hub.watches(Arc::clone(&wake_noisy));
        let mut watches_quiet = hub.watches(Arc::clone(&wake_quiet));
        watches_noisy.add_dir(&noisy).unwrap();
        watches_quiet.add_dir(&quiet).unwrap();

        overflow_queue(&noisy);
        // The queue is full, so the kernel drops this event and only the overflow reports it.
        std::fs::write(quiet.join("state.json"), b"{}").unwrap();
        woken(&wake_quiet, "an event dropped by a queue overflow").await;
    }

    #[tokio::test]
    async fn hub_keeps_shared_descriptor_until_last_owner() {
        let hub = ChangeHub::start().unwrap();
        let root = tempfile::tempdir().unwrap();
        let (wake_a, wake_b) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let mut watches_a = hub.watches(Arc::clone(&wake_a));
        let mut watches_b = hub.watches(Arc::clone(&wake_b));
        watches_a.add_dir(root.path()).unwrap();
        watches_b.add_dir(root.path()).unwrap();
        assert_eq!(
            watches_a.descriptors, watches_b.descriptors,
            "one inode got two descriptors"
        );
        assert_eq!(kernel_watches(&hub), 1);

        std::fs::write(root.path().join("one"), b"{}").unwrap();
        woken(&wake_a, "a change seen by the first owner").await;
        woken(&wake_b, "a change seen by the second owner").await;

        drop(watches_a);
        assert_eq!(
            hub.watched(),
            1,
            "dropping one owner removed the shared descriptor"
        );
        assert_eq!(
            kernel_watches(&hub),
            1,
            "dropping one owner removed the kernel watch"
        );
        std::fs::write(root.path().join("two"), b"{}").unwrap();
        woken(&wake_b, "a change after the other owner left").await;

        drop(watches_b);
        assert_eq!(hub.watched(), 0);
        assert_eq!(
            kernel_watches(&hub),
            0,
            "the last owner left its kernel watch behind"
        );
    }

    #[tokio::test]
    async fn hub_drop_clears_entry_after_lost_ignored() {
        let hub = ChangeHub::start().unwrap();
        let root = tempfile::tempdir().unwrap();
        let (noisy, removed) = (root.path().join("noisy"), root.path().join("removed"));
        std::fs::create_dir(&noisy).unwrap();
        std::fs::create_dir(&removed).unwrap();
        let wake = Arc::new(Notify::new());
        let mut watches_noisy = hub.watches(Arc::new(Notify::new()));
        watches_noisy.add_dir(&noisy).unwrap();
        let mut watches_removed = hub.watches(Arc::clone(&wake));
        watches_removed.add_dir(&removed).unwrap();

        overflow_queue(&noisy);
        // The queue is full, so the kernel drops DELETE_SELF and IGNORED of this watch.
        std::fs::remove_dir(&removed).unwrap();
        woken(&wake, "a removal hidden by a queue overflow").await;
        assert_eq!(kernel_watches(&hub), 1, "the kernel kept the removed watch");
        // With its IGNORED lost, the entry stays until its owner drops it.
        assert_eq!(
            hub.watched(),
            2,
            "the hub saw an IGNORED that the kernel dropped"
        );
        drop(watches_removed);
        assert_eq!(hub.watched(), 1, "Drop left the entry of a removed watch");
    }

    #[tokio::test]
    async fn notify_keeps_permit_of_dropped_waiter() {
        // The watcher's select! may drop a `Notified` that notify_one already chose, when
        // another branch wins the same poll. tokio then stores the permit again.
        let wake = Notify::new();
        {
            let mut notified = std::pin::pin!(wake.notified());
            assert!(
                !notified.as_mut().enable(),
                "a permit existed before the test"
            );
            wake.notify_one();
        }
        assert!(
            tokio::time::timeout(Duration::from_millis(50), wake.notified())
                .await
                .is_ok(),
            "the permit given to a dropped waiter was lost"
        );
    }

    #[tokio::test]
    async fn hub_serves_300_directories() {
        let hub = ChangeHub::start().unwrap();
        let root = tempfile::tempdir().unwrap();
        let mut owners = Vec::new();
        for index in 0..300 {
            let dir = root.path().join(index.to_string());
            std::fs::create_dir(&dir).unwrap();
            let wake = Arc::new(Notify::new());
            let mut watches = hub.watches(Arc::clone(&wake));
            watches.add_dir(&dir).unwrap();
            owners.push((dir, wake, watches));
        }
        let (dir, wake, _) = &owners[299];
        std::fs::write(dir.join("state.json"), b"{}").unwrap();
        woken(wake, "a file created in the last of 300 directories").await;
    }
}
