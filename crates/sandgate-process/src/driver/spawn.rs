//! Starting a sandbox's supervisor and waiting for its report that the command started.

use std::fs;
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sandgate_core::SandboxRecord;
use sandgate_driver::DriverError;
use tokio::io::AsyncReadExt;

use super::{Inner, lock, transient};
use crate::cgroup;
use crate::files::{self, HandleFile, LOG_FILE, SPEC_FILE, SandboxDir, SpecFile};
use crate::procfs;

/// How long `create` waits for the supervisor to report that it started the command.
const START_TIMEOUT: Duration = Duration::from_secs(30);

impl Inner {
    /// Starts a supervisor for `record`, remembers its pid and start time, and waits until it
    /// reports.
    pub(super) async fn spawn_supervisor(
        self: &Arc<Self>,
        record: &SandboxRecord,
        dir: &SandboxDir,
    ) -> Result<(), DriverError> {
        fs::create_dir_all(&dir.path)
            .map_err(|error| transient("failed to create", &dir.path, error))?;
        let work = self.work_dir(record.id);
        fs::create_dir_all(&work).map_err(|error| transient("failed to create", &work, error))?;

        let cgroup = match &self.cgroup_base {
            Some(base) => match cgroup::create_sandbox(base, &record.id.to_string()) {
                Ok(path) => Some(path),
                Err(error) => {
                    tracing::warn!(sandbox_id = %record.id, cgroup_base = %base.display(), %error, "failed to create sandbox cgroup, so the sandbox runs without one");
                    None
                }
            },
            None => None,
        };

        let spec_path = dir.file(SPEC_FILE);
        let previous = dir.read_spec().ok().flatten();
        let spec = SpecFile {
            id: record.id.to_string(),
            argv: record.spec.argv(),
            env: record
                .spec
                .env
                .iter()
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect(),
            grace_period_ms: u64::try_from(record.spec.grace_period.as_millis())
                .unwrap_or(u64::MAX),
            cgroup,
            created_at_ms: previous.map_or_else(
                || files::unix_millis(SystemTime::now()),
                |spec| spec.created_at_ms,
            ),
            work_dir: Some(work),
        };
        files::write_json(&spec_path, &spec)
            .map_err(|error| transient("failed to write", &spec_path, error))?;

        let log_path = dir.file(LOG_FILE);
        let log = files::open_append_nofollow(&log_path)
            .map_err(|error| transient("failed to open", &log_path, error))?;

        let (program, leading) =
            self.config.supervisor.split_first().ok_or_else(|| {
                DriverError::Permanent("the supervisor command is empty".to_string())
            })?;
        let mut command = Command::new(program);
        command
            .args(leading)
            .arg(&dir.path)
            .current_dir(&dir.path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        crate::sys::new_session_on_spawn(&mut command);
        let mut child = command.spawn().map_err(|error| {
            DriverError::Permanent(format!(
                "failed to start the supervisor {}: {error}",
                program.to_string_lossy()
            ))
        })?;
        let pid = child.id();
        // The child is not reaped before the reaper thread starts, so its pid cannot be reused
        // while its start time is read.
        let raw_pid = pid as i32;
        match procfs::read_stat(raw_pid) {
            Ok(Some(stat)) => {
                lock(&self.tracked).entry(record.id).or_default().handle = Some(HandleFile {
                    pid: raw_pid,
                    start_time: stat.start_time,
                    cgroup: None,
                });
            }
            other => {
                tracing::warn!(sandbox_id = %record.id, pid, result = ?other, "failed to read the start time of the supervisor")
            }
        }
        let stdout = child.stdout.take().map(OwnedFd::from);
        // While the gateway runs, the supervisor is its child: this thread reaps it.
        let reaper = std::thread::Builder::new()
            .name(format!("sandgate-reap-{pid}"))
            .spawn(move || {
                let _ = child.wait();
            });
        if let Err(error) = reaper {
            tracing::warn!(sandbox_id = %record.id, pid, %error, "failed to start a reaper thread, so the supervisor stays a zombie after it exits");
        }
        tracing::info!(sandbox_id = %record.id, pid, "supervisor started");

        let Some(stdout) = stdout else {
            return Ok(());
        };
        let mut pipe =
            tokio::net::unix::pipe::Receiver::from_owned_fd(stdout).map_err(|error| {
                DriverError::Transient(format!("failed to read the supervisor's pipe: {error}"))
            })?;
        let mut report = Vec::new();
        match tokio::time::timeout(START_TIMEOUT, pipe.read_to_end(&mut report)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(DriverError::Transient(format!(
                "failed to read the supervisor's pipe: {error}"
            ))),
            Err(_) => Err(DriverError::Transient(format!(
                "supervisor {pid} did not report within {} s; see {}",
                START_TIMEOUT.as_secs(),
                log_path.display()
            ))),
        }
    }
}
