//! The few system calls that need `unsafe`: the supervisor's signal mask and synchronous signal
//! wait, and the hooks that run in a forked child before `exec`.
//!
//! Everything else goes through rustix's safe wrappers.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

/// The signals the supervisor handles synchronously with [`wait_signal`].
pub const SUPERVISOR_SIGNALS: [i32; 5] = [
    libc::SIGCHLD,
    libc::SIGUSR1,
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
];

fn signal_set(signals: &[i32]) -> libc::sigset_t {
    // SAFETY: `sigset_t` is plain data, and `sigemptyset` initialises it before any other use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable `sigset_t`. Both calls fail only for an invalid
    // signal number, and every number here is a standard signal.
    unsafe {
        libc::sigemptyset(&mut set);
        for &signal in signals {
            libc::sigaddset(&mut set, signal);
        }
    }
    set
}

/// Blocks [`SUPERVISOR_SIGNALS`] in the calling thread, so that they stay pending until
/// [`wait_signal`] takes them, and restores the default action of SIGCHLD, which an ignoring
/// parent would otherwise pass on and which would make the kernel reap children unseen.
///
/// Call it first in the supervisor's main thread, before any other thread exists.
pub fn block_supervisor_signals() -> io::Result<()> {
    let set = signal_set(&SUPERVISOR_SIGNALS);
    // SAFETY: setting the disposition of SIGCHLD to SIG_DFL installs no handler code.
    if unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) } == libc::SIG_ERR {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `set` is initialised and the old mask is not requested.
    let result = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if result != 0 {
        return Err(io::Error::from_raw_os_error(result));
    }
    Ok(())
}

/// Waits for one of [`SUPERVISOR_SIGNALS`], at most `timeout` if given. Returns the signal
/// number, or `None` on timeout or interruption.
pub fn wait_signal(timeout: Option<Duration>) -> io::Result<Option<i32>> {
    let set = signal_set(&SUPERVISOR_SIGNALS);
    // SAFETY: `siginfo_t` is plain data that the kernel fills in.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let result = match timeout {
        Some(timeout) => {
            let spec = libc::timespec {
                tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
                tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
            };
            // SAFETY: all three pointers refer to initialised locals that outlive the call.
            unsafe { libc::sigtimedwait(&set, &mut info, &spec) }
        }
        // SAFETY: both pointers refer to initialised locals that outlive the call.
        None => unsafe { libc::sigwaitinfo(&set, &mut info) },
    };
    if result >= 0 {
        return Ok(Some(result));
    }
    let error = io::Error::last_os_error();
    match error.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(None),
        _ => Err(error),
    }
}

/// Marks every file descriptor above 2 close-on-exec, so that `exec` leaves the new program
/// only stdin, stdout and stderr. Runs in a forked child, so it only makes one system call.
fn cloexec_above_stderr() {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on descriptors. It is
    // async-signal-safe. On kernels before 5.11 it fails with ENOSYS, and then only the
    // descriptors that were opened close-on-exec (all of Rust's) are closed.
    unsafe {
        libc::close_range(
            3,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC as libc::c_int,
        );
    }
}

/// Makes `command` start in a new session, with no inherited descriptor above 2.
pub fn new_session_on_spawn(command: &mut Command) {
    let hook = || {
        rustix::process::setsid()?;
        cloexec_above_stderr();
        Ok(())
    };
    // SAFETY: the hook makes only async-signal-safe system calls (setsid, close_range) and
    // neither allocates nor takes locks, as required between fork and exec.
    unsafe {
        command.pre_exec(hook);
    }
}

/// Makes `command` start in a new session, with an empty signal mask, no inherited descriptor
/// above 2, and moved into the cgroup whose `cgroup.procs` is open as `cgroup_procs`.
///
/// The child joins the cgroup before `exec`, so every process the command forks starts inside
/// it. `cgroup_procs` must stay open until the spawn returns.
pub fn sandbox_command_on_spawn(command: &mut Command, cgroup_procs: Option<BorrowedFd<'_>>) {
    let cgroup_procs = cgroup_procs.map(|fd| fd.as_raw_fd());
    let hook = move || {
        if let Some(raw) = cgroup_procs {
            // SAFETY: the caller keeps the descriptor open until spawn returns, and the forked
            // child has its own copy of the descriptor table, so `raw` is open here.
            let fd = unsafe { BorrowedFd::borrow_raw(raw) };
            // Writing "0" moves the writing process.
            rustix::io::write(fd, b"0")?;
        }
        rustix::process::setsid()?;
        let empty = signal_set(&[]);
        // SAFETY: pthread_sigmask is async-signal-safe, and `empty` is initialised.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        }
        cloexec_above_stderr();
        Ok(())
    };
    // SAFETY: the hook makes only async-signal-safe calls (write, setsid, sigemptyset,
    // pthread_sigmask, close_range) and neither allocates nor takes locks.
    unsafe {
        command.pre_exec(hook);
    }
}

/// Registers `fd` with the tokio reactor for readability.
///
/// # Panics
/// Panics outside a tokio runtime, as tokio's registration does.
pub fn register_readable(
    fd: std::os::fd::OwnedFd,
) -> io::Result<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>> {
    // SAFETY: an `OwnedFd` is a valid open descriptor that it alone closes, on drop, and
    // `as_raw_fd` always returns that same descriptor, so it stays open and unchanged for the
    // life of the `AsyncFd` that takes ownership of it.
    unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
            .map_err(|error| error.into_parts().1)
    }
}
