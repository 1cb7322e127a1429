//! `mesh-agent check` on a node: every kernel prerequisite, each with a
//! pass/fail verdict and, when it fails, what to do about it.

use std::path::{Path, PathBuf};

use aya::EbpfLoader;
use aya::programs::Program;
use mesh_common::program_names as prog;

use super::report::{Check, Report};
use crate::ebpf::object::OBJECT;

/// `weft_sk_lookup` reads `ingress_ifindex` (5.17) to leave the agent's own
/// transparent dials on `lo` alone (docs/architecture.md, "Kernel programs").
const MIN_KERNEL: (u32, u32) = (5, 17);
const BTF_PATH: &str = "/sys/kernel/btf/vmlinux";
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// Runs every check. Program loading is tried even when an earlier check failed, so
/// one run shows everything that is wrong.
pub fn run_checks(bpffs_dir: &Path) -> Report {
    let mut checks = vec![kernel_version(), btf(), bpffs(bpffs_dir), cgroup_v2()];
    checks.extend(capabilities());
    checks.extend(programs_load());
    Report::new(checks)
}

fn kernel_version() -> Check {
    let release = match nix::sys::utsname::uname() {
        Ok(u) => u.release().to_string_lossy().into_owned(),
        Err(e) => return Check::fail("kernel", format!("uname failed: {e}"), "run on Linux"),
    };
    match parse_kernel_version(&release) {
        Some(v) if v >= MIN_KERNEL => Check::pass(
            "kernel",
            format!("{release} (>= {}.{})", MIN_KERNEL.0, MIN_KERNEL.1),
        ),
        Some(_) => Check::fail(
            "kernel",
            format!("{release} is older than {}.{}", MIN_KERNEL.0, MIN_KERNEL.1),
            "run on Linux 5.17 or newer",
        ),
        None => Check::fail(
            "kernel",
            format!("cannot parse release {release:?}"),
            "run on Linux 5.17 or newer",
        ),
    }
}

fn parse_kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn btf() -> Check {
    if Path::new(BTF_PATH).exists() {
        Check::pass("btf", BTF_PATH)
    } else {
        Check::fail(
            "btf",
            format!("{BTF_PATH} not found"),
            "use a kernel built with CONFIG_DEBUG_INFO_BTF=y",
        )
    }
}

fn fs_magic(path: &Path) -> Option<i64> {
    nix::sys::statfs::statfs(path)
        .ok()
        .map(|s| s.filesystem_type().0)
}

fn bpffs(dir: &Path) -> Check {
    // The directory may not exist yet (the agent creates it); its nearest existing
    // ancestor must be on a bpffs.
    let existing = dir
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    let fix = format!(
        "mount a BPF filesystem: `mount -t bpf bpf {}` (or pass --bpffs-dir on one)",
        bpffs_mount_point(dir).display()
    );
    match fs_magic(existing) {
        Some(BPF_FS_MAGIC) => Check::pass("bpffs", format!("{} is on a bpffs", existing.display())),
        Some(_) => Check::fail(
            "bpffs",
            format!("{} is not on a bpffs", existing.display()),
            fix,
        ),
        None => Check::fail("bpffs", format!("cannot stat {}", existing.display()), fix),
    }
}

/// Where bpffs is conventionally mounted for a pin directory: `/sys/fs/bpf` for
/// anything under it, else the directory's parent.
fn bpffs_mount_point(dir: &Path) -> PathBuf {
    let conventional = Path::new("/sys/fs/bpf");
    if dir.starts_with(conventional) {
        conventional.to_path_buf()
    } else {
        dir.parent().unwrap_or(dir).to_path_buf()
    }
}

/// The first cgroup v2 mount in this mount namespace.
pub fn find_cgroup2() -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo.lines().find_map(|line| {
        // "<id> <parent> <maj:min> <root> <mount point> <opts> ... - <fstype> <source> <opts>"
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        let mount_point = left.split_whitespace().nth(4)?;
        (fstype == "cgroup2").then(|| PathBuf::from(mount_point))
    })
}

fn cgroup_v2() -> Check {
    match find_cgroup2() {
        Some(path) if fs_magic(&path) == Some(CGROUP2_SUPER_MAGIC) => {
            Check::pass("cgroup v2", path.display().to_string())
        }
        _ => Check::fail(
            "cgroup v2",
            "no cgroup v2 hierarchy is mounted",
            "mount one: `mount -t cgroup2 none /sys/fs/cgroup` (or /sys/fs/cgroup/unified on hybrid systems)",
        ),
    }
}

fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    u64::from_str_radix(hex, 16).ok()
}

fn capabilities() -> Vec<Check> {
    let caps = effective_caps().unwrap_or(0);
    [("CAP_BPF", CAP_BPF, "load programs and create maps"), ("CAP_NET_ADMIN", CAP_NET_ADMIN, "attach to cgroups and netns"), ("CAP_SYS_ADMIN", CAP_SYS_ADMIN, "enter pod netns and re-adopt pinned programs")]
        .into_iter()
        .map(|(name, bit, why)| {
            if caps & (1 << bit) != 0 {
                Check::pass(name, format!("held ({why})"))
            } else {
                Check::fail(
                    name,
                    format!("missing (needed to {why})"),
                    format!("run as root, or grant it: securityContext.capabilities.add: [{}] in the DaemonSet", name.trim_start_matches("CAP_")),
                )
            }
        })
        .collect()
}

/// Loads every program of the embedded object through the verifier, then unloads
/// them (dropping the `Ebpf` unloads programs and frees maps; nothing is attached).
fn programs_load() -> Vec<Check> {
    let mut ebpf = match EbpfLoader::new().load(OBJECT) {
        Ok(ebpf) => ebpf,
        Err(e) => {
            return vec![Check::fail(
                "programs",
                format!("cannot load the object: {e}"),
                "see the checks above (capabilities, BTF); run as root",
            )];
        }
    };
    let mut checks = Vec::new();
    for name in [
        prog::CONNECT4,
        prog::CONNECT6,
        prog::GETPEERNAME4,
        prog::GETPEERNAME6,
        prog::SOCKOPS,
        prog::SK_LOOKUP,
    ] {
        let label = format!("program {name}");
        let result = match ebpf.program_mut(name) {
            None => Err("missing from the embedded object".to_string()),
            Some(program) => load_program(program),
        };
        checks.push(match result {
            Ok(()) => Check::pass(label, "loaded through the verifier"),
            Err(e) => Check::fail(
                label,
                e,
                "check the kernel version and capabilities above; the verifier log has details",
            ),
        });
    }
    checks
}

fn load_program(program: &mut Program) -> Result<(), String> {
    let loaded = match program {
        Program::CgroupSockAddr(p) => p.load(),
        Program::SockOps(p) => p.load(),
        Program::SkLookup(p) => p.load(),
        other => return Err(format!("unexpected program type {:?}", other.prog_type())),
    };
    loaded.map_err(|e| format!("{e:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_releases() {
        assert_eq!(parse_kernel_version("6.18.44-fc-v769"), Some((6, 18)));
        assert_eq!(parse_kernel_version("5.10.0-28-amd64"), Some((5, 10)));
        assert_eq!(parse_kernel_version("garbage"), None);
    }

    #[test]
    fn bpffs_fix_names_the_conventional_mount() {
        assert_eq!(
            bpffs_mount_point(Path::new("/sys/fs/bpf/weft")),
            PathBuf::from("/sys/fs/bpf")
        );
        assert_eq!(
            bpffs_mount_point(Path::new("/tmp/x/weft")),
            PathBuf::from("/tmp/x")
        );
    }
}
