//! The files of a sandbox directory, shared by the driver and the supervisor.
//!
//! Every file except the log is written whole to a temporary name and renamed into place, so a
//! reader sees either the old content or the new one. The supervisor writes `handle.json`,
//! `started.json` and `exit_code`; the driver writes `spec.json`, `control.json` and nothing else.

use std::fs;
use std::io::{self, Write};
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
/// The command's working directory.
pub const WORK_DIR: &str = "work";

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

/// Writes `contents` to `path` atomically: to a temporary file in the same directory, synced,
/// then renamed over `path`.
pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".{}.tmp", std::process::id()));
    let temp = path.with_file_name(temp_name);

    let mut file = fs::File::create(&temp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&temp, path).inspect_err(|_| {
        let _ = fs::remove_file(&temp);
    })
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

/// Reads a text file, returning `None` if it does not exist.
pub fn read_optional(path: &Path) -> io::Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
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
}
