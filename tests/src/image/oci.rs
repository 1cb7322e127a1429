//! From a staged tree to an `oci-archive`: GNU tar writes the layer (sorted,
//! owned by root, every mtime at [`super::CREATED`]), umoci makes the OCI layout
//! around it (gzip, config, manifest, index), tar packs the layout.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Flags that make GNU tar's output depend on the files' contents and modes only.
const REPRODUCIBLE: &[&str] = &[
    "--sort=name",
    "--mtime=@0",
    "--owner=0",
    "--group=0",
    "--numeric-owner",
];

/// The layer: the tree under `rootfs`, uncompressed (umoci compresses it).
pub(super) fn layer_tar(rootfs: &Path, layer: &Path) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(rootfs)
        .with_context(|| format!("list {}", rootfs.display()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()?;
    entries.sort();
    run(Command::new("tar")
        .args(REPRODUCIBLE)
        .arg("-C")
        .arg(rootfs)
        .arg("-cf")
        .arg(layer)
        .args(&entries))
}

/// An OCI layout in `layout` holding one image, tagged `tag`, made of `layer`.
pub(super) fn assemble(layer: &Path, layout: &Path, tag: &str) -> Result<()> {
    let image = format!("{}:{tag}", layout.display());
    run(Command::new("umoci")
        .arg("init")
        .arg("--layout")
        .arg(layout))?;
    run(Command::new("umoci").args(["new", "--image", &image]))?;
    run(Command::new("umoci")
        .args([
            "raw",
            "add-layer",
            "--image",
            &image,
            "--history.created",
            super::CREATED,
            "--history.created_by",
            "cargo xtask image",
        ])
        .arg(layer))?;
    let version = super::version();
    let label = |key: &str, value: &str| format!("org.opencontainers.image.{key}={value}");
    run(Command::new("umoci").args([
        "config",
        "--image",
        &image,
        "--no-history",
        "--created",
        super::CREATED,
        "--architecture",
        "amd64",
        "--os",
        "linux",
        "--config.entrypoint",
        super::ENTRYPOINT,
        "--config.workingdir",
        super::WORKING_DIR,
        "--config.env",
        super::PATH_ENV,
        "--config.label",
        &label("source", super::SOURCE),
        "--config.label",
        &label("version", version),
        "--config.label",
        &label("licenses", env!("CARGO_PKG_LICENSE")),
    ]))?;
    // Each step above left its superseded config and manifest behind.
    run(Command::new("umoci").arg("gc").arg("--layout").arg(layout))
}

/// The digest of the one manifest `layout`'s index names.
pub(super) fn manifest_digest(layout: &Path) -> Result<String> {
    let path = layout.join("index.json");
    let index: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("read {}", path.display()))?,
    )
    .with_context(|| format!("parse {}", path.display()))?;
    match index["manifests"].as_array().map(Vec::as_slice) {
        Some([manifest]) => manifest["digest"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("{}: a manifest without a digest", path.display())),
        other => bail!("{}: expected one manifest, found {other:?}", path.display()),
    }
}

/// `layout` packed as an `oci-archive` at `archive` (written aside, then renamed).
pub(super) fn archive(layout: &Path, archive: &Path) -> Result<()> {
    let partial = archive.with_extension("tar.partial");
    run(Command::new("tar")
        .args(REPRODUCIBLE)
        .arg("--mode=go+r")
        .arg("-C")
        .arg(layout)
        .arg("-cf")
        .arg(&partial)
        .args(["oci-layout", "index.json", "blobs"]))?;
    std::fs::rename(&partial, archive)
        .with_context(|| format!("move {} to {}", partial.display(), archive.display()))
}

fn run(cmd: &mut Command) -> Result<()> {
    let line = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ");
    let out = cmd
        .output()
        .with_context(|| format!("cannot start `{line}` (is it installed?)"))?;
    if !out.status.success() {
        bail!(
            "`{line}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
