//! Unique, short names: interface names are limited to 15 bytes.

use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A lab id unique across processes (pid) and within one (counter).
pub fn lab_id() -> String {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{}{:x}{:x}", crate::PREFIX, std::process::id() & 0xffff, n)
}
