//! The files of a sandbox directory, shared by the driver and the supervisor.
//!
//! Every file except the log is written whole to a temporary name and renamed into place, so a
//! reader sees either the old content or the new one. The supervisor writes `handle.json`,
//! `started.json` and `exit_code`; the driver writes `spec.json`, `control.json` and nothing else.
//!
//! The sandbox's command runs as the gateway's user and can reach these files, so none of them
//! is opened through a symbolic link. Reads and the temporary files of writes use `O_NOFOLLOW`,
//! and temporary files get a random name and `O_EXCL`.

use std::collections::hash_map::RandomState;
use std::fs::{self, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Spec of the command, written by the driver before it starts the supervisor.
pub const SPEC_FILE: &str = "spec.json";
/// The supervisor's stable handle, written by the supervisor before it starts the command.
pub const HANDLE_FILE: &str = "handle.json";
/// The result of starting the command.
pub const STARTED_FILE: &str = "started.json";
/// The command's exit status as a decimal number, negative for a signal.
pub const EXIT_CODE_FILE: &str = "exit_code";
/// The deletion plan, written by the driver and read by the supervisor on SIGUSR1.
pub const CONTROL_FILE: &str = "control.json";
/// Lock file that the running supervisor keeps locked, so that a second one for the same id exits.
pub const LOCK_FILE: &str = "supervisor.lock";
/// Output of the command and messages of the supervisor, appended.
pub const LOG_FILE: &str = "log";
/// The command's working directory inside the sandbox directory, used by supervisors whose
/// spec names no `work_dir`.
pub const LEGACY_WORK_DIR: &str = "work";

/// Paths of one sandbox directory.
#[derive(Clone, Debug)]
pub struct SandboxDir {
    /// The directory itself, `<data_dir>/sandboxes/<id>`.
    pub path: PathBuf,
}

impl SandboxDir {
    /// Creates the paths of the sandbox directory at `path`.
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    /// Returns the path of the file `name` in the directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Reads the spec file.
    pub fn read_spec(&self) -> io::Result<Option<SpecFile>> {
        read_json(&self.file(SPEC_FILE))
    }

    /// Reads the handle file.
    pub fn read_handle(&self) -> io::Result<Option<HandleFile>> {
        read_json(&self.file(HANDLE_FILE))
    }

    /// Reads the result of starting the command.
    pub fn read_started(&self) -> io::Result<Option<StartedFile>> {
        read_json(&self.file(STARTED_FILE))
    }

    /// Reads the deletion plan.
    pub fn read_control(&self) -> io::Result<Option<ControlFile>> {
        read_json(&self.file(CONTROL_FILE))
    }

    /// Reads the command's recorded exit status.
    pub fn read_exit_code(&self) -> io::Result<Option<i32>> {
        let path = self.file(EXIT_CODE_FILE);
        let Some(text) = read_optional(&path)? else {
            return Ok(None);
        };
        text.trim().parse().map(Some).map_err(|error| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("invalid exit status in {}: {error}", path.display()),
            )
        })
    }
}

/// The content of `spec.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecFile {
    /// Sandbox id, as the directory is named.
    pub id: String,
    /// Program and arguments, argv[0] first.
    pub argv: Vec<String>,
    /// Environment variables set on top of the minimal environment.
    pub env: Vec<(String, String)>,
    /// Grace period of a deletion the supervisor starts itself, in milliseconds.
    pub grace_period_ms: u64,
    /// The sandbox's cgroup v2 directory, if the driver created one.
    pub cgroup: Option<PathBuf>,
    /// When the driver wrote the file, in milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// The command's working directory, `<data_dir>/work/<id>`. Missing in specs written
    /// before it moved out of the sandbox directory, which then use `<sandbox dir>/work`.
    #[serde(default)]
    pub work_dir: Option<PathBuf>,
}

/// The content of `handle.json`: what identifies the supervisor across pid reuse.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandleFile {
    /// Supervisor pid.
    pub pid: i32,
    /// Supervisor start time in clock ticks since boot, field 22 of `/proc/<pid>/stat`.
    pub start_time: u64,
    /// The sandbox cgroup the supervisor moved itself under, if any.
    pub cgroup: Option<PathBuf>,
}

/// The content of `started.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartedFile {
    /// The command runs with this pid, which is also its session and process group id.
    Running {
        /// Command pid.
        pid: i32,
    },
    /// The command could not be started.
    Failed {
        /// Why, as shown to users ("command not found: foo").
        message: String,
    },
    /// A deletion arrived before the command was started, so it never ran.
    Skipped,
}

/// The content of `control.json`: the deletion plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlFile {
    /// When whatever remains is killed, in milliseconds since the Unix epoch.
    pub kill_at_ms: u64,
    /// Whether the deletion was forced.
    pub force: bool,
}

impl ControlFile {
    /// Returns the plan that is at least as hard as both `self` and `other`: the earlier kill
    /// time, and force if either sets it.
    pub fn merge(self, other: ControlFile) -> ControlFile {
        ControlFile {
            kill_at_ms: self.kill_at_ms.min(other.kill_at_ms),
            force: self.force || other.force,
        }
    }

    /// Returns the kill time as a [`SystemTime`].
    pub fn kill_at(&self) -> SystemTime {
        from_unix_millis(self.kill_at_ms)
    }
}

/// Converts a time to milliseconds since the Unix epoch, zero for earlier times.
pub fn unix_millis(time: SystemTime) -> u64 {
    let millis = time
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis();
    u64::try_from(millis).unwrap_or(u64::MAX)
}

/// Converts milliseconds since the Unix epoch to a time.
pub fn from_unix_millis(millis: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(millis)
}

/// Writes `contents` to `path` atomically: to a new temporary file in the same directory,
/// synced, then renamed over `path`.
///
/// The temporary file has a random name and is created with `O_EXCL | O_NOFOLLOW`, so a file or
/// symbolic link planted in the directory is never opened. The rename replaces a symbolic link
/// at `path` itself and not its target.
pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let mut attempt = 0;
    let (temp, mut file) = loop {
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(".{:016x}.tmp", random_u64()));
        let temp = path.with_file_name(temp_name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o600)
            .open(&temp)
        {
            Ok(file) => break (temp, file),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists && attempt < 8 => {
                attempt += 1;
            }
            Err(error) => return Err(error),
        }
    };
    let written = file.write_all(contents).and_then(|()| file.sync_all());
    drop(file);
    written
        .and_then(|()| fs::rename(&temp, path))
        .inspect_err(|_| {
            let _ = fs::remove_file(&temp);
        })
}

/// Returns 64 random bits, from the per-process random keys of std's `RandomState` mixed with
/// the time and a counter.
fn random_u64() -> u64 {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    hasher.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_nanos(),
    );
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// Serialises `value` as JSON and writes it to `path` atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    write_atomic(path, &bytes)
}

/// Reads a JSON file, returning `None` if it does not exist.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> io::Result<Option<T>> {
    let Some(text) = read_optional(path)? else {
        return Ok(None);
    };
    serde_json::from_str(&text).map(Some).map_err(|error| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("invalid JSON in {}: {error}", path.display()),
        )
    })
}

/// Reads a text file without following a symbolic link, returning `None` if it does not exist.
///
/// # Errors
/// A symbolic link at `path` fails with `ELOOP`, and a file that is not UTF-8 with
/// `InvalidData`.
pub fn read_optional(path: &Path) -> io::Result<Option<String>> {
    let mut file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not a regular file", path.display()),
        ));
    }
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    Ok(Some(text))
}

/// Opens `path` for appending, creating it if needed, without following a symbolic link.
pub fn open_append_nofollow(path: &Path) -> io::Result<fs::File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Prefix of the name a directory gets while [`remove_dir_whole`] removes it. No sandbox id
/// starts with it, so a reader of the sandboxes directory never takes it for a sandbox.
pub const REMOVING_PREFIX: &str = ".removing-";

/// Removes directory `path` and everything in it, such that no reader sees it half removed:
/// it is renamed to `.removing-<name>` first, then removed. A process killed in between
/// leaves only the renamed directory, which [`remove_leftovers`] removes. A missing `path`
/// counts as removed. Symbolic links are removed, not followed.
pub fn remove_dir_whole(path: &Path) -> io::Result<()> {
    let Some(name) = path.file_name() else {
        return fs::remove_dir_all(path);
    };
    let mut removing = std::ffi::OsString::from(REMOVING_PREFIX);
    removing.push(name);
    let removing = path.with_file_name(removing);
    remove_if_present(&removing)?;
    match fs::rename(path, &removing) {
        Ok(()) => remove_if_present(&removing),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error),
    }
}

/// Removes what interrupted runs of [`remove_dir_whole`] left in directory `parent`, and
/// returns how many directories it removed.
pub fn remove_leftovers(parent: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for entry in fs::read_dir(parent)? {
        let entry = entry?;
        if entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.starts_with(REMOVING_PREFIX))
        {
            remove_if_present(&entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(metadata) if metadata.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keeps_earlier_kill_and_force() {
        let late = ControlFile {
            kill_at_ms: 2_000,
            force: false,
        };
        let early = ControlFile {
            kill_at_ms: 1_000,
            force: true,
        };
        assert_eq!(late.merge(early), early);
        assert_eq!(early.merge(late), early);
    }

    #[test]
    fn write_atomic_replaces_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("value");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "two");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "temporary files left behind: {names:?}");
    }

    #[cfg(unix)]
    #[test]
    fn read_optional_rejects_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        fs::write(&target, "{}").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(read_optional(&link).is_err());
        assert_eq!(read_optional(&target).unwrap().as_deref(), Some("{}"));
    }

    #[test]
    fn started_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let sandbox = SandboxDir::new(dir.path().to_path_buf());
        assert_eq!(sandbox.read_started().unwrap(), None);
        let failed = StartedFile::Failed {
            message: "command not found: foo".to_string(),
        };
        write_json(&sandbox.file(STARTED_FILE), &failed).unwrap();
        assert_eq!(sandbox.read_started().unwrap(), Some(failed));
    }

    #[test]
    fn remove_dir_whole_leaves_no_part() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("3f2a7c1e-9b4d-4e21-8a6f-0c5d2e9b7a14");
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join(SPEC_FILE), b"{}").unwrap();
        // An earlier removal of the same directory was interrupted after its rename.
        let stale = parent
            .path()
            .join(".removing-3f2a7c1e-9b4d-4e21-8a6f-0c5d2e9b7a14");
        fs::create_dir(&stale).unwrap();
        fs::write(stale.join(HANDLE_FILE), b"{}").unwrap();

        remove_dir_whole(&dir).unwrap();
        assert!(!dir.exists());
        assert!(!stale.exists());
        remove_dir_whole(&dir).unwrap();
    }

    #[test]
    fn remove_leftovers_keeps_sandboxes() {
        let parent = tempfile::tempdir().unwrap();
        let sandbox = parent.path().join("3f2a7c1e-9b4d-4e21-8a6f-0c5d2e9b7a14");
        fs::create_dir(&sandbox).unwrap();
        let stale = parent.path().join(".removing-0c5d2e9b");
        fs::create_dir(&stale).unwrap();
        fs::write(stale.join(CONTROL_FILE), b"{}").unwrap();

        assert_eq!(remove_leftovers(parent.path()).unwrap(), 1);
        assert!(sandbox.exists());
        assert!(!stale.exists());
    }
}
