//! Finding and removing what a crashed lab left behind (`cargo xtask lab clean`).

use std::path::PathBuf;

use anyhow::Result;

use crate::PREFIX;
use crate::exec::run;
use crate::lab::{find_cgroup2, kill_cgroup, remove_cgroup};

fn lab_netns() -> Vec<String> {
    run("ip", &["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(PREFIX))
        .map(str::to_string)
        .collect()
}

fn lab_dirs(parent: PathBuf) -> Vec<PathBuf> {
    std::fs::read_dir(parent)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with(PREFIX))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

fn lab_mounts() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter(|m| m.starts_with(&format!("/run/{PREFIX}")))
        .map(str::to_string)
        .collect()
}

/// Everything lab-made that still exists: namespaces, cgroups, mounts, run dirs.
pub fn leftovers() -> Vec<String> {
    let mut found: Vec<String> = lab_netns()
        .into_iter()
        .map(|n| format!("netns {n}"))
        .collect();
    if let Some(root) = find_cgroup2() {
        found.extend(
            lab_dirs(root)
                .into_iter()
                .map(|d| format!("cgroup {}", d.display())),
        );
    }
    found.extend(lab_mounts().into_iter().map(|m| format!("mount {m}")));
    found.extend(
        lab_dirs(PathBuf::from("/run"))
            .into_iter()
            .map(|d| format!("dir {}", d.display())),
    );
    found
}

/// Removes every leftover; returns what it removed.
pub fn clean_leftovers() -> Result<Vec<String>> {
    let found = leftovers();
    let cgroups = find_cgroup2().map(lab_dirs).unwrap_or_default();
    for cgroup in &cgroups {
        kill_cgroup(cgroup);
    }
    for mount in lab_mounts().iter().rev() {
        run("umount", &[mount])?;
    }
    for netns in lab_netns() {
        run("ip", &["netns", "del", &netns])?;
    }
    for cgroup in &cgroups {
        remove_cgroup(cgroup)?;
    }
    for dir in lab_dirs(PathBuf::from("/run")) {
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(found)
}
