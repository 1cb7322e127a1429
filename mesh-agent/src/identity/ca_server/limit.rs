//! Rate limiting of refusal log lines: a client that retries a refused
//! request every few milliseconds gets one line per window, with the count of
//! the lines left out. Pure: the caller gives the time.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys kept at most; older ones are forgotten first when full.
const MAX_KEYS: usize = 4096;

pub struct LogLimiter<K> {
    window: Duration,
    seen: Mutex<HashMap<K, Seen>>,
}

struct Seen {
    logged_at: Instant,
    suppressed: u64,
}

impl<K: Eq + Hash + Clone> LogLimiter<K> {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(n)`: log now, `n` lines were left out for `key` since the last
    /// one; `None`: leave this one out.
    pub fn admit(&self, key: &K, now: Instant) -> Option<u64> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = seen.get_mut(key) {
            if now.saturating_duration_since(entry.logged_at) < self.window {
                entry.suppressed += 1;
                return None;
            }
            let left_out = entry.suppressed;
            *entry = Seen {
                logged_at: now,
                suppressed: 0,
            };
            return Some(left_out);
        }
        if seen.len() >= MAX_KEYS {
            let window = self.window;
            seen.retain(|_, e| now.saturating_duration_since(e.logged_at) < window);
            if seen.len() >= MAX_KEYS {
                seen.clear();
            }
        }
        seen.insert(
            key.clone(),
            Seen {
                logged_at: now,
                suppressed: 0,
            },
        );
        Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_window_per_key_with_the_count_left_out() {
        let limiter = LogLimiter::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(limiter.admit(&"a", t0), Some(0));
        assert_eq!(limiter.admit(&"a", t0 + Duration::from_secs(1)), None);
        assert_eq!(limiter.admit(&"a", t0 + Duration::from_secs(2)), None);
        assert_eq!(limiter.admit(&"b", t0 + Duration::from_secs(2)), Some(0));
        assert_eq!(limiter.admit(&"a", t0 + Duration::from_secs(11)), Some(2));
        assert_eq!(limiter.admit(&"a", t0 + Duration::from_secs(12)), None);
    }

    #[test]
    fn the_table_stays_bounded() {
        let limiter = LogLimiter::new(Duration::from_secs(10));
        let t0 = Instant::now();
        for i in 0..(MAX_KEYS * 2) {
            assert_eq!(limiter.admit(&i, t0), Some(0));
        }
        assert!(limiter.seen.lock().unwrap().len() <= MAX_KEYS);
    }
}
