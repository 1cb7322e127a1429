//! `cargo xtask image`: the agent's container image as an OCI archive, built
//! with umoci from the release binary, without a container engine or a daemon
//! (the build itself is `lab::image`, which the image test runs too).

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::{cargo, setup, step, workspace_root};

#[derive(clap::Args)]
pub struct ImageArgs {
    /// Put this `mesh-agent` in the image instead of building the release one.
    #[arg(long)]
    binary: Option<PathBuf>,
    /// Only lay out the image's files in this new directory (no archive, no
    /// umoci): what the Containerfile copies into its image.
    #[arg(long)]
    rootfs: Option<PathBuf>,
}

pub fn run(args: &ImageArgs) -> Result<()> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let binary = match &args.binary {
        Some(binary) => std::path::absolute(binary)?,
        None => {
            step(
                "build the release agent",
                cargo().args(["build", "--release", "-p", "mesh-agent"]),
            )?;
            target.join("release/mesh-agent")
        }
    };
    if let Some(rootfs) = &args.rootfs {
        lab::image::stage_rootfs(&binary, rootfs)
            .with_context(|| format!("lay out the image's files in {}", rootfs.display()))?;
        println!("image files for {}: {}", binary.display(), rootfs.display());
        return Ok(());
    }
    setup::image_tools()?;
    println!("\n==> build the image of {}", binary.display());
    let image = lab::image::build(&binary, &target.join("image"))
        .with_context(|| format!("build the image of {}", binary.display()))?;
    println!(
        "image: {}\n  size:   {:.1} MB ({} bytes)\n  digest: {}\n\
         push it with: skopeo copy oci-archive:{} docker://REGISTRY/mesh-agent:{}",
        image.archive.display(),
        image.size as f64 / 1e6,
        image.size,
        image.digest,
        image.archive.display(),
        lab::image::version(),
    );
    Ok(())
}
