//! One fresh reading of a sandbox: its files, whether its supervisor runs (checked by pid and
//! start time), and what remains according to its cgroup or `/proc`. The driver turns it into an
//! [`Observed`] value.
//!
//! The files are written by the supervisor and the driver, but the sandbox's command can reach
//! them too, so the reading never decides from them alone what remains. The supervisor, the
//! cgroup and the deletion plan come from [`Tracking`], which the driver takes from what it
//! recorded at create. A file that cannot be read becomes [`Snapshot::state_error`] and never an
//! error of the whole reading.

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
/// Status of a sandbox whose supervisor exited without recording the command's exit while its
/// cgroup still contains processes.
pub const REASON_SUPERVISOR_VANISHED: &str =
    "supervisor exited unexpectedly; processes remain in the sandbox cgroup";
/// Status of a sandbox whose directory is gone while its supervisor or cgroup remains.
pub const REASON_DIRECTORY_MISSING: &str =
    "sandbox directory is missing but processes of the sandbox remain";
/// Prefix of the status of a sandbox with a state file that cannot be read.
pub const REASON_STATE_UNREADABLE: &str = "cannot read sandbox state";

/// What the driver trusts about a sandbox, independent of the files in its directory.
#[derive(Clone, Debug, Default)]
pub struct Tracking {
    /// The supervisor recorded at create, or one verified to supervise this sandbox.
    pub handle: Option<HandleFile>,
    /// The sandbox cgroup, `<base>/<id>`, if the driver uses cgroups.
    pub cgroup: Option<PathBuf>,
    /// The deletion plan the driver requested, if any.
    pub plan: Option<ControlFile>,
}

/// A fresh reading of one sandbox directory and the processes behind it.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Whether the sandbox directory exists.
    pub exists: bool,
    /// The spec the driver wrote.
    pub spec: Option<SpecFile>,
    /// The supervisor the driver trusts, from [`Tracking::handle`].
    pub handle: Option<HandleFile>,
    /// Whether `handle.json` exists, trusted or not, so that the supervisor got past writing it.
    pub handle_written: bool,
    /// The sandbox cgroup, from [`Tracking::cgroup`].
    pub cgroup: Option<PathBuf>,
    /// The result of starting the command.
    pub started: Option<StartedFile>,
    /// The command's recorded exit status.
    pub exit_code: Option<i32>,
    /// The deletion plan: the driver's, merged with a valid `control.json`.
    pub control: Option<ControlFile>,
    /// Whether the trusted supervisor runs, with its recorded start time.
    pub supervisor_alive: bool,
    /// Whether the sandbox cgroup, supervisor included, still contains a process.
    pub cgroup_populated: bool,
    /// Whether any process other than the supervisor remains, as far as can be seen. Read only
    /// for a sandbox with a deletion plan, and `false` for the others.
    pub payload_running: bool,
    /// When the directory was set up.
    pub created_at: Option<SystemTime>,
    /// Why a file or process state could not be read, joined with "; ".
    pub state_error: Option<String>,
}

/// Returns the value of `result`, or records its error in `errors` and returns `None`.
fn keep<T>(result: io::Result<Option<T>>, errors: &mut Vec<String>) -> Option<T> {
    result.unwrap_or_else(|error| {
        errors.push(error.to_string());
        None
    })
}

impl Snapshot {
    /// Reads the sandbox directory `dir` and the processes that `tracking` names.
    ///
    /// It never fails. What cannot be read is recorded in `state_error`, and a process or
    /// cgroup whose state cannot be read counts as still running, so that an unreadable state
    /// never turns into `Gone`.
    pub fn read(dir: &SandboxDir, tracking: Tracking) -> Snapshot {
        let mut errors = Vec::new();
        let mut exists = true;
        let mut readable = false;
        let mut modified = None;
        match fs::symlink_metadata(&dir.path) {
            Ok(metadata) if metadata.is_dir() => {
                readable = true;
                modified = metadata.modified().ok();
            }
            Ok(_) => errors.push(format!("{} is not a directory", dir.path.display())),
            Err(error) if error.kind() == io::ErrorKind::NotFound => exists = false,
            Err(error) => errors.push(format!("{}: {error}", dir.path.display())),
        }

        let mut snapshot = Snapshot {
            exists,
            handle: tracking.handle,
            cgroup: tracking.cgroup,
            control: tracking.plan,
            ..Snapshot::default()
        };
        if readable {
            snapshot.spec = keep(dir.read_spec(), &mut errors);
            snapshot.handle_written = fs::symlink_metadata(dir.file(files::HANDLE_FILE)).is_ok();
            snapshot.started = keep(dir.read_started(), &mut errors);
            snapshot.exit_code = keep(dir.read_exit_code(), &mut errors);
            if let Some(control) = keep(dir.read_control(), &mut errors) {
                snapshot.control =
                    Some(snapshot.control.map_or(control, |plan| plan.merge(control)));
            }
        }
        snapshot.read_processes(&mut errors);

        snapshot.created_at = snapshot
            .spec
            .as_ref()
            .map(|spec| files::from_unix_millis(spec.created_at_ms))
            .or(modified)
            .or_else(|| {
                let path = snapshot.cgroup.as_ref()?;
                fs::metadata(path).ok()?.modified().ok()
            });
        if !errors.is_empty() {
            snapshot.state_error = Some(errors.join("; "));
        }
        snapshot
    }

    /// Fills in what remains of the supervisor, the cgroup and the payload.
    fn read_processes(&mut self, errors: &mut Vec<String>) {
        self.supervisor_alive = match &self.handle {
            Some(handle) => {
                procfs::is_alive(handle.pid, handle.start_time).unwrap_or_else(|error| {
                    errors.push(format!("failed to read supervisor {}: {error}", handle.pid));
                    true
                })
            }
            None => false,
        };
        let mut payload_populated = false;
        if let Some(path) = &self.cgroup {
            for (leaf, flag) in [
                (path.clone(), &mut self.cgroup_populated),
                (path.join(cgroup::PAYLOAD_LEAF), &mut payload_populated),
            ] {
                *flag = cgroup::populated(&leaf).map_or_else(
                    |error| {
                        errors.push(format!("failed to read {}: {error}", leaf.display()));
                        true
                    },
                    |populated| populated.unwrap_or(false),
                );
            }
        }
        // Only a deletion's reason uses this, and the scan reads every process of the machine.
        // So it runs only for a sandbox being deleted whose payload cgroup is not populated,
        // since a scan per sandbox would make a pass over many sandboxes quadratic.
        let descendants_running = match &self.handle {
            _ if payload_populated || self.control.is_none() => false,
            Some(handle) if self.supervisor_alive => procfs::descendants(handle.pid).map_or_else(
                |error| {
                    errors.push(format!("failed to scan /proc: {error}"));
                    true
                },
                |found| found.iter().any(|stat| !stat.is_dead()),
            ),
            _ => false,
        };
        self.payload_running = payload_populated || descendants_running;
    }

    /// Returns whether any process of the sandbox may remain.
    pub fn anything_remains(&self) -> bool {
        self.supervisor_alive || self.cgroup_populated
    }

    /// Returns whether no handle was written yet but the supervisor may still write one.
    fn awaiting_handle(&self, now: SystemTime) -> bool {
        self.exists
            && self.handle.is_none()
            && !self.handle_written
            && self.control.is_none()
            && self.created_at.is_some_and(|created| {
                now.duration_since(created).unwrap_or(Duration::ZERO) < HANDLE_WAIT
            })
    }

    /// Turns the reading into an observation.
    ///
    /// A command that failed to start leaves nothing running, but it is reported as
    /// `Present { Error(..) }` so that the message reaches the record. Once a deletion is
    /// requested it is reported as `Gone`, so the deletion completes. A missing directory or an
    /// unreadable state file is `Gone` only when the trusted supervisor and the cgroup are
    /// empty.
    pub fn observed(&self, now: SystemTime) -> Observed {
        if !self.anything_remains() {
            if !self.exists {
                return Observed::Gone { exit_code: None };
            }
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

        let terminating = self.control.map(|control| {
            let reason = if !self.payload_running && self.supervisor_alive {
                REASON_SUPERVISOR
            } else if control.force || now >= control.kill_at() {
                REASON_AFTER_SIGKILL
            } else {
                REASON_AFTER_SIGTERM
            };
            reason.to_string()
        });
        Observed::Present {
            status: self.status(),
            terminating,
        }
    }

    /// Returns the status of a sandbox of which something remains.
    fn status(&self) -> LiveStatus {
        if self.handle.is_some() && !self.supervisor_alive && self.exit_code.is_none() {
            return LiveStatus::Error(REASON_SUPERVISOR_VANISHED.to_string());
        }
        if !self.exists {
            return LiveStatus::Unknown(REASON_DIRECTORY_MISSING.to_string());
        }
        if let Some(error) = &self.state_error {
            return LiveStatus::Unknown(format!("{REASON_STATE_UNREADABLE}: {error}"));
        }
        match (&self.started, self.exit_code) {
            (_, Some(code)) => LiveStatus::Exited(code),
            (Some(StartedFile::Running { .. }), None) => {
                LiveStatus::Ready("command running".to_string())
            }
            (Some(StartedFile::Failed { message }), None) => LiveStatus::Error(message.clone()),
            (Some(StartedFile::Skipped), None) => {
                LiveStatus::Provisioning("deletion requested before the command started".into())
            }
            (None, None) => LiveStatus::Provisioning("starting command".to_string()),
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
        if let Some(cgroup) = self.cgroup.as_ref().filter(|path| path.exists()) {
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
    fn killed_supervisor_with_populated_cgroup_is_error() {
        let snapshot = Snapshot {
            supervisor_alive: false,
            cgroup_populated: true,
            ..running()
        };
        assert_eq!(
            snapshot.observed(SystemTime::now()),
            present(LiveStatus::Error(REASON_SUPERVISOR_VANISHED.into()), None)
        );
    }

    #[test]
    fn missing_directory_with_processes_is_present() {
        let snapshot = Snapshot {
            exists: false,
            ..running()
        };
        assert_eq!(
            snapshot.observed(SystemTime::now()),
            present(LiveStatus::Unknown(REASON_DIRECTORY_MISSING.into()), None)
        );
    }

    #[test]
    fn unreadable_state_is_unknown_until_empty() {
        let snapshot = Snapshot {
            state_error: Some("invalid JSON".into()),
            started: None,
            ..running()
        };
        assert_eq!(
            snapshot.observed(SystemTime::now()),
            present(
                LiveStatus::Unknown(format!("{REASON_STATE_UNREADABLE}: invalid JSON")),
                None
            )
        );
        let empty = Snapshot {
            supervisor_alive: false,
            payload_running: false,
            ..snapshot
        };
        assert_eq!(
            empty.observed(SystemTime::now()),
            Observed::Gone { exit_code: None }
        );
    }

    #[test]
    fn missing_directory_is_gone() {
        assert_eq!(
            Snapshot::default().observed(SystemTime::now()),
            Observed::Gone { exit_code: None }
        );
    }
}
