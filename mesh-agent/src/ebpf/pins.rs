//! Where the agent pins its maps, programs and links under its bpffs directory.
//!
//! ```text
//! <bpffs-dir>/v<N>/maps/<MAP_NAME>
//! <bpffs-dir>/v<N>/maps/FAST_PATH_SOCKETS     (sk_msg attached to the map itself)
//! <bpffs-dir>/v<N>/progs/sk_lookup           (attached per pod netns)
//! <bpffs-dir>/v<N>/links/<program>           (cgroup attachments)
//! <bpffs-dir>/v<N>/links/sk_lookup-<netns cookie>
//! ```
//! `N` is `mesh_common::PIN_LAYOUT_VERSION`: pins of another version have map
//! layouts this agent cannot use, so it refuses to start over them (the first
//! agents pinned straight under `<bpffs-dir>`: version 1). Pinned links keep
//! capture running while the agent restarts; removing a link's pin (and
//! dropping every fd) detaches it. Version 3 added the fast path's maps and
//! `InboundConfig::netns_cookie`.

use std::path::{Path, PathBuf};

use mesh_common::PIN_LAYOUT_VERSION;

#[derive(Clone, Debug)]
pub struct PinLayout {
    root: PathBuf,
    /// `<root>/v<PIN_LAYOUT_VERSION>`: where this agent's pins are.
    dir: PathBuf,
}

/// The subdirectories of one version's pins.
const PIN_DIRS: [&str; 3] = ["links", "progs", "maps"];

impl PinLayout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let dir = root.join(format!("v{PIN_LAYOUT_VERSION}"));
        PinLayout { root, dir }
    }

    /// The agent's bpffs directory (`--bpffs-dir`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// This version's pin directory under the root.
    pub fn version_dir(&self) -> &Path {
        &self.dir
    }

    /// Pins of another layout version under the root, by their directory
    /// (the root itself for version 1): an agent of that version pinned them.
    pub fn other_versions(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        if PIN_DIRS.iter().any(|d| self.root.join(d).exists()) {
            found.push(self.root.clone());
        }
        if let Ok(entries) = std::fs::read_dir(&self.root) {
            found.extend(
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| *p != self.dir && is_version_dir(p)),
            );
        }
        found.sort();
        found
    }

    /// Every pin directory under the root, of any version (for `mesh-agent reset`).
    pub(super) fn all_versions(&self) -> Vec<PathBuf> {
        let mut dirs = self.other_versions();
        dirs.push(self.dir.clone());
        dirs
    }

    pub fn maps_dir(&self) -> PathBuf {
        self.dir.join("maps")
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.maps_dir().join(name)
    }

    pub fn progs_dir(&self) -> PathBuf {
        self.dir.join("progs")
    }

    pub fn sk_lookup_program(&self) -> PathBuf {
        self.progs_dir().join("sk_lookup")
    }

    pub fn links_dir(&self) -> PathBuf {
        self.dir.join("links")
    }

    pub fn cgroup_link(&self, program: &str) -> PathBuf {
        self.links_dir().join(program)
    }

    pub fn sk_lookup_link(&self, netns_cookie: u64) -> PathBuf {
        self.links_dir().join(format!("sk_lookup-{netns_cookie}"))
    }

    /// The netns cookies that have a pinned sk_lookup link.
    pub fn pinned_sk_lookup_cookies(&self) -> Vec<u64> {
        let Ok(entries) = std::fs::read_dir(self.links_dir()) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_prefix("sk_lookup-")?
                    .parse()
                    .ok()
            })
            .collect()
    }
}

/// `v<digits>`: a version's pin directory.
fn is_version_dir(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix('v'))
        .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_are_under_the_version_dir() {
        let layout = PinLayout::new("/sys/fs/bpf/weft");
        let v = format!("/sys/fs/bpf/weft/v{PIN_LAYOUT_VERSION}");
        assert_eq!(layout.map("STATS"), Path::new(&v).join("maps/STATS"));
        assert_eq!(layout.cgroup_link("x"), Path::new(&v).join("links/x"));
    }

    #[test]
    fn pins_of_other_versions_are_found() {
        let root = tempfile::tempdir().unwrap();
        let layout = PinLayout::new(root.path());
        assert!(layout.other_versions().is_empty(), "nothing pinned yet");
        std::fs::create_dir_all(layout.links_dir()).unwrap();
        assert!(
            layout.other_versions().is_empty(),
            "this version's own pins"
        );
        // Version 1 pinned straight under the root; a later one under v<N>.
        std::fs::create_dir(root.path().join("maps")).unwrap();
        std::fs::create_dir(root.path().join("v9")).unwrap();
        std::fs::create_dir(root.path().join("vx")).unwrap();
        assert_eq!(
            layout.other_versions(),
            vec![root.path().to_path_buf(), root.path().join("v9")]
        );
    }
}
