//! The supervisor: one small process per sandbox that starts the command, keeps every process
//! the command starts under it, records the command's exit status and carries out deletions.
//!
//! The gateway starts it as `<supervisor program> <sandbox dir>` in a new session, with stdin
//! on `/dev/null`, stdout on a pipe back to the gateway and stderr appended to the sandbox log.
//! The supervisor then, in this order:
//! 1. blocks the signals it handles, and becomes a child subreaper (`PR_SET_CHILD_SUBREAPER`),
//!    so that descendants orphaned by `setsid` or a double fork are re-parented to it;
//! 2. takes `supervisor.lock`, or exits with status 75 if another supervisor has it locked;
//! 3. moves itself into `<cgroup>/supervisor` when the spec names a cgroup;
//! 4. writes `handle.json` (its pid, start time and cgroup);
//! 5. starts the command in its own session (and in `<cgroup>/payload`), writes
//!    `started.json`, then writes one line to stdout and points stdout at the log, which closes
//!    the pipe and lets the gateway's `create` return;
//! 6. reaps every child until none remain, writing `exit_code` when the command itself exits.
//!
//! SIGUSR1 (or SIGTERM, SIGINT, SIGHUP) makes it read `control.json`. With a deletion plan
//! there it sends SIGTERM to every process of the sandbox and SIGKILL to whatever remains at
//! the plan's kill time, then exits once no child remains. The processes of the sandbox are
//! those in the payload cgroup and every descendant found in `/proc`, so a process that moved
//! itself out of the cgroup is still killed while it descends from the supervisor.
//!
//! A state file that cannot be written (the sandbox may remove its own directory) is logged and
//! never makes the supervisor exit while it has a child.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use rustix::process::{Pid, Signal, WaitOptions};

use crate::cgroup;
use crate::files::{
    self, CONTROL_FILE, ControlFile, EXIT_CODE_FILE, HANDLE_FILE, HandleFile, LEGACY_WORK_DIR,
    LOCK_FILE, LOG_FILE, STARTED_FILE, SandboxDir, SpecFile, StartedFile,
};
use crate::procfs;
use crate::sys;

/// Exit status of a supervisor that found another supervisor running for the same sandbox.
pub const EXIT_ALREADY_SUPERVISED: i32 = 75;

/// Search path of the command when the gateway has no `PATH`.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How often the supervisor repeats SIGKILL while processes remain after the kill time, to
/// catch processes forked during a `/proc` scan.
const KILL_REPEAT: Duration = Duration::from_millis(100);

/// Runs the supervisor with `args`, the arguments after the program name or subcommand: the
/// sandbox directory, and nothing else. Returns the process exit status.
pub fn main(args: impl IntoIterator<Item = OsString>) -> i32 {
    let args: Vec<OsString> = args.into_iter().collect();
    let [dir] = args.as_slice() else {
        eprintln!(
            "sandgate-supervisor: expected exactly one argument, the sandbox directory, but got \
             {args:?}; the gateway starts this process itself"
        );
        return 2;
    };
    match run(Path::new(dir)) {
        Ok(status) => status,
        Err(error) => {
            log(format_args!("{error}"));
            1
        }
    }
}

/// Writes one line to stderr, which is the sandbox log.
fn log(message: std::fmt::Arguments<'_>) {
    let mut stderr = io::stderr().lock();
    let _ = writeln!(
        stderr,
        "sandgate-supervisor[{}]: {message}",
        std::process::id()
    );
}

fn context(what: &str, path: &Path) -> impl FnOnce(io::Error) -> io::Error {
    let message = format!("{what} {}", path.display());
    move |error| io::Error::new(error.kind(), format!("{message}: {error}"))
}

fn run(dir: &Path) -> io::Result<i32> {
    sys::block_supervisor_signals()?;
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))?;

    let dir = SandboxDir::new(dir.to_path_buf());
    let spec = dir.read_spec()?.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("missing {}", dir.file(files::SPEC_FILE).display()),
        )
    })?;

    let lock_path = dir.file(LOCK_FILE);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&lock_path)
        .map_err(context("failed to open", &lock_path))?;
    match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => {
            log(format_args!(
                "another supervisor has {} locked, so this one exits",
                lock_path.display()
            ));
            report_decided();
            return Ok(EXIT_ALREADY_SUPERVISED);
        }
        Err(error) => return Err(context("failed to lock", &lock_path)(error.into())),
    }

    let cgroup = spec.cgroup.clone().and_then(|path| {
        let leaf = path.join(cgroup::SUPERVISOR_LEAF);
        match cgroup::join(&leaf) {
            Ok(()) => Some(path),
            Err(error) => {
                log(format_args!(
                    "failed to join cgroup {}, so processes are tracked without it: {error}",
                    leaf.display()
                ));
                None
            }
        }
    });

    let handle = HandleFile {
        pid: std::process::id() as i32,
        start_time: procfs::own_start_time()?,
        cgroup: cgroup.clone(),
    };
    files::write_json(&dir.file(HANDLE_FILE), &handle)?;

    if dir.read_control()?.is_some() {
        log(format_args!(
            "deletion requested before start, so the command is not started"
        ));
        files::write_json(&dir.file(STARTED_FILE), &StartedFile::Skipped)?;
        report_decided();
        return Ok(0);
    }

    let started = start_command(&spec, &dir, cgroup.as_deref());
    files::write_json(&dir.file(STARTED_FILE), &started)?;
    report_decided();

    let command_pid = match started {
        StartedFile::Running { pid } => pid,
        StartedFile::Failed { message } => {
            log(format_args!("{message}"));
            return Ok(0);
        }
        StartedFile::Skipped => return Ok(0),
    };

    let mut supervisor = Supervisor {
        dir,
        cgroup,
        own_pid: handle.pid,
        command_pid,
        plan: None,
        terminated: false,
    };
    supervisor.run()?;
    Ok(0)
}

/// Tells the gateway that the start is decided: writes a line to stdout, which is the pipe the
/// gateway reads, then points stdout at the log (stderr), which closes the pipe.
fn report_decided() {
    let mut stdout = io::stdout().lock();
    let _ = stdout.write_all(b"started\n");
    let _ = stdout.flush();
    drop(stdout);
    if let Err(error) = rustix::stdio::dup2_stdout(io::stderr().as_fd()) {
        log(format_args!("failed to point stdout at the log: {error}"));
    }
}

/// Starts the command and returns what to write to `started.json`.
fn start_command(spec: &SpecFile, dir: &SandboxDir, cgroup: Option<&Path>) -> StartedFile {
    match try_start_command(spec, dir, cgroup) {
        Ok(pid) => StartedFile::Running { pid },
        Err(message) => StartedFile::Failed { message },
    }
}

fn try_start_command(
    spec: &SpecFile,
    dir: &SandboxDir,
    cgroup: Option<&Path>,
) -> Result<i32, String> {
    let Some((program, args)) = spec.argv.split_first() else {
        return Err("a command is required".to_string());
    };
    let log_path = dir.file(LOG_FILE);
    let log_file = files::open_append_nofollow(&log_path)
        .map_err(|error| format!("failed to open log {}: {error}", log_path.display()))?;
    let log_copy = log_file
        .try_clone()
        .map_err(|error| format!("failed to duplicate log descriptor: {error}"))?;

    let payload_procs = match cgroup {
        Some(path) => {
            let procs_path = path.join(cgroup::PAYLOAD_LEAF).join("cgroup.procs");
            let file = OpenOptions::new()
                .write(true)
                .open(&procs_path)
                .map_err(|error| format!("failed to open {}: {error}", procs_path.display()))?;
            Some(file)
        }
        None => None,
    };

    let path = std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into());
    let mut command = Command::new(program);
    command
        .args(args)
        .current_dir(
            spec.work_dir
                .clone()
                .unwrap_or_else(|| dir.file(LEGACY_WORK_DIR)),
        )
        .env_clear()
        .env("PATH", path)
        .envs(spec.env.iter().map(|(key, value)| (key, value)))
        .stdin(Stdio::null())
        .stdout(log_copy)
        .stderr(log_file);
    sys::sandbox_command_on_spawn(&mut command, payload_procs.as_ref().map(File::as_fd));

    let child = command.spawn().map_err(|error| match error.kind() {
        io::ErrorKind::NotFound => format!("command not found: {program}"),
        io::ErrorKind::PermissionDenied => format!("permission denied: {program}"),
        _ => format!("failed to start command {program}: {error}"),
    })?;
    drop(payload_procs);
    // The supervisor reaps the command with waitpid, so the `Child` is not needed.
    Ok(child.id() as i32)
}

/// The running supervisor's state.
struct Supervisor {
    dir: SandboxDir,
    cgroup: Option<PathBuf>,
    own_pid: i32,
    command_pid: i32,
    plan: Option<ControlFile>,
    terminated: bool,
}

impl Supervisor {
    /// Reaps children and carries out deletions until no child remains.
    fn run(&mut self) -> io::Result<()> {
        let _ = self.read_control();
        loop {
            let children_left = self.reap_children()?;
            let payload_left = self.payload_populated();
            if !children_left && !payload_left {
                break;
            }

            let mut timeout = None;
            if let Some(plan) = self.plan {
                if !self.terminated {
                    self.signal_all(Signal::TERM);
                    self.terminated = true;
                }
                let now = SystemTime::now();
                let kill_at = plan.kill_at();
                if plan.force || now >= kill_at {
                    self.kill_all();
                    timeout = Some(KILL_REPEAT);
                } else {
                    timeout = kill_at.duration_since(now).ok();
                }
            }
            if !children_left {
                // Processes that are not descendants remain in the payload cgroup, and no
                // SIGCHLD reports when they leave.
                timeout =
                    Some(timeout.map_or(Duration::from_secs(1), |t| t.min(Duration::from_secs(1))));
            }

            let signal = sys::wait_signal(timeout)?;
            if let Some(signal @ (libc::SIGUSR1 | libc::SIGTERM | libc::SIGINT | libc::SIGHUP)) =
                signal
                && !self.read_control()
                && self.plan.is_none()
            {
                log(format_args!(
                    "signal {signal} received without {CONTROL_FILE}, so it is ignored"
                ));
            }
        }

        if let Some(path) = &self.cgroup {
            let payload = path.join(cgroup::PAYLOAD_LEAF);
            if let Err(error) = cgroup::remove_tree(&payload) {
                log(format_args!(
                    "failed to remove cgroup {}: {error}",
                    payload.display()
                ));
            }
        }
        log(format_args!(
            "no process of the sandbox remains, so the supervisor exits"
        ));
        Ok(())
    }

    /// Reaps every exited child, recording the command's status. Returns whether any child
    /// remains. As a subreaper, no child means no descendant at all.
    fn reap_children(&mut self) -> io::Result<bool> {
        loop {
            // `wait` is waitpid(-1): any child, whatever its process group.
            match rustix::process::wait(WaitOptions::NOHANG) {
                Ok(Some((pid, status))) => {
                    if pid.as_raw_nonzero().get() == self.command_pid {
                        let code = status
                            .exit_status()
                            .or_else(|| status.terminating_signal().map(|signal| -signal))
                            .unwrap_or(-1);
                        log(format_args!("command exited with status {code}"));
                        let path = self.dir.file(EXIT_CODE_FILE);
                        if let Err(error) = files::write_atomic(&path, code.to_string().as_bytes())
                        {
                            log(format_args!("failed to write {}: {error}", path.display()));
                        }
                    }
                }
                Ok(None) => return Ok(true),
                Err(rustix::io::Errno::CHILD) => return Ok(false),
                Err(rustix::io::Errno::INTR) => {}
                Err(error) => return Err(error.into()),
            }
        }
    }

    fn payload_populated(&self) -> bool {
        let Some(path) = &self.cgroup else {
            return false;
        };
        cgroup::populated(&path.join(cgroup::PAYLOAD_LEAF))
            .ok()
            .flatten()
            .unwrap_or(false)
    }

    /// Reads `control.json` and merges it into the current plan, so a kill time only moves
    /// earlier. Returns whether the file exists.
    fn read_control(&mut self) -> bool {
        match self.dir.read_control() {
            Ok(Some(mut control)) => {
                if control.force {
                    control.kill_at_ms = control
                        .kill_at_ms
                        .min(files::unix_millis(SystemTime::now()));
                }
                let merged = self.plan.map_or(control, |plan| plan.merge(control));
                if self.plan != Some(merged) {
                    log(format_args!(
                        "deletion requested: kill at {} ms since the epoch, force {}",
                        merged.kill_at_ms, merged.force
                    ));
                }
                self.plan = Some(merged);
                true
            }
            Ok(None) => false,
            Err(error) => {
                log(format_args!("failed to read {CONTROL_FILE}: {error}"));
                false
            }
        }
    }

    /// Sends `signal` to every process of the sandbox and to every process group among them,
    /// never to the supervisor or its own group. The processes are those of the payload cgroup,
    /// if there is one, and every live descendant found in `/proc`.
    ///
    /// NOTE: a pid read from `cgroup.procs` or `/proc` can exit and be reused before the signal
    /// is sent. The window is short because every such process is a descendant that only its
    /// own parent or this supervisor reaps.
    fn signal_all(&self, signal: Signal) {
        let mut pids = Vec::new();
        let mut groups = vec![self.command_pid];
        if let Some(path) = &self.cgroup {
            match cgroup::procs_recursive(&path.join(cgroup::PAYLOAD_LEAF)) {
                Ok(found) => pids = found,
                Err(error) => log(format_args!("failed to list cgroup processes: {error}")),
            }
        }
        match procfs::descendants(self.own_pid) {
            Ok(found) => {
                for stat in found.iter().filter(|stat| !stat.is_dead()) {
                    if !pids.contains(&stat.pid) {
                        pids.push(stat.pid);
                    }
                    if !groups.contains(&stat.pgrp) {
                        groups.push(stat.pgrp);
                    }
                }
            }
            Err(error) => log(format_args!("failed to scan /proc: {error}")),
        }
        for group in groups.into_iter().filter(|&group| group != self.own_pid) {
            if let Some(group) = Pid::from_raw(group) {
                let _ = rustix::process::kill_process_group(group, signal);
            }
        }
        for pid in pids.into_iter().filter(|&pid| pid != self.own_pid) {
            if let Some(pid) = Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, signal);
            }
        }
    }

    /// Kills every process of the sandbox: with `cgroup.kill` when there is a cgroup, and with
    /// SIGKILL to each process of the payload cgroup and each descendant found in `/proc`, which
    /// catches a process that moved itself out of the cgroup. The caller repeats it until no
    /// child and no payload process remain.
    fn kill_all(&self) {
        if let Some(path) = &self.cgroup {
            let payload = path.join(cgroup::PAYLOAD_LEAF);
            if let Err(error) = cgroup::kill(&payload) {
                log(format_args!(
                    "failed to write {}/cgroup.kill, so processes are killed one by one: {error}",
                    payload.display()
                ));
            }
        }
        self.signal_all(Signal::KILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn main_rejects_missing_directory_argument() {
        assert_eq!(main(Vec::<OsString>::new()), 2);
    }

    #[test]
    fn main_rejects_extra_arguments() {
        assert_eq!(main(vec![OsString::from("a"), OsString::from("b")]), 2);
    }
}
