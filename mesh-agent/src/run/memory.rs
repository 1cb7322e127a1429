//! The agent's memory: glibc's malloc, kept to few arenas, and freed memory
//! given back to the system (docs/architecture.md, "Limits").
//!
//! glibc gives every thread that allocates an arena of its own, up to eight
//! per core: the workers, tokio's blocking threads (config loads, the
//! /node_pods scan) and the log threads each keep freed chunks in their own
//! heap, which no other thread reuses. A cap makes them share. Two suffice for
//! the agent's few threads (the thread caches take the small, frequent
//! allocations without a lock), and glibc stays the allocator: no C library
//! to build and no allocator's own background thread.
//!
//! A burst of connections leaves the arenas holding the freed copy buffers and
//! stream state; glibc only returns the top of each arena on its own, so a node
//! agent that once carried a burst would keep that memory for good.
//! `malloc_trim(0)` releases every free page of every arena; it is cheap when
//! there is little to release, so it simply runs on a timer.

use std::time::Duration;

const INTERVAL: Duration = Duration::from_secs(5);

/// Arenas malloc may make (`M_ARENA_MAX`).
pub const MAX_ARENAS: i32 = 2;

/// Caps malloc's arenas at [`MAX_ARENAS`], unless the environment sets
/// glibc's own (`MALLOC_ARENA_MAX`, `GLIBC_TUNABLES=glibc.malloc.arena_max=`):
/// an operator's choice, and how the bench compares. Call before any thread
/// is started: arenas already made stay.
pub fn limit_arenas() {
    let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() || tunables.contains("arena_max") {
        return;
    }
    // SAFETY: mallopt only sets a parameter of the allocator's own state.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, MAX_ARENAS) };
}

pub async fn release_freed_memory_periodically() {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // SAFETY: malloc_trim has no preconditions; it only touches the allocator's own state.
        unsafe { libc::malloc_trim(0) };
    }
}

#[cfg(test)]
mod tests {
    /// The arenas malloc has made so far (`<heap nr=…>` in `malloc_info`).
    fn arenas() -> usize {
        let (mut buf, mut len): (*mut libc::c_char, libc::size_t) = (std::ptr::null_mut(), 0);
        // SAFETY: open_memstream writes the buffer and its length on fclose;
        // the buffer is read, then freed with free(), as its manual says.
        unsafe {
            let stream = libc::open_memstream(&mut buf, &mut len);
            assert!(!stream.is_null());
            assert_eq!(libc::malloc_info(0, stream), 0);
            libc::fclose(stream);
            let text = std::slice::from_raw_parts(buf.cast::<u8>(), len);
            let count = String::from_utf8_lossy(text).matches("<heap nr=").count();
            libc::free(buf.cast());
            count
        }
    }

    /// Eight threads allocating at once share the capped arenas. Runs in a
    /// process of its own (this test binary, re-run on this test alone), since
    /// the cap holds only for arenas not made yet.
    #[test]
    fn threads_share_the_capped_arenas() {
        const CHILD: &str = "WEFT_ARENA_TEST_CHILD";
        if std::env::var_os(CHILD).is_none() {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "run::memory::tests::threads_share_the_capped_arenas",
                ])
                .args(["--test-threads", "1", "--nocapture"])
                .env(CHILD, "1")
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{text}");
            assert!(text.contains("1 passed"), "{text}");
            return;
        }
        super::limit_arenas();
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    let held: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8; 4096]).collect();
                    barrier.wait(); // all eight hold memory at once
                    held.len()
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), 64);
        }
        let made = arenas();
        assert!(
            made <= super::MAX_ARENAS as usize,
            "{made} arenas for 8 threads"
        );
    }
}
