//! Event sources that wake a sandbox's watcher without polling: a pidfd of the supervisor,
//! which becomes readable when it exits, and an inotify instance on the sandbox directory
//! (files renamed into place) and on the cgroup's `cgroup.events` files (populated changes).

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::inotify::{self, CreateFlags, WatchFlags};
use rustix::process::{Pid, PidfdFlags, Signal};
use tokio::io::unix::AsyncFd;

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

/// An inotify instance registered with the tokio reactor.
pub struct ChangeWatch {
    fd: AsyncFd<OwnedFd>,
}

impl ChangeWatch {
    /// Creates an inotify instance that watches nothing yet.
    pub fn new() -> io::Result<Self> {
        let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)?;
        Ok(Self {
            fd: crate::sys::register_readable(fd)?,
        })
    }

    /// Watches `dir` for files renamed into it and for its own removal.
    pub fn add_dir(&self, dir: &Path) -> io::Result<()> {
        inotify::add_watch(
            self.fd.get_ref(),
            dir,
            WatchFlags::MOVED_TO
                | WatchFlags::CREATE
                | WatchFlags::DELETE_SELF
                | WatchFlags::MOVE_SELF
                | WatchFlags::ONLYDIR
                | WatchFlags::DONT_FOLLOW,
        )?;
        Ok(())
    }

    /// Also watches a `cgroup.events` file, which the kernel modifies when `populated` changes.
    pub fn add_events_file(&self, path: &Path) -> io::Result<()> {
        inotify::add_watch(self.fd.get_ref(), path, WatchFlags::MODIFY)?;
        Ok(())
    }

    /// Waits for at least one change and discards the pending events, since the caller
    /// re-reads everything anyway.
    ///
    /// # Errors
    /// Returns an error if the reactor or the read fails.
    ///
    /// # Cancel safety
    /// Cancel safe: unread events stay queued in the kernel.
    pub async fn changed(&self) -> io::Result<()> {
        let mut buffer = [MaybeUninit::<u8>::uninit(); 4096];
        loop {
            let mut guard = self.fd.readable().await?;
            let mut drained_any = false;
            loop {
                match rustix::io::read(self.fd.get_ref(), &mut buffer) {
                    Ok((bytes, _)) if !bytes.is_empty() => drained_any = true,
                    Ok(_) => break,
                    Err(rustix::io::Errno::WOULDBLOCK) => {
                        guard.clear_ready();
                        break;
                    }
                    Err(rustix::io::Errno::INTR) => {}
                    Err(error) => return Err(error.into()),
                }
            }
            if drained_any {
                return Ok(());
            }
        }
    }
}
