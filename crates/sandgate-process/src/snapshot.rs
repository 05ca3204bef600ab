//! One fresh reading of a sandbox: its files, whether its supervisor runs (checked by pid and
//! start time), and what remains according to its cgroup or `/proc`. The driver turns it into an
//! [`Observed`] value.

use std::fs;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use sandgate_core::{DriverDetails, LiveStatus, Observed};

use crate::cgroup;
use crate::files::{self, ControlFile, HandleFile, LOG_FILE, SandboxDir, SpecFile, StartedFile};
use crate::procfs;

/// Name of the driver, as recorded in [`DriverDetails::driver`].
pub const DRIVER_NAME: &str = "process";

/// How long after the driver wrote `spec.json` a missing handle still means "starting".
/// After that, a directory without a handle has no supervisor.
const HANDLE_WAIT: Duration = Duration::from_secs(10);

/// Reason while processes remain before the kill time.
pub const REASON_AFTER_SIGTERM: &str = "process group still running after SIGTERM";
/// Reason while processes remain after the kill time.
pub const REASON_AFTER_SIGKILL: &str = "processes still running after SIGKILL";
/// Reason once only the supervisor remains.
pub const REASON_SUPERVISOR: &str = "waiting for the supervisor to exit";

/// A fresh reading of one sandbox directory and the processes behind it.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Whether the sandbox directory exists.
    pub exists: bool,
    /// The spec the driver wrote.
    pub spec: Option<SpecFile>,
    /// The supervisor's handle.
    pub handle: Option<HandleFile>,
    /// The result of starting the command.
    pub started: Option<StartedFile>,
    /// The command's recorded exit status.
    pub exit_code: Option<i32>,
    /// The deletion plan, once a deletion was requested.
    pub control: Option<ControlFile>,
    /// Whether the process named by the handle runs, with the recorded start time.
    pub supervisor_alive: bool,
    /// Whether the sandbox cgroup, supervisor included, still contains a process.
    pub cgroup_populated: bool,
    /// Whether any process other than the supervisor remains, as far as can be seen.
    pub payload_running: bool,
    /// When the directory was set up.
    pub created_at: Option<SystemTime>,
}

impl Snapshot {
    /// Reads the sandbox directory `dir` and the processes it names.
    ///
    /// # Errors
    /// Returns an error if a file exists but cannot be read or parsed, or `/proc` cannot be
    /// read.
    pub fn read(dir: &SandboxDir) -> io::Result<Snapshot> {
        let metadata = match fs::metadata(&dir.path) {
            Ok(metadata) => metadata,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Ok(Snapshot::default());
            }
            Err(error) => return Err(error),
        };

        let spec = dir.read_spec()?;
        let handle = dir.read_handle()?;
        let started = dir.read_started()?;
        let exit_code = dir.read_exit_code()?;
        let control = dir.read_control()?;

        let supervisor_alive = match &handle {
            Some(handle) => procfs::is_alive(handle.pid, handle.start_time)?,
            None => false,
        };
        let cgroup_path = handle
            .as_ref()
            .and_then(|handle| handle.cgroup.clone())
            .or_else(|| spec.as_ref().and_then(|spec| spec.cgroup.clone()));
        let (cgroup_populated, payload_running) = match (&cgroup_path, &handle) {
            (Some(path), _) => (
                cgroup::populated(path)?.unwrap_or(false),
                cgroup::populated(&path.join(cgroup::PAYLOAD_LEAF))?.unwrap_or(false),
            ),
            (None, Some(handle)) if supervisor_alive => (
                false,
                procfs::descendants(handle.pid)?
                    .iter()
                    .any(|stat| !stat.is_dead()),
            ),
            (None, _) => (false, false),
        };

        let created_at = spec
            .as_ref()
            .map(|spec| files::from_unix_millis(spec.created_at_ms))
            .or_else(|| metadata.modified().ok());

        Ok(Snapshot {
            exists: true,
            spec,
            handle,
            started,
            exit_code,
            control,
            supervisor_alive,
            cgroup_populated,
            payload_running,
            created_at,
        })
    }

    /// Returns the sandbox's cgroup, from the handle or else from the spec.
    pub fn cgroup(&self) -> Option<PathBuf> {
        self.handle
            .as_ref()
            .and_then(|handle| handle.cgroup.clone())
            .or_else(|| self.spec.as_ref().and_then(|spec| spec.cgroup.clone()))
    }

    /// Returns whether any process of the sandbox may remain.
    pub fn anything_remains(&self) -> bool {
        self.supervisor_alive || self.cgroup_populated
    }

    /// Returns whether no handle was written yet but the supervisor may still write one.
    fn awaiting_handle(&self, now: SystemTime) -> bool {
        self.handle.is_none()
            && self.control.is_none()
            && self.created_at.is_some_and(|created| {
                now.duration_since(created).unwrap_or(Duration::ZERO) < HANDLE_WAIT
            })
    }

    /// Turns the reading into an observation.
    ///
    /// A command that failed to start leaves nothing running, but it is reported as
    /// `Present { Error(..) }` so that the message reaches the record. Once a deletion is
    /// requested it is reported as `Gone`, so the deletion completes.
    pub fn observed(&self, now: SystemTime) -> Observed {
        if !self.exists {
            return Observed::Gone { exit_code: None };
        }
        if !self.anything_remains() {
            if self.awaiting_handle(now) {
                return Observed::Present {
                    status: LiveStatus::Provisioning("starting the supervisor".to_string()),
                    terminating: None,
                };
            }
            return match (&self.started, &self.control) {
                (Some(StartedFile::Failed { message }), None) => Observed::Present {
                    status: LiveStatus::Error(message.clone()),
                    terminating: None,
                },
                _ => Observed::Gone {
                    exit_code: self.exit_code,
                },
            };
        }

        let status = match (&self.started, self.exit_code) {
            (_, Some(code)) => LiveStatus::Exited(code),
            (Some(StartedFile::Running { .. }), None) => {
                LiveStatus::Ready("command running".to_string())
            }
            (Some(StartedFile::Failed { message }), None) => LiveStatus::Error(message.clone()),
            (Some(StartedFile::Skipped), None) => {
                LiveStatus::Provisioning("deletion requested before the command started".into())
            }
            (None, None) => LiveStatus::Provisioning("starting command".to_string()),
        };
        let terminating = self.control.map(|control| {
            let reason = if !self.payload_running {
                REASON_SUPERVISOR
            } else if control.force || now >= control.kill_at() {
                REASON_AFTER_SIGKILL
            } else {
                REASON_AFTER_SIGTERM
            };
            reason.to_string()
        });
        Observed::Present {
            status,
            terminating,
        }
    }

    /// Returns what the store records of the sandbox.
    pub fn details(&self, dir: &SandboxDir) -> DriverDetails {
        let mut details = DriverDetails {
            driver: DRIVER_NAME.to_string(),
            ..DriverDetails::default()
        };
        let attributes = &mut details.attributes;
        attributes.insert("dir".to_string(), dir.path.display().to_string());
        attributes.insert("log".to_string(), dir.file(LOG_FILE).display().to_string());
        if let Some(handle) = &self.handle {
            attributes.insert("pid".to_string(), handle.pid.to_string());
            attributes.insert("start_time".to_string(), handle.start_time.to_string());
        }
        if let Some(cgroup) = self.cgroup() {
            attributes.insert("cgroup".to_string(), cgroup.display().to_string());
        }
        if let Some(StartedFile::Running { pid }) = &self.started {
            attributes.insert("command_pid".to_string(), pid.to_string());
        }
        details
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running() -> Snapshot {
        Snapshot {
            exists: true,
            handle: Some(HandleFile {
                pid: 10,
                start_time: 20,
                cgroup: None,
            }),
            started: Some(StartedFile::Running { pid: 11 }),
            supervisor_alive: true,
            payload_running: true,
            created_at: Some(SystemTime::UNIX_EPOCH),
            ..Snapshot::default()
        }
    }

    fn present(status: LiveStatus, terminating: Option<&str>) -> Observed {
        Observed::Present {
            status,
            terminating: terminating.map(str::to_string),
        }
    }

    #[test]
    fn running_command_is_ready() {
        let now = SystemTime::now();
        assert_eq!(
            running().observed(now),
            present(LiveStatus::Ready("command running".into()), None)
        );
    }

    #[test]
    fn exited_command_with_processes_left_is_exited() {
        let snapshot = Snapshot {
            exit_code: Some(3),
            ..running()
        };
        assert_eq!(
            snapshot.observed(SystemTime::now()),
            present(LiveStatus::Exited(3), None)
        );
    }

    #[test]
    fn nothing_left_is_gone_with_exit_code() {
        let snapshot = Snapshot {
            exit_code: Some(3),
            supervisor_alive: false,
            payload_running: false,
            ..running()
        };
        assert_eq!(
            snapshot.observed(SystemTime::now()),
            Observed::Gone { exit_code: Some(3) }
        );
    }

    #[test]
    fn deletion_reasons_follow_kill_time() {
        let now = SystemTime::now();
        let before = ControlFile {
            kill_at_ms: files::unix_millis(now + Duration::from_secs(5)),
            force: false,
        };
        let after = ControlFile {
            kill_at_ms: files::unix_millis(now - Duration::from_secs(1)),
            force: false,
        };
        let ready = || LiveStatus::Ready("command running".into());

        let snapshot = Snapshot {
            control: Some(before),
            ..running()
        };
        assert_eq!(
            snapshot.observed(now),
            present(ready(), Some(REASON_AFTER_SIGTERM))
        );

        let snapshot = Snapshot {
            control: Some(after),
            ..running()
        };
        assert_eq!(
            snapshot.observed(now),
            present(ready(), Some(REASON_AFTER_SIGKILL))
        );

        let snapshot = Snapshot {
            control: Some(after),
            payload_running: false,
            ..running()
        };
        assert_eq!(
            snapshot.observed(now),
            present(ready(), Some(REASON_SUPERVISOR))
        );
    }

    #[test]
    fn failed_start_is_error_until_deleted() {
        let failed = Snapshot {
            started: Some(StartedFile::Failed {
                message: "command not found: foo".into(),
            }),
            supervisor_alive: false,
            payload_running: false,
            ..running()
        };
        assert_eq!(
            failed.observed(SystemTime::now()),
            present(LiveStatus::Error("command not found: foo".into()), None)
        );

        let deleting = Snapshot {
            control: Some(ControlFile {
                kill_at_ms: 0,
                force: true,
            }),
            ..failed
        };
        assert_eq!(
            deleting.observed(SystemTime::now()),
            Observed::Gone { exit_code: None }
        );
    }

    #[test]
    fn missing_handle_is_starting_only_briefly() {
        let now = SystemTime::now();
        let fresh = Snapshot {
            exists: true,
            created_at: Some(now),
            ..Snapshot::default()
        };
        assert!(matches!(
            fresh.observed(now),
            Observed::Present {
                status: LiveStatus::Provisioning(_),
                ..
            }
        ));
        let stale = Snapshot {
            created_at: Some(now - HANDLE_WAIT),
            ..fresh
        };
        assert_eq!(stale.observed(now), Observed::Gone { exit_code: None });
    }

    #[test]
    fn missing_directory_is_gone() {
        assert_eq!(
            Snapshot::default().observed(SystemTime::now()),
            Observed::Gone { exit_code: None }
        );
    }
}
