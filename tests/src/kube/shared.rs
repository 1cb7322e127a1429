//! One control plane per test binary, started by the first test that asks and
//! stopped when the process exits (atexit), so tests share the start-up cost.
//! Tests that stop the API server start their own instead.

use std::sync::{Arc, Mutex};

use anyhow::Result;

use super::control_plane::ControlPlane;

static SHARED: Mutex<Option<Arc<ControlPlane>>> = Mutex::new(None);

impl ControlPlane {
    /// The test binary's shared control plane. Tests using it must keep their
    /// objects apart (unique namespaces and node names) and not stop it.
    pub fn shared() -> Result<Arc<ControlPlane>> {
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(cp) = shared.as_ref() {
            return Ok(cp.clone());
        }
        let cp = Arc::new(ControlPlane::start()?);
        if shared_never_registered() {
            // SAFETY: registers a plain `extern "C"` function with no arguments;
            // it runs once, at exit, after the tests' threads are done.
            unsafe {
                libc::atexit(stop_shared);
            }
        }
        *shared = Some(cp.clone());
        Ok(cp)
    }
}

fn shared_never_registered() -> bool {
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    let mut first = false;
    REGISTERED.call_once(|| first = true);
    first
}

/// Kills the shared control plane's processes and removes its files, whoever
/// still holds a reference.
extern "C" fn stop_shared() {
    let taken = SHARED.lock().map(|mut s| s.take()).unwrap_or(None);
    if let Some(cp) = taken {
        cp.shutdown();
    }
}
