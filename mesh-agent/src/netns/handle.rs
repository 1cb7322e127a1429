//! Entering a pod's netns for the few microseconds it takes to create a socket.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
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
        let home = home_netns()?;
        setns(&*self.file, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        let result = f();
        // If returning home failed, this thread would run everything after it in
        // the pod's netns: nothing can be trusted then.
        if let Err(e) = setns(&*home, CloneFlags::CLONE_NEWNET) {
            panic!(
                "cannot return to the agent's netns after entering {}: {e}",
                self.path.display()
            );
        }
        Ok(result)
    }
}

thread_local! {
    /// The calling thread's own netns, opened on its first `Netns::run`.
    static HOME: std::cell::OnceCell<Rc<File>> = const { std::cell::OnceCell::new() };
}

/// The netns this thread returns to after `Netns::run`. Opened once per thread
/// (it was an `openat` + `close` of `/proc/thread-self/ns/net` per socket, ~2% of
/// an agent's CPU under a connection storm): `run` always brings the thread
/// back, and nothing else in the agent moves a thread between namespaces.
fn home_netns() -> io::Result<Rc<File>> {
    HOME.with(|home| {
        if let Some(file) = home.get() {
            return Ok(Rc::clone(file));
        }
        let file = Rc::new(File::open("/proc/thread-self/ns/net")?);
        Ok(Rc::clone(home.get_or_init(|| file)))
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    fn current_inode() -> u64 {
        std::fs::metadata("/proc/thread-self/ns/net")
            .expect("stat own netns")
            .ino()
    }

    /// Enters and leaves a namespace again and again on one thread (the home
    /// handle is cached after the first time). Needs root, as the agent does.
    #[test]
    fn run_enters_and_always_returns_home() {
        let pod = std::thread::spawn(|| {
            nix::sched::unshare(CloneFlags::CLONE_NEWNET).expect("unshare (run as root)");
            Netns::current().expect("open the new netns")
        })
        .join()
        .expect("netns thread");
        let pod_inode = pod.file().metadata().expect("stat").ino();
        std::thread::spawn(move || {
            let home = current_inode();
            assert_ne!(home, pod_inode);
            for _ in 0..3 {
                let inside = pod.run(current_inode).expect("enter");
                assert_eq!(inside, pod_inode);
                assert_eq!(current_inode(), home, "back home after run");
            }
        })
        .join()
        .expect("test thread");
    }
}
