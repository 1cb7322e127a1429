//! Entering a pod's netns for the few microseconds it takes to create a socket.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::sched::{CloneFlags, setns};

/// An open handle on a network namespace (e.g. `/run/netns/<name>` or
/// `/proc/<pid>/ns/net`). Holding it keeps the namespace alive.
#[derive(Clone, Debug)]
pub struct Netns {
    path: PathBuf,
    file: Arc<File>,
}

impl Netns {
    pub fn open(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("open netns {}: {e}", path.display())))?;
        Ok(Netns {
            path,
            file: Arc::new(file),
        })
    }

    /// The calling thread's current network namespace.
    pub fn current() -> io::Result<Self> {
        Self::open("/proc/thread-self/ns/net")
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// Runs `f` with the calling thread inside this netns, then moves the thread
    /// back to the netns it was in. `f` must not block or yield: it runs on
    /// whichever thread calls this (a Tokio worker, typically), and only socket
    /// creation belongs inside.
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> io::Result<T> {
        let home = File::open("/proc/thread-self/ns/net")?;
        setns(&*self.file, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        let result = f();
        // If returning home failed, this thread would run everything after it in
        // the pod's netns: nothing can be trusted then.
        if let Err(e) = setns(&home, CloneFlags::CLONE_NEWNET) {
            panic!(
                "cannot return to the agent's netns after entering {}: {e}",
                self.path.display()
            );
        }
        Ok(result)
    }
}
