//! Where the Kubernetes binaries of the test tier live. `cargo xtask setup`
//! builds them from the Go recipe in `tests/kube/` and the tests look them up
//! here, so the path is computed in this one place.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Overrides the directory of kube-apiserver, kube-controller-manager and kubectl.
pub const BIN_ENV: &str = "WEFT_KUBE_BIN";
/// Overrides the etcd binary (else `etcd` in the bin dir, else Debian's `/usr/bin/etcd`).
pub const ETCD_ENV: &str = "WEFT_ETCD_BIN";

/// The binaries the recipe builds: (file name, Go package).
pub const TOOLS: &[(&str, &str)] = &[
    ("kube-apiserver", "k8s.io/kubernetes/cmd/kube-apiserver"),
    (
        "kube-controller-manager",
        "k8s.io/kubernetes/cmd/kube-controller-manager",
    ),
    ("kubectl", "k8s.io/kubernetes/cmd/kubectl"),
];

/// The release `tests/kube/go.mod` pins; stamped into the binaries.
pub const KUBE_VERSION: &str = "v1.37.2";

/// `go build -ldflags`: the version stamp Kubernetes' own build sets (without
/// it the binaries call themselves `v0.0.0-master`).
pub fn build_ldflags() -> String {
    let (major, minor) = KUBE_VERSION
        .trim_start_matches('v')
        .split_once('.')
        .map(|(major, rest)| (major, rest.split('.').next().unwrap_or("")))
        .unwrap_or(("", ""));
    let mut flags = Vec::new();
    for package in [
        "k8s.io/client-go/pkg/version",
        "k8s.io/component-base/version",
    ] {
        for (key, value) in [
            ("gitVersion", KUBE_VERSION),
            ("gitMajor", major),
            ("gitMinor", minor),
            ("gitTreeState", "clean"),
        ] {
            flags.push(format!("-X {package}.{key}={value}"));
        }
    }
    flags.join(" ")
}

/// The Go module that pins the Kubernetes release (`tests/kube`).
pub fn recipe_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("kube")
}

/// `/var/cache/weft/kube/<key>/bin`, where the key hashes the recipe's go.mod and
/// go.sum: a changed recipe builds into a new directory instead of reusing
/// binaries of another version. `$WEFT_KUBE_BIN` wins when set.
pub fn bin_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(BIN_ENV) {
        return Ok(PathBuf::from(dir));
    }
    let recipe = recipe_dir();
    let mut hash = Fnv::default();
    for file in ["go.mod", "go.sum"] {
        let path = recipe.join(file);
        let bytes = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
        hash.write(&bytes);
    }
    Ok(PathBuf::from("/var/cache/weft/kube")
        .join(format!("{:012x}", hash.0 & 0xffff_ffff_ffff))
        .join("bin"))
}

/// The path of one of the recipe's binaries, failing with how to get it.
pub fn binary(name: &str) -> Result<PathBuf> {
    let path = bin_dir()?.join(name);
    if !path.is_file() {
        bail!(
            "{} is missing: run `cargo xtask setup` (the first build of the Kubernetes \
             binaries takes 5-10 minutes) or set {BIN_ENV}",
            path.display()
        );
    }
    Ok(path)
}

/// The etcd server: `$WEFT_ETCD_BIN`, else one built next to the Kubernetes
/// binaries, else Debian's `etcd-server` package.
pub fn etcd_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(ETCD_ENV) {
        return Ok(PathBuf::from(path));
    }
    let candidates = [bin_dir()?.join("etcd"), PathBuf::from("/usr/bin/etcd")];
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .with_context(|| {
            format!(
                "no etcd at {candidates:?}: run `cargo xtask setup` (it installs Debian's \
                 etcd-server) or set {ETCD_ENV}"
            )
        })
}

/// FNV-1a, 64 bits: a cache key that stays the same across Rust releases
/// (std's hasher does not promise that).
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}
