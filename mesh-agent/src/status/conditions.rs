//! `metav1.Condition`s as Kubernetes keeps them: `lastTransitionTime` moves only
//! when the condition's status does, `observedGeneration` is the generation the
//! condition was computed from. Pure: the caller gives the time.

use std::time::SystemTime;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// Messages are cut to this many bytes: the CRDs allow 32 KiB, and a status is
/// read by people (the agents' logs and `mesh-agent status` have every error).
pub const MAX_MESSAGE: usize = 4096;

/// A condition before its times: what the decision functions produce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Verdict {
    pub fn yes(type_: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        Verdict {
            type_,
            status: true,
            reason,
            message: message.into(),
        }
    }

    pub fn no(type_: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        Verdict {
            type_,
            status: false,
            reason,
            message: message.into(),
        }
    }

    /// The condition, keeping the transition time of the condition of the same
    /// type in `previous` if its status is the same.
    pub fn condition(
        &self,
        generation: Option<i64>,
        previous: &[Condition],
        now: &Time,
    ) -> Condition {
        let status = if self.status { "True" } else { "False" };
        let last_transition_time = previous
            .iter()
            .find(|c| c.type_ == self.type_ && c.status == status)
            .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
        Condition {
            type_: self.type_.to_owned(),
            status: status.to_owned(),
            reason: self.reason.to_owned(),
            message: truncate(&self.message),
            observed_generation: generation,
            last_transition_time,
        }
    }
}

/// `message` cut to [`MAX_MESSAGE`] bytes at a character boundary, marked `…`.
pub fn truncate(message: &str) -> String {
    if message.len() <= MAX_MESSAGE {
        return message.to_owned();
    }
    let mut end = MAX_MESSAGE - '…'.len_utf8();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

/// `now` as a condition time: whole seconds, as `metav1.Time` is written, so
/// that a time read back compares equal to the one written.
pub fn time(now: SystemTime) -> Time {
    let seconds = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    Time(Timestamp::from_second(seconds).unwrap_or(Timestamp::UNIX_EPOCH))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).expect("a valid time"))
    }

    #[test]
    fn the_transition_time_moves_only_with_the_status() {
        let accepted = Verdict::yes("Accepted", "Accepted", "ok");
        let first = accepted.condition(Some(1), &[], &at(100));
        assert_eq!(first.last_transition_time, at(100));
        assert_eq!(first.observed_generation, Some(1));
        let again = Verdict::yes("Accepted", "Accepted", "still ok").condition(
            Some(2),
            std::slice::from_ref(&first),
            &at(200),
        );
        assert_eq!(again.last_transition_time, at(100), "same status: kept");
        assert_eq!(
            (again.message.as_str(), again.observed_generation),
            ("still ok", Some(2))
        );
        let refused = Verdict::no("Accepted", "Invalid", "bad").condition(
            Some(3),
            std::slice::from_ref(&again),
            &at(300),
        );
        assert_eq!(
            (refused.status.as_str(), refused.last_transition_time),
            ("False", at(300))
        );
    }

    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        let long = "é".repeat(MAX_MESSAGE);
        let cut = truncate(&long);
        assert!(
            cut.len() <= MAX_MESSAGE && cut.ends_with('…'),
            "{}",
            cut.len()
        );
        assert_eq!(truncate("short"), "short");
    }

    #[test]
    fn times_are_whole_seconds() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(5_750);
        assert_eq!(time(t), at(5));
    }
}
