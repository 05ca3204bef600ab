//! The exclusive lock that keeps a second `sandgate serve` off a data directory.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::{FlockOperation, flock};

use crate::error::StoreError;

/// How long [`DirectoryLock::acquire`] keeps trying before it reports the directory in use.
///
/// A gateway killed while it was starting a supervisor leaves a forked child that shares the
/// lock's open file until it calls `exec`, which closes the file. A restart in that moment
/// found the lock held for a few milliseconds, so the lock is tried again for a while. The
/// length is an estimate of the slowest fork-to-exec on a loaded machine.
pub const ACQUIRE_PATIENCE: Duration = Duration::from_secs(3);

/// Interval between two attempts to take a held lock.
const RETRY_INTERVAL: Duration = Duration::from_millis(50);

/// Holds `DIR/lock` locked with `flock` for as long as it lives. The kernel releases the lock
/// when the process dies, so a crashed gateway never leaves a stale lock behind.
#[derive(Debug)]
pub struct DirectoryLock {
    _file: File,
    dir: PathBuf,
}

impl DirectoryLock {
    /// Creates `dir` if needed and takes its lock, writing this process's pid into the lock file.
    /// Blocks the calling thread for up to [`ACQUIRE_PATIENCE`] while the lock is held.
    ///
    /// # Errors
    /// Returns [`StoreError::DirectoryInUse`] if another process holds the lock.
    pub fn acquire(dir: &Path) -> Result<Self, StoreError> {
        Self::acquire_within(dir, ACQUIRE_PATIENCE)
    }

    /// Like [`DirectoryLock::acquire`], but tries for `patience` only.
    ///
    /// # Errors
    /// Returns [`StoreError::DirectoryInUse`] if the lock is still held after `patience`.
    pub fn acquire_within(dir: &Path, patience: Duration) -> Result<Self, StoreError> {
        let open_error = |source| StoreError::OpenDirectory {
            dir: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(open_error)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join("lock"))
            .map_err(open_error)?;

        let deadline = Instant::now() + patience;
        while flock(&file, FlockOperation::NonBlockingLockExclusive).is_err()
            && Instant::now() < deadline
        {
            std::thread::sleep(RETRY_INTERVAL);
        }
        if flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(StoreError::DirectoryInUse {
                dir: dir.to_path_buf(),
                holder: if holder.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {holder})")
                },
            });
        }

        file.set_len(0).map_err(open_error)?;
        file.seek(SeekFrom::Start(0)).map_err(open_error)?;
        write!(file, "{}", std::process::id()).map_err(open_error)?;
        Ok(Self {
            _file: file,
            dir: dir.to_path_buf(),
        })
    }

    /// Returns the locked directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_lock_is_reported_after_patience() {
        let dir = tempfile::tempdir().unwrap();
        let _first = DirectoryLock::acquire(dir.path()).unwrap();
        let patience = Duration::from_millis(200);
        let started = Instant::now();
        let error = DirectoryLock::acquire_within(dir.path(), patience).unwrap_err();
        assert!(
            started.elapsed() >= patience,
            "gave up after {:?}",
            started.elapsed()
        );
        let message = error.to_string();
        assert!(
            message.contains("in use by another sandgate serve"),
            "{message}"
        );
        assert!(
            message.contains(&std::process::id().to_string()),
            "{message}"
        );
    }

    #[test]
    fn lock_released_meanwhile_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirectoryLock::acquire(dir.path()).unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(first);
        });
        let second = DirectoryLock::acquire_within(dir.path(), Duration::from_secs(10));
        release.join().unwrap();
        assert!(second.is_ok(), "{second:?}");
    }
}
