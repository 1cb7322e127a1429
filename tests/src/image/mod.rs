//! The agent's container image, built without a container engine: the
//! `mesh-agent` binary, exactly the shared libraries it links and the few files
//! a container needs ([`rootfs`]), made into a one-layer OCI image with umoci and
//! written as an `oci-archive` ([`oci`]). `cargo xtask image` and the image test
//! both build through [`build`]; the Containerfile copies [`stage_rootfs`]'s tree.
//!
//! Every timestamp is the Unix epoch and every owner root, so the digest depends
//! only on the binary and the libraries: the same inputs give the same image.

mod oci;
mod rootfs;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

pub use rootfs::{libraries, stage as stage_rootfs};

/// The name the manifests deploy (`images:` in manifests/kustomization.yaml).
pub const NAME: &str = "ghcr.io/weft-mesh/mesh-agent";
/// Where the binary is in the image; `PATH` finds it for the manifests' `command: [mesh-agent]`.
pub const ENTRYPOINT: &str = "/usr/local/bin/mesh-agent";
pub const WORKING_DIR: &str = "/";
pub const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// `org.opencontainers.image.source`: the repository of the image's organisation.
pub const SOURCE: &str = "https://github.com/weft-mesh/weft";
/// The image's `created` and every file's mtime: 1970-01-01, for reproducibility.
pub const CREATED: &str = "1970-01-01T00:00:00Z";

/// The workspace's version: the image's tag and its version label.
pub fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// `mesh-agent-<version>.oci.tar`.
pub fn archive_name() -> String {
    format!("mesh-agent-{}.oci.tar", version())
}

/// A built `oci-archive`.
#[derive(Debug)]
pub struct Image {
    pub archive: PathBuf,
    /// The manifest's digest: what a registry names the image by once pushed.
    pub digest: String,
    /// The archive's size in bytes.
    pub size: u64,
}

/// Builds the image of `binary` as `out_dir/mesh-agent-<version>.oci.tar`,
/// replacing any earlier one. Needs umoci and GNU tar, no daemon and no root.
pub fn build(binary: &Path, out_dir: &Path) -> Result<Image> {
    std::fs::create_dir_all(out_dir).with_context(|| format!("create {}", out_dir.display()))?;
    let work = out_dir.join(format!(".mesh-agent-{}.build", version()));
    remove_dir_if_present(&work)?;
    let rootfs = work.join("rootfs");
    stage_rootfs(binary, &rootfs)?;
    let layer = work.join("layer.tar");
    oci::layer_tar(&rootfs, &layer)?;
    let layout = work.join("layout");
    oci::assemble(&layer, &layout, version())?;
    let digest = oci::manifest_digest(&layout)?;
    let archive = out_dir.join(archive_name());
    oci::archive(&layout, &archive)?;
    remove_dir_if_present(&work)?;
    let size = std::fs::metadata(&archive)
        .with_context(|| format!("stat {}", archive.display()))?
        .len();
    Ok(Image {
        archive,
        digest,
        size,
    })
}

fn remove_dir_if_present(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("remove {}", dir.display()))
        }
        _ => Ok(()),
    }
}
