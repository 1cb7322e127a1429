//! `cargo xtask setup`: installs what is missing, and only that (docs/architecture.md, "Building the kernel programs").
//!
//! The kernel programs need a Rust compiler with a `core` for
//! `bpfel-unknown-none` and `bpf-linker`. Accepted, in this order:
//! - the standard aya path: rustup nightly with `rust-src`, plus `bpf-linker`;
//! - Debian's `rustc-web` 1.96 with its prebuilt BPF `core`
//!   (`libstd-rust-web-dev-bpf`), plus `bpf-linker` built against Debian's LLVM 22.
//!
//! Versions are pinned because they must match: rustc-web 1.96 is built on LLVM 22,
//! so bpf-linker must link LLVM 22 (`--features llvm-22`) or the objects it links
//! are unreadable to it; bpf-linker 0.13 is the release that supports LLVM 22.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{cargo, step};

const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const EBPF_PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "libstd-rust-web-dev-bpf",
    "llvm-22-dev",
    "libpolly-22-dev",
    "zlib1g-dev",
    "libzstd-dev",
];
/// Tools the lab, the tests and the demo run: iproute2 (ip, bridge), util-linux
/// (nsenter, setpriv, mount), curl and tcpdump as real clients and captures,
/// procps (sysctl) for the bench's pods; the bench's Envoy comparison runs
/// wrk (HTTP/1.1) and h2load (h2c) and signs Envoy's certificates with openssl
/// (Envoy itself is installed by `cargo xtask bench`, not here).
const LAB_PACKAGES: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("bridge", "iproute2"),
    ("sysctl", "procps"),
    ("nsenter", "util-linux"),
    ("setpriv", "util-linux"),
    ("curl", "curl"),
    ("tcpdump", "tcpdump"),
    ("wrk", "wrk"),
    ("h2load", "nghttp2-client"),
    ("openssl", "openssl"),
];
/// What `cargo xtask image` builds the image with (umoci) and the tests check it
/// with (skopeo): no container engine, no daemon.
const IMAGE_PACKAGES: &[(&str, &str)] = &[("umoci", "umoci"), ("skopeo", "skopeo")];

/// Everything: what [`base`] installs, and the Kubernetes binaries of the
/// tests' control plane (a long build the first time).
pub fn run() -> Result<()> {
    base()?;
    image_tools()?;
    kube_binaries()?;
    crate::fuzz::tools()?;
    python_packages()?;
    println!("setup: everything is in place");
    Ok(())
}

/// What the plain demo needs: the lab's tools and the kernel toolchain, without
/// the Kubernetes binaries (the demo runs no cluster).
pub fn base() -> Result<()> {
    if !nix_is_root() {
        bail!("setup installs packages and the tests create namespaces: run as root");
    }
    let mut apt = Apt::default();
    let missing_tools: Vec<&str> = LAB_PACKAGES
        .iter()
        .filter(|(bin, _)| which(bin).is_none())
        .map(|(_, pkg)| *pkg)
        .collect();
    apt.install(&missing_tools)?;

    if nightly_with_rust_src() {
        println!("kernel toolchain: rustup nightly with rust-src");
    } else {
        let missing: Vec<&str> = EBPF_PACKAGES
            .iter()
            .copied()
            .filter(|p| !apt.installed(p))
            .collect();
        apt.install(&missing)?;
        println!("kernel toolchain: Debian rustc-web with the prebuilt BPF core");
    }
    if which("bpf-linker").is_none() {
        step(
            "install bpf-linker (about two minutes)",
            cargo()
                .args([
                    "install",
                    "bpf-linker",
                    "--locked",
                    "--version",
                    BPF_LINKER_VERSION,
                ])
                .args(["--no-default-features", "--features", "llvm-22"])
                .env("LLVM_PREFIX", LLVM_PREFIX),
        )?;
    }
    ensure_cgroup2()
}

/// umoci and skopeo, only when missing: for `cargo xtask image` and the image test.
pub fn image_tools() -> Result<()> {
    if IMAGE_PACKAGES.iter().all(|(bin, _)| which(bin).is_some()) {
        return Ok(());
    }
    if !nix_is_root() {
        bail!("cargo xtask image needs umoci and skopeo: run `cargo xtask setup` as root first");
    }
    let missing: Vec<&str> = IMAGE_PACKAGES
        .iter()
        .filter(|(bin, _)| which(bin).is_none())
        .map(|(_, pkg)| *pkg)
        .collect();
    // Without recommends: skopeo's are an engine's networking (netavark,
    // aardvark-dns, nftables), which reading and copying images does not use.
    Apt::default().install_with(&missing, &["--no-install-recommends"])
}

/// The test tier's control plane: kube-apiserver, kube-controller-manager and
/// kubectl from the Go recipe in `tests/kube/`, and etcd from the one in
/// `tests/kube/etcd/` (Debian's etcd 3.4 is below what Kubernetes 1.37
/// supports), built into a cache keyed by the recipes (`lab::kube::bin_dir`).
fn kube_binaries() -> Result<()> {
    let bin = lab::kube::bin_dir()?;
    let tools = || {
        lab::kube::TOOLS
            .iter()
            .chain([&lab::kube::ETCD_TOOL])
            .map(|(name, _)| bin.join(name))
    };
    if tools().all(|path| path.is_file()) {
        println!("kubernetes binaries: {}", bin.display());
        return Ok(());
    }
    let go = which("go")
        .or_else(|| Some(PathBuf::from("/usr/local/go/bin/go")).filter(|p| p.is_file()))
        .context("the Kubernetes test tier builds with Go (1.26 or newer): install it first")?;
    // Built into a side directory and renamed: a present bin dir is a complete one.
    let partial = bin.with_file_name("bin.partial");
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial).with_context(|| format!("create {}", partial.display()))?;
    let recipe = lab::kube::recipe_dir();
    step(
        &format!(
            "build kube-apiserver, kube-controller-manager and kubectl {} from {} \
             (the first build takes 5-10 minutes or more and ~4 GB of Go cache; later ones seconds)",
            lab::kube::KUBE_VERSION,
            recipe.display()
        ),
        Command::new(&go)
            .arg("-C")
            .arg(&recipe)
            .args(["build", "-ldflags", &lab::kube::build_ldflags(), "-o"])
            .arg(format!("{}/", partial.display()))
            .args(lab::kube::TOOLS.iter().map(|(_, package)| *package)),
    )?;
    let (etcd, package) = lab::kube::ETCD_TOOL;
    step(
        &format!(
            "build etcd from {} (about a minute)",
            lab::kube::etcd_recipe_dir().display()
        ),
        Command::new(&go)
            .arg("-C")
            .arg(lab::kube::etcd_recipe_dir())
            .args(["build", "-o"])
            .arg(partial.join(etcd))
            .arg(package),
    )?;
    std::fs::rename(&partial, &bin)
        .with_context(|| format!("move {} to {}", partial.display(), bin.display()))?;
    println!("kubernetes binaries: {}", bin.display());
    remove_older_kube_builds(&bin);
    Ok(())
}

/// grpcio and websockets from PyPI, pinned, for the L7 protocol tests'
/// clients and servers (`lab::python`); pip comes with Debian's python3-pip.
fn python_packages() -> Result<()> {
    if lab::python::packages_dir().is_ok_and(|d| d.is_dir()) {
        return Ok(());
    }
    if which("python3").is_none() || !pip_runs() {
        Apt::default().install(&["python3", "python3-pip"])?;
    }
    println!(
        "\n==> install {} (PyPI) for the L7 protocol tests",
        lab::python::PACKAGES.join(" ")
    );
    let dir = lab::python::install()?;
    println!("python packages: {}", dir.display());
    Ok(())
}

fn pip_runs() -> bool {
    Command::new("python3")
        .args(["-m", "pip", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Binaries of earlier recipes (other keys beside ours) are ~450 MB each.
fn remove_older_kube_builds(bin: &Path) {
    let Some(key_dir) = bin.parent() else { return };
    let Some(cache) = key_dir.parent() else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(cache) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_key = name.len() == 12 && name.bytes().all(|b| b.is_ascii_hexdigit());
        if is_key && entry.path() != key_dir && entry.path().join("bin").is_dir() {
            println!(
                "removing binaries of an older recipe: {}",
                entry.path().display()
            );
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|u| u.split_whitespace().next() == Some("0"))
        })
        .unwrap_or(false)
}

fn nightly_with_rust_src() -> bool {
    Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            Path::new(String::from_utf8_lossy(&o.stdout).trim())
                .join("lib/rustlib/src/rust/library/core")
                .is_dir()
        })
        .unwrap_or(false)
}

/// The lab attaches to a cgroup v2 subtree; mount the hierarchy if none is.
fn ensure_cgroup2() -> Result<()> {
    let mounted = std::fs::read_to_string("/proc/self/mountinfo")?
        .lines()
        .any(|l| {
            l.split_once(" - ")
                .is_some_and(|(_, r)| r.starts_with("cgroup2 "))
        });
    if mounted {
        return Ok(());
    }
    let target = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
        || is_empty_dir("/sys/fs/cgroup")
    {
        "/sys/fs/cgroup"
    } else {
        "/sys/fs/cgroup/unified"
    };
    std::fs::create_dir_all(target)?;
    step(
        "mount cgroup v2",
        Command::new("mount").args(["-t", "cgroup2", "none", target]),
    )
}

fn is_empty_dir(path: &str) -> bool {
    std::fs::read_dir(path)
        .map(|mut d| d.next().is_none())
        .unwrap_or(false)
}

pub fn which(bin: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([
            std::path::PathBuf::from("/usr/sbin"),
            std::path::PathBuf::from("/sbin"),
        ])
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

/// apt-get, updated at most once per run.
#[derive(Default)]
struct Apt {
    updated: bool,
}

impl Apt {
    fn installed(&self, package: &str) -> bool {
        Command::new("dpkg-query")
            .args(["-W", "-f=${Status}", package])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
            .unwrap_or(false)
    }

    fn install(&mut self, packages: &[&str]) -> Result<()> {
        self.install_with(packages, &[])
    }

    fn install_with(&mut self, packages: &[&str], options: &[&str]) -> Result<()> {
        let missing: Vec<&str> = packages
            .iter()
            .copied()
            .filter(|p| !self.installed(p))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if !self.updated {
            step(
                "apt-get update",
                Command::new("apt-get").args(["update", "-q"]),
            )?;
            self.updated = true;
        }
        step(
            &format!("apt-get install {}", missing.join(" ")),
            Command::new("apt-get")
                .args(["install", "-y", "-q"])
                .args(options)
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
        .with_context(|| {
            format!(
                "cannot install {}: the kernel programs, the lab or the image need them",
                missing.join(", ")
            )
        })
    }
}
