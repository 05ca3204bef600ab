//! Cgroup v2 support: finding the cgroup2 mount, one cgroup per sandbox, its populated flag,
//! atomic kill and removal.
//!
//! Each sandbox gets `<base>/<id>/` with two leaf cgroups: `supervisor`, which contains only the
//! supervisor, and `payload`, which contains the command and everything it starts. The split lets
//! the supervisor kill the payload with `cgroup.kill` and survive to report it, while
//! `<base>/<id>/cgroup.events` still reads `populated 0` only when nothing at all remains.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Leaf cgroup of the supervisor, under the sandbox cgroup.
pub const SUPERVISOR_LEAF: &str = "supervisor";
/// Leaf cgroup of the command and its descendants, under the sandbox cgroup.
pub const PAYLOAD_LEAF: &str = "payload";

/// Returns the mount point of the cgroup2 file system from the text of `/proc/self/mountinfo`.
///
/// A mountinfo line is `id parent major:minor root mount-point options [optional...] - fstype
/// source super-options`, so the type is the first field after the lone `-`.
pub fn parse_cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        let fstype = after.split_whitespace().next()?;
        if fstype != "cgroup2" {
            return None;
        }
        let mount_point = before.split_whitespace().nth(4)?;
        Some(PathBuf::from(unescape_mountinfo(mount_point)))
    })
}

/// Decodes the octal escapes (`\040` for a space) that mountinfo uses in paths.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'\\')
            .then(|| bytes.get(i + 1..i + 4))
            .flatten()
            .and_then(|digits| std::str::from_utf8(digits).ok())
            .and_then(|digits| u8::from_str_radix(digits, 8).ok());
        if let Some(value) = escaped {
            out.push(value);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Returns the calling process's cgroup v2 path from the text of `/proc/self/cgroup`: the path
/// of the `0::` line, relative to the cgroup2 mount.
pub fn parse_own_cgroup(text: &str) -> Option<String> {
    text.lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(str::to_string)
}

/// Returns the mount point of the cgroup2 file system of this process, if one is mounted.
pub fn mount_point() -> Option<PathBuf> {
    parse_cgroup2_mount(&fs::read_to_string("/proc/self/mountinfo").ok()?)
}

/// Finds a cgroup v2 directory under which the driver can create sandbox cgroups, named
/// `sandgate-<tag>`. It tries the root of the cgroup2 mount first, so that a service manager
/// stopping the gateway's own cgroup does not kill the sandboxes, and then the gateway's own
/// cgroup, for a delegated subtree.
///
/// # Errors
/// Returns why no usable cgroup exists, as a sentence for the start-up log.
pub fn find_base(tag: &str) -> Result<PathBuf, String> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|error| format!("cannot read /proc/self/mountinfo: {error}"))?;
    let mount = parse_cgroup2_mount(&mountinfo)
        .ok_or_else(|| "no cgroup2 file system is mounted".to_string())?;
    let name = format!("sandgate-{tag}");

    let mut candidates = vec![mount.join(&name)];
    if let Some(own) = fs::read_to_string("/proc/self/cgroup")
        .ok()
        .as_deref()
        .and_then(parse_own_cgroup)
    {
        let own = own.trim_start_matches('/');
        if !own.is_empty() {
            candidates.push(mount.join(own).join(&name));
        }
    }

    let mut failures = Vec::new();
    for candidate in candidates {
        match check_base(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(error) => failures.push(format!("{}: {error}", candidate.display())),
        }
    }
    Err(format!(
        "cgroup v2 is mounted at {} but no sandbox cgroup can be created there ({})",
        mount.display(),
        failures.join("; ")
    ))
}

/// Creates `base` if needed and checks that it supports `cgroup.kill` and that a child cgroup
/// can be created and removed in it.
fn check_base(base: &Path) -> io::Result<()> {
    create_dir(base)?;
    if !base.join("cgroup.kill").exists() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "cgroup.kill is missing (it needs Linux 5.14 or later)",
        ));
    }
    let probe = base.join(format!("probe-{}", std::process::id()));
    create_dir(&probe)?;
    fs::remove_dir(&probe)
}

fn create_dir(path: &Path) -> io::Result<()> {
    match fs::create_dir(path) {
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

/// Creates the cgroup of one sandbox with its two leaves, and returns its path. Existing
/// directories are kept, so a retried create succeeds, and the base is made again if someone
/// removed it while it was empty.
pub fn create_sandbox(base: &Path, name: &str) -> io::Result<PathBuf> {
    let path = base.join(name);
    create_dir(base)?;
    create_dir(&path)?;
    create_dir(&path.join(SUPERVISOR_LEAF))?;
    create_dir(&path.join(PAYLOAD_LEAF))?;
    Ok(path)
}

/// Moves the calling process into `cgroup`.
pub fn join(cgroup: &Path) -> io::Result<()> {
    let mut procs = fs::OpenOptions::new()
        .write(true)
        .open(cgroup.join("cgroup.procs"))?;
    procs.write_all(std::process::id().to_string().as_bytes())
}

/// Returns whether any process is in `cgroup` or below it, from `cgroup.events`, or `None` if
/// the cgroup does not exist.
pub fn populated(cgroup: &Path) -> io::Result<Option<bool>> {
    let text = match fs::read_to_string(cgroup.join("cgroup.events")) {
        Ok(text) => text,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    let value = text
        .lines()
        .find_map(|line| line.strip_prefix("populated "))
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("no populated line in {}/cgroup.events", cgroup.display()),
            )
        })?;
    Ok(Some(value.trim() == "1"))
}

/// Kills every process in `cgroup` and below it with SIGKILL, atomically with respect to fork.
/// A cgroup that no longer exists has nothing to kill.
pub fn kill(cgroup: &Path) -> io::Result<()> {
    match fs::write(cgroup.join("cgroup.kill"), b"1") {
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Returns the pids of every process in `cgroup` and its descendant cgroups.
pub fn procs_recursive(cgroup: &Path) -> io::Result<Vec<i32>> {
    let mut pids = Vec::new();
    let mut stack = vec![cgroup.to_path_buf()];
    while let Some(dir) = stack.pop() {
        match fs::read_to_string(dir.join("cgroup.procs")) {
            Ok(text) => pids.extend(
                text.lines()
                    .filter_map(|line| line.trim().parse::<i32>().ok()),
            ),
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(error) => return Err(error),
        }
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(error) => return Err(error),
        };
        for entry in entries {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok(pids)
}

/// Returns the names and paths of the child cgroups of `base`.
pub fn children(base: &Path) -> io::Result<Vec<(String, PathBuf)>> {
    let entries = match fs::read_dir(base) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir()
            && let Some(name) = entry.file_name().to_str()
        {
            found.push((name.to_string(), entry.path()));
        }
    }
    Ok(found)
}

/// Removes `cgroup` and every cgroup below it, deepest first. Fails with `EBUSY` while a
/// process remains. A cgroup that no longer exists counts as removed.
pub fn remove_tree(cgroup: &Path) -> io::Result<()> {
    let entries = match fs::read_dir(cgroup) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_tree(&entry.path())?;
        }
    }
    match fs::remove_dir(cgroup) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw
";

    #[test]
    fn parse_cgroup2_mount_finds_unified() {
        assert_eq!(
            parse_cgroup2_mount(MOUNTINFO),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
    }

    #[test]
    fn parse_cgroup2_mount_without_cgroup2() {
        assert_eq!(parse_cgroup2_mount(MOUNTINFO.lines().next().unwrap()), None);
    }

    #[test]
    fn parse_cgroup2_mount_decodes_spaces() {
        let line = "41 31 0:38 / /mnt/my\\040cgroup rw - cgroup2 cgroup2 rw";
        assert_eq!(
            parse_cgroup2_mount(line),
            Some(PathBuf::from("/mnt/my cgroup"))
        );
    }

    #[test]
    fn parse_own_cgroup_reads_v2_line() {
        let text = "4:memory:/a\n0::/system.slice/sandgate.service\n";
        assert_eq!(
            parse_own_cgroup(text).as_deref(),
            Some("/system.slice/sandgate.service")
        );
    }

    #[test]
    fn populated_of_missing_cgroup_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(populated(&dir.path().join("gone")).unwrap(), None);
    }
}
