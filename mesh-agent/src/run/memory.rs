//! Giving freed memory back to the system.
//!
//! A burst of connections leaves glibc's per-thread arenas holding the freed
//! copy buffers and stream state; glibc only returns the top of each arena on its
//! own, so a node agent that once carried a burst would keep that memory for good.
//! `malloc_trim(0)` releases every free page of every arena; it is cheap when
//! there is little to release, so it simply runs on a timer.

use std::time::Duration;

const INTERVAL: Duration = Duration::from_secs(5);

pub async fn release_freed_memory_periodically() {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // SAFETY: malloc_trim has no preconditions; it only touches the allocator's own state.
        unsafe { libc::malloc_trim(0) };
    }
}
