//! Process inspection for tests: which processes of a sandbox are alive, read from `/proc` and
//! from the process driver's files, and a cleanup that kills them all.

use std::collections::{HashMap, HashSet};
use std::path::Path;

/// One line of `/proc/PID/stat`, reduced to what tests need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStat {
    /// Process id.
    pub pid: i32,
    /// State letter; 'Z' is a zombie, 'X' dead.
    pub state: char,
    /// Parent pid.
    pub ppid: i32,
    /// Session id.
    pub session: i32,
    /// Start time in clock ticks since boot.
    pub start_time: u64,
}

/// Reads `/proc/PID/stat`; `None` if the process does not exist.
pub fn stat(pid: i32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces; fields follow the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcStat {
        pid,
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        session: fields.get(3)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// Returns whether `pid` exists and is not a zombie.
pub fn is_alive(pid: i32) -> bool {
    stat(pid).is_some_and(|stat| stat.state != 'Z' && stat.state != 'X')
}

/// Returns every process on the machine.
pub fn all() -> Vec<ProcStat> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .filter_map(stat)
        .collect()
}

/// Returns the live descendants of `ancestor`, not counting itself.
pub fn descendants(ancestor: i32) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for process in all() {
        if process.state != 'Z' && process.state != 'X' {
            children.entry(process.ppid).or_default().push(process.pid);
        }
    }
    let mut found = Vec::new();
    let mut seen = HashSet::new();
    let mut stack = vec![ancestor];
    while let Some(pid) = stack.pop() {
        for child in children.get(&pid).into_iter().flatten() {
            if seen.insert(*child) {
                found.push(*child);
                stack.push(*child);
            }
        }
    }
    found
}

/// The supervisor handle the process driver writes into a sandbox directory.
#[derive(Clone, Debug)]
pub struct Handle {
    /// Supervisor pid.
    pub pid: i32,
    /// Supervisor start time, to tell a reused pid apart.
    pub start_time: u64,
    /// The sandbox's cgroup, where one is used.
    pub cgroup: Option<String>,
}

/// Reads the supervisor handle of sandbox `id` in a gateway's data directory.
pub fn handle(data_dir: &Path, id: &str) -> Option<Handle> {
    let path = data_dir.join("sandboxes").join(id).join("handle.json");
    let text = std::fs::read_to_string(path).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some(Handle {
        pid: value["pid"].as_i64()? as i32,
        start_time: value["start_time"].as_u64()?,
        cgroup: value["cgroup"].as_str().map(str::to_string),
    })
}

/// Returns the pids of sandbox `id` that are alive: its supervisor (if the handle still names
/// it) and the supervisor's descendants, plus whatever its cgroup contains.
pub fn sandbox_processes(data_dir: &Path, id: &str) -> Vec<i32> {
    let Some(handle) = handle(data_dir, id) else {
        return Vec::new();
    };
    let mut pids = HashSet::new();
    let supervisor_alive = stat(handle.pid)
        .is_some_and(|s| s.start_time == handle.start_time && s.state != 'Z' && s.state != 'X');
    if supervisor_alive {
        pids.insert(handle.pid);
        pids.extend(descendants(handle.pid));
    }
    if let Some(cgroup) = &handle.cgroup {
        for file in cgroup_proc_files(Path::new(cgroup)) {
            if let Ok(text) = std::fs::read_to_string(file) {
                pids.extend(
                    text.lines()
                        .filter_map(|l| l.parse::<i32>().ok())
                        .filter(|p| is_alive(*p)),
                );
            }
        }
    }
    let mut pids: Vec<i32> = pids.into_iter().collect();
    pids.sort();
    pids
}

fn cgroup_proc_files(cgroup: &Path) -> Vec<std::path::PathBuf> {
    let mut files = vec![cgroup.join("cgroup.procs")];
    if let Ok(entries) = std::fs::read_dir(cgroup) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                files.extend(cgroup_proc_files(&entry.path()));
            }
        }
    }
    files
}

/// Kills every process of every sandbox recorded in `data_dir`, descendants before their
/// supervisor, so that none is reparented out of reach.
pub fn kill_sandboxes(data_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(data_dir.join("sandboxes")) else {
        return;
    };
    for entry in entries.flatten() {
        let id = entry.file_name().to_string_lossy().to_string();
        let Some(handle) = handle(data_dir, &id) else {
            continue;
        };
        if let Some(cgroup) = &handle.cgroup {
            let _ = std::fs::write(Path::new(cgroup).join("cgroup.kill"), "1");
        }
        for _ in 0..50 {
            let pids = sandbox_processes(data_dir, &id);
            let others: Vec<i32> = pids.iter().copied().filter(|p| *p != handle.pid).collect();
            if others.is_empty() {
                break;
            }
            for pid in others {
                crate::gateway::send_signal(pid, libc::SIGKILL);
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        if stat(handle.pid).is_some_and(|s| s.start_time == handle.start_time) {
            crate::gateway::send_signal(handle.pid, libc::SIGKILL);
        }
    }
}

/// Removes the cgroups the process driver made for `data_dir`, deepest first. A cgroup that still
/// contains a process is left in place.
pub fn remove_cgroups(data_dir: &Path) {
    let Some(base) = cgroup_base(data_dir) else {
        return;
    };
    // A process killed a moment ago keeps its cgroup busy until it has exited, so the removal
    // is tried again for up to 5 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        remove_tree(&base);
        if !base.exists() || std::time::Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Returns the cgroup under which the process driver puts the sandboxes of `data_dir`, one child
/// per sandbox id, or `None` when no cgroup2 file system is mounted. The driver names it after a
/// hash of the canonical path of `<data_dir>/sandboxes`.
pub fn cgroup_base(data_dir: &Path) -> Option<std::path::PathBuf> {
    let mount = cgroup2_mount()?;
    let canonical = data_dir.join("sandboxes").canonicalize().ok()?;
    Some(mount.join(format!(
        "sandgate-{}",
        fnv48(canonical.as_os_str().as_encoded_bytes())
    )))
}

/// Returns the live pids in `cgroup` and its descendants.
pub fn cgroup_pids(cgroup: &Path) -> Vec<i32> {
    let mut pids: Vec<i32> = cgroup_proc_files(cgroup)
        .into_iter()
        .filter_map(|file| std::fs::read_to_string(file).ok())
        .flat_map(|text| {
            text.lines()
                .filter_map(|line| line.parse::<i32>().ok())
                .collect::<Vec<_>>()
        })
        .filter(|pid| is_alive(*pid))
        .collect();
    pids.sort();
    pids.dedup();
    pids
}

/// Returns the live pids of sandbox `id` without relying on its handle file, which the driver
/// removes once it saw the sandbox gone: [`sandbox_processes`] plus whatever the sandbox's
/// cgroup under [`cgroup_base`] still contains.
pub fn remaining_processes(data_dir: &Path, id: &str) -> Vec<i32> {
    let mut pids = sandbox_processes(data_dir, id);
    if let Some(base) = cgroup_base(data_dir) {
        pids.extend(cgroup_pids(&base.join(id)));
    }
    pids.sort();
    pids.dedup();
    pids
}

/// Returns the ids of the sandboxes of `data_dir` that have a live process, found through their
/// handle files and through the children of [`cgroup_base`].
pub fn ids_with_processes(data_dir: &Path) -> std::collections::BTreeSet<String> {
    let mut ids = std::collections::BTreeSet::new();
    for dir in [Some(data_dir.join("sandboxes")), cgroup_base(data_dir)]
        .into_iter()
        .flatten()
    {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                ids.insert(entry.file_name().to_string_lossy().to_string());
            }
        }
    }
    ids.retain(|id| !remaining_processes(data_dir, id).is_empty());
    ids
}

fn remove_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Returns the mount point of the cgroup2 file system, from `/proc/self/mountinfo`.
fn cgroup2_mount() -> Option<std::path::PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|line| {
        let (mount, rest) = line.split_once(" - ")?;
        let fstype = rest.split_whitespace().next()?;
        (fstype == "cgroup2").then(|| {
            mount
                .split_whitespace()
                .nth(4)
                .map(std::path::PathBuf::from)
        })?
    })
}

/// Returns the 48-bit FNV-1a hash in 12 hex digits that the process driver names its cgroup base
/// after, computed over the canonical data directory.
fn fnv48(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{:012x}", hash & 0xffff_ffff_ffff)
}
