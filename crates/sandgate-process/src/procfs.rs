//! Reading processes from `/proc`: the fields of `/proc/<pid>/stat` that identify a process,
//! and the descendants of a process found by walking the parent links of every process.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;

/// The fields of `/proc/<pid>/stat` that the driver uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    /// Process id.
    pub pid: i32,
    /// State letter, such as `R`, `S` or `Z` for a zombie.
    pub state: char,
    /// Parent pid.
    pub ppid: i32,
    /// Process group id.
    pub pgrp: i32,
    /// Session id.
    pub session: i32,
    /// Start time in clock ticks since boot (field 22).
    pub start_time: u64,
}

impl Stat {
    /// Returns whether the process has exited: a zombie (`Z`) or being reaped (`X`).
    pub fn is_dead(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Parses the text of `/proc/<pid>/stat`.
///
/// The command name (field 2) is in brackets and may itself contain spaces and brackets, so the
/// fields after it are found from the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text[..open].trim().parse().ok()?;
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // `rest[0]` is field 3, so field N is `rest[N - 3]`.
    Some(Stat {
        pid,
        state: rest.first()?.chars().next()?,
        ppid: rest.get(1)?.parse().ok()?,
        pgrp: rest.get(2)?.parse().ok()?,
        session: rest.get(3)?.parse().ok()?,
        start_time: rest.get(19)?.parse().ok()?,
    })
}

/// Reads `/proc/<pid>/stat`, returning `None` if the process does not exist.
pub fn read_stat(pid: i32) -> io::Result<Option<Stat>> {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(text) => parse_stat(&text).map(Some).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("invalid /proc/{pid}/stat: {text:?}"),
            )
        }),
        Err(error)
            if matches!(error.kind(), io::ErrorKind::NotFound)
                || error.raw_os_error() == Some(libc::ESRCH) =>
        {
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

/// Returns whether the process `pid` that started at `start_time` still runs. A zombie does not
/// run, and a process with the same pid but another start time is a different process.
pub fn is_alive(pid: i32, start_time: u64) -> io::Result<bool> {
    Ok(read_stat(pid)?.is_some_and(|stat| stat.start_time == start_time && !stat.is_dead()))
}

/// Reads the stat of every process in `/proc`. Processes that exit during the scan are skipped.
pub fn all_processes() -> io::Result<Vec<Stat>> {
    let mut stats = Vec::new();
    for entry in fs::read_dir("/proc")? {
        let entry = entry?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse().ok())
        else {
            continue;
        };
        // A process that exits between `read_dir` and the read is simply not listed.
        if let Ok(Some(stat)) = read_stat(pid) {
            stats.push(stat);
        }
    }
    Ok(stats)
}

/// Returns every descendant of `ancestor` (not `ancestor` itself) from one scan of `/proc`,
/// zombies included.
///
/// NOTE: the scan is not atomic. A process forked after its parent was read is missed, so
/// callers that must find everything repeat the scan until it comes back empty.
pub fn descendants(ancestor: i32) -> io::Result<Vec<Stat>> {
    let stats = all_processes()?;
    let mut children: HashMap<i32, Vec<usize>> = HashMap::new();
    for (index, stat) in stats.iter().enumerate() {
        children.entry(stat.ppid).or_default().push(index);
    }

    let mut found = Vec::new();
    let mut seen = HashSet::from([ancestor]);
    let mut queue = vec![ancestor];
    while let Some(parent) = queue.pop() {
        for &index in children.get(&parent).into_iter().flatten() {
            let stat = stats[index];
            if seen.insert(stat.pid) {
                found.push(stat);
                queue.push(stat.pid);
            }
        }
    }
    Ok(found)
}

/// Reads `/proc/<pid>/cmdline`, the NUL-terminated arguments, or `None` if the process does
/// not exist.
pub fn read_cmdline(pid: i32) -> io::Result<Option<Vec<u8>>> {
    read_optional_bytes(&format!("/proc/{pid}/cmdline"))
}

/// Returns the cgroup v2 path of process `pid` relative to the cgroup2 mount, from the `0::`
/// line of `/proc/<pid>/cgroup`, or `None` if the process or the line does not exist.
pub fn read_cgroup(pid: i32) -> io::Result<Option<String>> {
    let Some(bytes) = read_optional_bytes(&format!("/proc/{pid}/cgroup"))? else {
        return Ok(None);
    };
    Ok(crate::cgroup::parse_own_cgroup(&String::from_utf8_lossy(
        &bytes,
    )))
}

fn read_optional_bytes(path: &str) -> io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(error)
            if matches!(error.kind(), io::ErrorKind::NotFound)
                || error.raw_os_error() == Some(libc::ESRCH) =>
        {
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

/// Returns the start time of the calling process, field 22 of `/proc/self/stat`.
pub fn own_start_time() -> io::Result<u64> {
    let text = fs::read_to_string("/proc/self/stat")?;
    parse_stat(&text)
        .map(|stat| stat.start_time)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "invalid /proc/self/stat"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_stat_handles_brackets_in_name() {
        let text = "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 \
                    987654 1000 10 18446744073709551615";
        let stat = parse_stat(text).unwrap();
        assert_eq!(stat.pid, 4242);
        assert_eq!(stat.state, 'S');
        assert_eq!(stat.ppid, 1);
        assert_eq!(stat.pgrp, 4242);
        assert_eq!(stat.session, 4242);
        assert_eq!(stat.start_time, 987654);
    }

    #[test]
    fn parse_stat_rejects_truncated_text() {
        assert_eq!(parse_stat("1 (init) S 0 1"), None);
    }

    #[test]
    fn is_alive_checks_start_time() {
        let pid = std::process::id() as i32;
        let start_time = own_start_time().unwrap();
        assert!(is_alive(pid, start_time).unwrap());
        assert!(!is_alive(pid, start_time + 1).unwrap());
    }

    #[test]
    fn descendants_finds_child() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let found = descendants(std::process::id() as i32).unwrap();
        let child_pid = child.id() as i32;
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            found.iter().any(|stat| stat.pid == child_pid),
            "child {child_pid} not among descendants {found:?}"
        );
    }
}
