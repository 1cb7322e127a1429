//! Where the Kubernetes binaries of the test tier live. `cargo xtask setup`
//! builds them from the Go recipe in `tests/kube/` and the tests look them up
//! here, so the path is computed in this one place.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Overrides the directory of kube-apiserver, kube-controller-manager and kubectl.
pub const BIN_ENV: &str = "WEFT_KUBE_BIN";
/// Overrides the etcd binary (else `etcd` in the bin dir).
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

/// etcd, from its own recipe in `tests/kube/etcd` (file name, Go package):
/// Debian's etcd 3.4 runs kube-apiserver 1.37 but below its supported minimum
/// (3.5.24) and without the watch-progress requests its watch cache uses.
pub const ETCD_TOOL: (&str, &str) = ("etcd", "go.etcd.io/etcd/server/v3");

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

/// The Go module that pins etcd (`tests/kube/etcd`).
pub fn etcd_recipe_dir() -> PathBuf {
    recipe_dir().join("etcd")
}

/// `/var/cache/weft/kube/<key>/bin`, where the key hashes both recipes' go.mod
/// and go.sum: a changed recipe builds into a new directory instead of reusing
/// binaries of another version. `$WEFT_KUBE_BIN` wins when set.
pub fn bin_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(BIN_ENV) {
        return Ok(PathBuf::from(dir));
    }
    let mut hash = Fnv::default();
    for recipe in [recipe_dir(), etcd_recipe_dir()] {
        for file in ["go.mod", "go.sum"] {
            let path = recipe.join(file);
            let bytes = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
            hash.write(&bytes);
        }
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

/// The etcd server: `$WEFT_ETCD_BIN`, else the one built next to the
/// Kubernetes binaries.
pub fn etcd_binary() -> Result<PathBuf> {
    match std::env::var_os(ETCD_ENV) {
        Some(path) => Ok(PathBuf::from(path)),
        None => binary(ETCD_TOOL.0),
    }
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
