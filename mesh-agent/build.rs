//! Builds the kernel programs (`mesh-ebpf`) and embeds the object in the agent, so
//! one build of the agent yields a binary that carries its programs (docs/architecture.md, "Building the kernel programs").
//!
//! `mesh-ebpf` targets `bpfel-unknown-none`, which rustup's stable toolchain cannot
//! build (no `core` for BPF). Two toolchains can, tried in this order:
//! 1. Debian's `rustc-web` with the prebuilt BPF `core` (`libstd-rust-web-dev-bpf`):
//!    `/usr/bin/cargo` + `/usr/bin/rustc`, no `-Z build-std`.
//! 2. rustup nightly with `rust-src`, the standard aya path: `-Z build-std=core`.
//!
//! Both need `bpf-linker` on PATH. `cargo xtask setup` installs what is missing.
//! `WEFT_EBPF_OBJECT=<path>` embeds a prebuilt object instead.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const BPF_TARGET: &str = "bpfel-unknown-none";

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let object = out_dir.join("weft.bpf.o");
    println!("cargo:rerun-if-env-changed=WEFT_EBPF_OBJECT");
    if let Some(prebuilt) = env::var_os("WEFT_EBPF_OBJECT") {
        std::fs::copy(&prebuilt, &object).expect("copy WEFT_EBPF_OBJECT");
        return;
    }

    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("manifest dir"));
    let root = manifest_dir.parent().expect("workspace root").to_path_buf();
    let ebpf_dir = root.join("mesh-ebpf");
    for watched in ["mesh-ebpf/src", "mesh-ebpf/Cargo.toml", "mesh-common/src"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }

    let toolchain = Toolchain::detect().unwrap_or_else(|why| {
        panic!("cannot build the kernel programs: {why}. Run `cargo xtask setup` (docs/architecture.md, \"Building the kernel programs\").")
    });
    // A target dir of its own, shared by every profile, so the kernel crate is
    // compiled once and not once per OUT_DIR.
    let target_dir = root.join("target").join("bpf");
    let mut cmd = toolchain.cargo_build(&ebpf_dir, &target_dir);
    let status = cmd.status().expect("run cargo for mesh-ebpf");
    assert!(
        status.success(),
        "building mesh-ebpf failed (see the errors above)"
    );

    let built = target_dir
        .join(BPF_TARGET)
        .join("release")
        .join("mesh-ebpf");
    std::fs::copy(&built, &object)
        .unwrap_or_else(|e| panic!("copy {} to {}: {e}", built.display(), object.display()));
}

enum Toolchain {
    /// Debian's rustc-web: a prebuilt BPF `core` in its sysroot.
    Debian,
    /// rustup nightly with rust-src: builds `core` with `-Z build-std`.
    RustupNightly,
}

impl Toolchain {
    fn detect() -> Result<Self, String> {
        if which("bpf-linker").is_none() {
            return Err("bpf-linker is not on PATH (nor in $CARGO_HOME/bin)".into());
        }
        if Path::new("/usr/bin/rustc").exists()
            && Path::new("/usr/lib/rustlib")
                .join(BPF_TARGET)
                .join("lib")
                .is_dir()
        {
            return Ok(Toolchain::Debian);
        }
        let nightly_src = Command::new("rustup")
            .args(["run", "nightly", "rustc", "--print", "sysroot"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
            .map(|sysroot| sysroot.join("lib/rustlib/src/rust/library/core").is_dir());
        if nightly_src == Some(true) {
            return Ok(Toolchain::RustupNightly);
        }
        Err("found neither Debian's rustc-web with libstd-rust-web-dev-bpf nor rustup nightly with rust-src".into())
    }

    fn cargo_build(&self, ebpf_dir: &Path, target_dir: &Path) -> Command {
        let mut cmd = match self {
            Toolchain::Debian => {
                let mut c = Command::new("/usr/bin/cargo");
                c.env("RUSTC", "/usr/bin/rustc");
                c
            }
            Toolchain::RustupNightly => {
                let mut c = Command::new("rustup");
                c.args(["run", "nightly", "cargo"]);
                c
            }
        };
        // Start from a clean environment: cargo hands build scripts variables
        // (RUSTC_WRAPPER for clippy, CARGO_ENCODED_RUSTFLAGS, CARGO_TARGET_DIR, ...)
        // meant for the host build, which would break the nested one.
        cmd.env_clear();
        for keep in [
            "PATH",
            "HOME",
            "CARGO_HOME",
            "RUSTUP_HOME",
            "RUSTUP_TOOLCHAIN_DIR",
        ] {
            if let Some(v) = env::var_os(keep) {
                cmd.env(keep, v);
            }
        }
        if let Toolchain::Debian = self {
            cmd.env("RUSTC", "/usr/bin/rustc");
        }
        // aya-ebpf uses unstable features (asm_experimental_arch) on the BPF target.
        cmd.env("RUSTC_BOOTSTRAP", "1");
        let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into());
        let flags = [
            format!("--cfg=bpf_target_arch=\"{arch}\""),
            "-Cdebuginfo=2".into(),
            "-Clink-arg=--btf".into(),
        ];
        cmd.env("CARGO_ENCODED_RUSTFLAGS", flags.join("\x1f"));
        cmd.current_dir(ebpf_dir)
            .args(["build", "--release", "--target", BPF_TARGET])
            .arg("--target-dir")
            .arg(target_dir);
        if let Toolchain::RustupNightly = self {
            cmd.args(["-Z", "build-std=core"]);
        }
        cmd
    }
}

/// PATH plus cargo's own bin directory, where `cargo install` puts bpf-linker.
fn search_path() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = env::var_os("PATH")
        .map(|p| env::split_paths(&p).collect())
        .unwrap_or_default();
    let cargo_home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    if let Some(home) = cargo_home {
        dirs.push(home.join("bin"));
    }
    dirs
}

fn which(bin: &str) -> Option<PathBuf> {
    search_path()
        .into_iter()
        .map(|dir| dir.join(bin))
        .find(|p| p.is_file())
}
