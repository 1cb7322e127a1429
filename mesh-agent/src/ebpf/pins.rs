//! Where the agent pins its maps, programs and links under its bpffs directory.
//!
//! ```text
//! <bpffs-dir>/maps/<MAP_NAME>
//! <bpffs-dir>/progs/sk_lookup           (attached per pod netns)
//! <bpffs-dir>/links/<program>           (cgroup attachments)
//! <bpffs-dir>/links/sk_lookup-<netns cookie>
//! ```
//! Pinned links keep capture running while the agent restarts; removing a link's pin
//! (and dropping every fd) detaches it.

use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct PinLayout {
    root: PathBuf,
}

impl PinLayout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        PinLayout { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn maps_dir(&self) -> PathBuf {
        self.root.join("maps")
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.maps_dir().join(name)
    }

    pub fn progs_dir(&self) -> PathBuf {
        self.root.join("progs")
    }

    pub fn sk_lookup_program(&self) -> PathBuf {
        self.progs_dir().join("sk_lookup")
    }

    pub fn links_dir(&self) -> PathBuf {
        self.root.join("links")
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
