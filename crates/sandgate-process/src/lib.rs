//! The process driver: each sandbox is a command run on this machine under a supervisor process
//! of its own, in a directory `<data_dir>/sandboxes/<id>/`.
//!
//! The supervisor ([`supervisor::main`]) is a child subreaper in its own session, so it
//! outlives the gateway and keeps every descendant of the command, including ones that call
//! `setsid` or daemonize. Where cgroup v2 is writable each sandbox also gets a cgroup, which
//! gives an atomic kill (`cgroup.kill`) and an exact "nothing remains" signal (`populated 0` in
//! `cgroup.events`). See the crate's README for the files of a sandbox directory.

mod cgroup;
mod driver;
mod files;
mod procfs;
mod snapshot;
pub mod supervisor;
mod sys;
mod verify;
mod watch;

pub use driver::{CgroupMode, ProcessDriver, ProcessDriverConfig};
pub use snapshot::{
    DRIVER_NAME, REASON_AFTER_SIGKILL, REASON_AFTER_SIGTERM, REASON_DIRECTORY_MISSING,
    REASON_STATE_UNREADABLE, REASON_SUPERVISOR, REASON_SUPERVISOR_VANISHED,
};
