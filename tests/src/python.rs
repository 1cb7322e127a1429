//! The Python programs of the L7 protocol tests (`tests/py/`): real gRPC and
//! WebSocket clients and servers, from PyPI's `grpcio` and `websockets`
//! (issue 14: components Weft's authors did not write). `cargo xtask setup`
//! installs the pinned packages once into a cache directory (`pip install
//! --target`, as the bench installs Envoy); the tests run `python3` with that
//! directory on `PYTHONPATH`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::pod::Pod;

/// Pinned, with grpcio's one dependency, so that every machine runs the same.
pub const PACKAGES: &[&str] = &[
    "grpcio==1.85.1",
    "typing-extensions==4.16.0",
    "websockets==17.4",
];

const INTERPRETER: &str = "python3";

/// Where the packages live for this machine's `python3`: the wheels are
/// built for one CPython version, so the directory is named after it too.
pub fn packages_dir() -> Result<PathBuf> {
    let out = Command::new(INTERPRETER)
        .args([
            "-c",
            "import sys; print(f'cp{sys.version_info[0]}{sys.version_info[1]}')",
        ])
        .output()
        .context("run python3 (Debian: apt-get install python3)")?;
    if !out.status.success() {
        bail!("python3: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let tag = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let pins = PACKAGES.join("-").replace("==", "-");
    Ok(PathBuf::from(format!(
        "/var/cache/weft/python-{tag}-{pins}"
    )))
}

/// Installs [`PACKAGES`] when missing (`cargo xtask setup`); returns the directory.
pub fn install() -> Result<PathBuf> {
    let dir = packages_dir()?;
    if dir.is_dir() {
        return Ok(dir);
    }
    let partial = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    let out = Command::new(INTERPRETER)
        .args(["-m", "pip", "install", "--quiet", "--no-deps"])
        .args(["--disable-pip-version-check", "--target"])
        .arg(&partial)
        .args(PACKAGES)
        .output()
        .context("run python3 -m pip (Debian: apt-get install python3-pip)")?;
    if !out.status.success() {
        bail!(
            "pip install {}: {}",
            PACKAGES.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    // A present directory is a complete one.
    std::fs::rename(&partial, &dir)
        .with_context(|| format!("move {} to {}", partial.display(), dir.display()))?;
    Ok(dir)
}

/// `tests/py/` in this repository.
pub fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("py")
}

/// `python3 tests/py/SCRIPT` in `pod` (its netns and cgroup), finding the
/// installed packages; arguments added go to the script.
pub fn command(pod: &Pod, script: &str) -> Result<Command> {
    let packages = packages_dir()?;
    if !packages.is_dir() {
        bail!(
            "{} is missing: run `cargo xtask setup` (it installs {})",
            packages.display(),
            PACKAGES.join(" ")
        );
    }
    let mut cmd = pod.command(INTERPRETER);
    cmd.arg(scripts_dir().join(script))
        .env("PYTHONPATH", packages)
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    Ok(cmd)
}
