//! Checks that a process is the supervisor of one sandbox, before the driver trusts a handle it
//! did not record itself, and the search of `/proc` for such a supervisor.
//!
//! The sandbox's command can rewrite `handle.json`, so a handle read from it is used only after
//! these checks. A supervisor's command line is the configured supervisor program and arguments
//! followed by its sandbox directory, and its cgroup is `<base>/<id>/supervisor` when it joined
//! the sandbox cgroup.

use std::path::{Path, PathBuf};

use crate::cgroup;
use crate::files::HandleFile;
use crate::procfs;

/// What a supervisor of one sandbox looks like.
pub struct SupervisorIdentity<'a> {
    /// The NUL-terminated arguments of `/proc/<pid>/cmdline`.
    pub cmdline: Vec<u8>,
    /// The cgroup2 mount point, if cgroups are used.
    pub cgroup_mount: Option<&'a Path>,
    /// The directory under which sandbox cgroups go, if cgroups are used.
    pub cgroup_base: Option<&'a Path>,
    /// The sandbox cgroup, `<base>/<id>`, if cgroups are used.
    pub sandbox_cgroup: Option<PathBuf>,
}

impl SupervisorIdentity<'_> {
    /// Builds the expected command line from the supervisor argv and the sandbox directory.
    pub fn cmdline_of<'s>(argv: impl IntoIterator<Item = &'s std::ffi::OsStr>) -> Vec<u8> {
        let mut cmdline = Vec::new();
        for arg in argv {
            cmdline.extend_from_slice(arg.as_encoded_bytes());
            cmdline.push(0);
        }
        cmdline
    }

    /// Returns whether `handle` names a running process that is a supervisor of this sandbox.
    /// A process that cannot be read is not trusted.
    pub fn matches(&self, handle: &HandleFile) -> bool {
        if handle.pid <= 1 || handle.pid == std::process::id() as i32 {
            return false;
        }
        if handle.cgroup.is_some() && handle.cgroup != self.sandbox_cgroup {
            return false;
        }
        if !procfs::is_alive(handle.pid, handle.start_time).unwrap_or(false) {
            return false;
        }
        self.process_matches(handle.pid)
    }

    /// Returns whether process `pid` has the supervisor's command line and cgroup.
    fn process_matches(&self, pid: i32) -> bool {
        match procfs::read_cmdline(pid) {
            Ok(Some(cmdline)) if cmdline == self.cmdline => {}
            _ => return false,
        }
        let (Some(mount), Some(base), Some(sandbox)) =
            (self.cgroup_mount, self.cgroup_base, &self.sandbox_cgroup)
        else {
            return true;
        };
        let Ok(Some(relative)) = procfs::read_cgroup(pid) else {
            return false;
        };
        let path = mount.join(relative.trim_start_matches('/'));
        // A supervisor that could not join the sandbox cgroup stays outside the base. Inside
        // the base, only the supervisor leaf of this sandbox is a supervisor's cgroup.
        !path.starts_with(base) || path == sandbox.join(cgroup::SUPERVISOR_LEAF)
    }

    /// Searches `/proc` for a running supervisor of this sandbox, and returns the one that
    /// started first.
    pub fn find_in_proc(&self) -> Option<HandleFile> {
        let mut processes = procfs::all_processes().ok()?;
        processes.sort_by_key(|stat| stat.start_time);
        processes
            .into_iter()
            .filter(|stat| !stat.is_dead() && stat.pid > 1)
            .find(|stat| self.process_matches(stat.pid))
            .map(|stat| HandleFile {
                pid: stat.pid,
                start_time: stat.start_time,
                cgroup: None,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own_handle() -> HandleFile {
        HandleFile {
            pid: std::process::id() as i32,
            start_time: procfs::own_start_time().unwrap(),
            cgroup: None,
        }
    }

    #[test]
    fn own_process_is_never_a_supervisor() {
        let identity = SupervisorIdentity {
            cmdline: std::fs::read("/proc/self/cmdline").unwrap(),
            cgroup_mount: None,
            cgroup_base: None,
            sandbox_cgroup: None,
        };
        assert!(!identity.matches(&own_handle()));
    }

    #[test]
    fn other_command_line_is_not_a_supervisor() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        // Until the child calls exec, its command line is still the test's.
        for _ in 0..200 {
            if procfs::read_cmdline(pid)
                .unwrap()
                .is_some_and(|cmdline| cmdline.starts_with(b"sleep\0"))
            {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let handle = HandleFile {
            pid,
            start_time: procfs::read_stat(pid).unwrap().unwrap().start_time,
            cgroup: None,
        };
        let identity = SupervisorIdentity {
            cmdline: SupervisorIdentity::cmdline_of(["sleep".as_ref(), "31".as_ref()]),
            cgroup_mount: None,
            cgroup_base: None,
            sandbox_cgroup: None,
        };
        let rejected = !identity.matches(&handle);
        let accepted = SupervisorIdentity {
            cmdline: SupervisorIdentity::cmdline_of(["sleep".as_ref(), "30".as_ref()]),
            ..identity
        }
        .matches(&handle);
        let _ = child.kill();
        let _ = child.wait();
        assert!(rejected, "a process with another command line was trusted");
        assert!(
            accepted,
            "the process with the expected command line was rejected"
        );
    }
}
