//! What discovery reads from `/proc` and the cgroup tree: parsers (pure) and the
//! few reads behind them. Processes come and go while we read; a read that finds
//! one gone says so through [`vanished`].

use std::collections::BTreeSet;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Deeper cgroups under a pod than this are not walked (containers nest one or
/// two levels; a loop of bind mounts must not recurse forever).
const MAX_DEPTH: usize = 16;

/// Whether an error means the process or cgroup went away meanwhile (`ENODEV`: a
/// removed cgroup's open file; `ESRCH`: an exiting task).
pub fn vanished(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::NotFound
        || matches!(err.raw_os_error(), Some(libc::ESRCH | libc::ENODEV))
}

/// Whether an error means we may not look at that process (`EACCES`, `EPERM`):
/// a process more privileged than the agent, e.g. a sandbox's supervisor.
pub fn forbidden(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EACCES | libc::EPERM))
}

/// The start time (field 22, clock ticks after boot) in a `/proc/<pid>/stat`.
/// The command name (field 2) may hold spaces and parentheses: count after the
/// last `)`.
pub fn start_time_of_stat(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // rest starts at field 3 (state), so field 22 is the 20th.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The cgroup v2 path in a `/proc/<pid>/cgroup` (its `0::` line).
pub fn unified_cgroup_path(contents: &str) -> Option<&str> {
    contents.lines().find_map(|line| line.strip_prefix("0::"))
}

/// The cgroup2 mount points in a `/proc/self/mountinfo`.
pub fn cgroup2_mount_points(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fstype = right.split_whitespace().next()?;
            let mount_point = left.split_whitespace().nth(4)?;
            (fstype == "cgroup2").then(|| PathBuf::from(unescape_octal(mount_point)))
        })
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(b) = bytes.get(i + 1..i + 4).and_then(octal_byte)
        {
            out.push(b);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn octal_byte(digits: &[u8]) -> Option<u8> {
    let value = digits.iter().try_fold(0u16, |acc, &d| {
        (b'0'..=b'7')
            .contains(&d)
            .then(|| acc * 8 + u16::from(d - b'0'))
    })?;
    u8::try_from(value).ok()
}

/// The inode of a process's network namespace (`<proc>/<pid>/ns/net`).
pub fn netns_inode(proc_root: &Path, pid: u32) -> io::Result<u64> {
    Ok(std::fs::metadata(netns_path(proc_root, pid))?.ino())
}

pub fn netns_path(proc_root: &Path, pid: u32) -> PathBuf {
    proc_root.join(pid.to_string()).join("ns/net")
}

/// A process's start time, `None` if its stat does not parse.
pub fn start_time(proc_root: &Path, pid: u32) -> io::Result<Option<u64>> {
    let stat = std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat"))?;
    Ok(start_time_of_stat(&stat))
}

/// A process's command name, best effort.
pub fn comm(proc_root: &Path, pid: u32) -> Option<String> {
    let comm = std::fs::read_to_string(proc_root.join(pid.to_string()).join("comm")).ok()?;
    Some(comm.trim_end().to_string())
}

/// A process's cgroup v2 path as `/proc/<pid>/cgroup` shows it, best effort.
pub fn cgroup_of(proc_root: &Path, pid: u32) -> Option<String> {
    let contents = std::fs::read_to_string(proc_root.join(pid.to_string()).join("cgroup")).ok()?;
    unified_cgroup_path(&contents).map(str::to_string)
}

/// Every process id under `proc_root`.
pub fn all_pids(proc_root: &Path) -> io::Result<Vec<u32>> {
    Ok(std::fs::read_dir(proc_root)?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect())
}

/// The processes in a cgroup and every cgroup below it (`cgroup.procs`). A
/// cgroup that vanishes meanwhile contributes nothing.
pub fn pids_in_cgroup(cgroup: &Path) -> io::Result<BTreeSet<u32>> {
    let mut pids = BTreeSet::new();
    collect_pids(cgroup, 0, &mut pids)?;
    Ok(pids)
}

fn collect_pids(dir: &Path, depth: usize, pids: &mut BTreeSet<u32>) -> io::Result<()> {
    match std::fs::read_to_string(dir.join("cgroup.procs")) {
        Ok(procs) => pids.extend(procs.lines().filter_map(|l| l.trim().parse::<u32>().ok())),
        // Gone with its cgroup (whose listing fails next), or not a cgroup dir.
        Err(e) if vanished(&e) => {}
        Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", dir.display()))),
    }
    if depth >= MAX_DEPTH {
        return Ok(());
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if vanished(&e) => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries.filter_map(Result::ok) {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            collect_pids(&entry.path(), depth + 1, pids)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_after_a_hostile_command_name() {
        let stat =
            "4242 (a) b (c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(start_time_of_stat(stat), Some(987654));
        assert_eq!(start_time_of_stat("12 (x) S 1"), None);
        assert_eq!(start_time_of_stat("garbage"), None);
    }

    #[test]
    fn unified_line_on_a_hybrid_host() {
        let contents = "9:name=systemd:/\n4:memory:/x\n0::/kubepods/besteffort/podabc/c1\n";
        assert_eq!(
            unified_cgroup_path(contents),
            Some("/kubepods/besteffort/podabc/c1")
        );
        assert_eq!(unified_cgroup_path("4:memory:/x\n"), None);
    }

    #[test]
    fn cgroup2_mounts_with_escaped_names() {
        let mountinfo = "\
25 1 0:23 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
26 25 0:24 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
27 1 0:23 / /host\\040cgroup rw - cgroup2 none rw
";
        assert_eq!(
            cgroup2_mount_points(mountinfo),
            vec![
                PathBuf::from("/sys/fs/cgroup"),
                PathBuf::from("/host cgroup")
            ]
        );
    }

    #[test]
    fn unescape_leaves_plain_backslashes() {
        assert_eq!(unescape_octal(r"a\134b\x"), r"a\b\x");
    }
}
