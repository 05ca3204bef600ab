//! The exclusive lock that keeps a second `sandgate serve` off a data directory.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};

use crate::error::StoreError;

/// Holds `DIR/lock` locked with `flock` for as long as it lives. The kernel releases the lock
/// when the process dies, so a crashed gateway never leaves a stale lock behind.
#[derive(Debug)]
pub struct DirectoryLock {
    _file: File,
    dir: PathBuf,
}

impl DirectoryLock {
    /// Creates `dir` if needed and takes its lock, writing this process's pid into the lock file.
    ///
    /// # Errors
    /// Returns [`StoreError::DirectoryInUse`] if another process holds the lock.
    pub fn acquire(dir: &Path) -> Result<Self, StoreError> {
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
