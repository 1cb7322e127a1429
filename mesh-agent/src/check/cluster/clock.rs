//! Clock skew: the API server's, the CA's and the agents' clocks (their HTTP
//! `Date` headers) against this machine's, and the CA's serving certificate
//! against this machine's clock. Workload certificates are backdated by 60 s,
//! so a node whose clock is behind the CA's by more than that refuses fresh
//! certificates as not yet valid; beyond 60 s the check fails.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::facts::{CertTimes, ClockReading};
use crate::check::Check;

pub const MAX_SKEW: Duration = Duration::from_secs(60);
const NAME: &str = "clock skew";
const FIX: &str = "synchronise the clocks with NTP (chrony or systemd-timesyncd) on the machines named: \
     workload certificates are backdated by only 60 s, so a clock that far off makes \
     fresh certificates not yet valid, or old ones still valid, for its peers";

/// `remote - local`, rounded to whole seconds. A `Date` header names the
/// second its clock was in, so the middle of that second is the estimate.
pub fn offset(reading: &ClockReading) -> i64 {
    let millis = |t: SystemTime| match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    };
    let diff = millis(reading.remote) + 500 - millis(reading.local);
    // Halves round toward zero.
    let secs = diff.abs() / 1000 + i64::from(diff.abs() % 1000 > 500);
    secs * diff.signum()
}

fn signed_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// The clocks the check could read, by who they are ("API server", "CA",
/// "node a"), and the CA's serving certificate if the handshake got it.
pub struct Clocks<'a> {
    pub readings: Vec<(String, ClockReading)>,
    /// Clocks that could not be read, with why (said in the detail).
    pub unread: Vec<(String, String)>,
    pub ca_serving: Option<&'a CertTimes>,
    pub now: SystemTime,
}

pub fn check(clocks: &Clocks<'_>) -> Check {
    let max = MAX_SKEW.as_secs() as i64;
    let mut problems = Vec::new();
    let offsets: Vec<(&str, i64)> = clocks
        .readings
        .iter()
        .map(|(who, r)| (who.as_str(), offset(r)))
        .collect();
    for (who, off) in &offsets {
        if off.abs() > max {
            problems.push(format!("{who}'s clock is {}", describe(*off)));
        }
    }
    // Two remote clocks may each be within bounds of ours yet far apart.
    if let (Some(low), Some(high)) = (
        offsets.iter().min_by_key(|(_, o)| *o),
        offsets.iter().max_by_key(|(_, o)| *o),
    ) && high.1 - low.1 > max
        && problems.is_empty()
    {
        problems.push(format!(
            "{}'s clock is {} s ahead of {}'s",
            high.0,
            high.1 - low.1,
            low.0
        ));
    }
    if let Some(cert) = clocks.ca_serving {
        let ahead = signed_secs(cert.not_before) - signed_secs(clocks.now);
        if ahead > max {
            problems.push(format!(
                "the CA's serving certificate starts {ahead} s in this machine's future"
            ));
        }
    }
    let mut seen: Vec<String> = offsets
        .iter()
        .map(|(who, off)| format!("{who} {off:+} s"))
        .collect();
    seen.extend(
        clocks
            .unread
            .iter()
            .map(|(who, why)| format!("{who}: {why}")),
    );
    let seen = if seen.is_empty() {
        "no clock could be read".to_owned()
    } else {
        seen.join("; ")
    };
    if !problems.is_empty() {
        return Check::fail(
            NAME,
            format!("{} (beyond {max} s; {seen})", problems.join("; ")),
            FIX,
        );
    }
    if offsets.is_empty() {
        return Check::unknown(
            NAME,
            seen,
            "the API server answers without a Date header: compare clocks on the nodes (chronyc tracking)",
        );
    }
    Check::pass(NAME, format!("against this machine's clock: {seen}"))
}

fn describe(offset: i64) -> String {
    if offset > 0 {
        format!("{offset} s ahead of this machine's")
    } else {
        format!("{} s behind this machine's", -offset)
    }
}

/// An HTTP `Date` (IMF-fixdate, RFC 9110: `Sun, 06 Nov 1994 08:49:37 GMT`).
pub fn parse_http_date(text: &str) -> Option<SystemTime> {
    let mut parts = text.split_ascii_whitespace();
    let _weekday = parts.next()?;
    let day: u32 = parts.next()?.parse().ok()?;
    let month = match parts.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
    if parts.next()? != "GMT" || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    let days = u64::try_from(days_from_civil(year, month, day)).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(days * 86_400 + h * 3600 + m * 60 + s))
}

/// `2026-05-01` (UTC), for certificate dates in details.
pub fn format_date(t: SystemTime) -> String {
    let days = signed_secs(t).div_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Verdict;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// A `Date` header `offset` s from a local clock in the middle of its second.
    fn reading(who: &str, offset: i64) -> (String, ClockReading) {
        let local = at(1_800_000_000) + Duration::from_millis(500);
        let remote = at((1_800_000_000 + offset) as u64);
        (who.into(), ClockReading { local, remote })
    }

    fn clocks(readings: Vec<(String, ClockReading)>) -> Clocks<'static> {
        Clocks {
            readings,
            unread: vec![],
            ca_serving: None,
            now: at(1_800_000_000),
        }
    }

    #[test]
    fn http_dates() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(at(784_111_777))
        );
        assert_eq!(
            parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"),
            Some(UNIX_EPOCH)
        );
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 CET"), None);
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), None);
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 25:49:37 GMT"), None);
        assert_eq!(parse_http_date(""), None);
        assert_eq!(format_date(at(784_111_777)), "1994-11-06");
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }

    #[test]
    fn offsets_take_the_middle_of_the_date_header_second() {
        let local = at(1_800_000_000) + Duration::from_millis(700);
        let r = |remote| ClockReading { local, remote };
        assert_eq!(offset(&r(at(1_800_000_000))), 0);
        assert_eq!(offset(&r(at(1_800_000_001))), 1);
        assert_eq!(offset(&r(at(1_799_999_999))), -1);
        assert_eq!(offset(&r(at(1_800_000_090))), 90);
    }

    #[test]
    fn within_a_minute_passes() {
        let c = check(&clocks(vec![
            reading("API server", 2),
            reading("node a", -30),
        ]));
        assert_eq!(c.result, Verdict::Pass, "{c:?}");
        assert!(c.detail.contains("API server +2 s; node a -30 s"), "{c:?}");
    }

    #[test]
    fn beyond_a_minute_fails_naming_the_clock_and_ntp() {
        let c = check(&clocks(vec![
            reading("API server", 0),
            reading("node b", -95),
        ]));
        assert_eq!(c.result, Verdict::Fail);
        assert!(
            c.detail
                .contains("node b's clock is 95 s behind this machine's"),
            "{c:?}"
        );
        assert!(c.fix.unwrap().contains("NTP"));
    }

    #[test]
    fn two_remote_clocks_far_apart_fail() {
        let c = check(&clocks(vec![reading("CA", 40), reading("node a", -40)]));
        assert_eq!(c.result, Verdict::Fail);
        assert!(
            c.detail.contains("CA's clock is 80 s ahead of node a's"),
            "{c:?}"
        );
    }

    #[test]
    fn a_serving_certificate_from_the_future_fails() {
        let cert = CertTimes {
            subject: "CN=weft-ca".into(),
            not_before: at(1_800_000_300),
            not_after: at(1_900_000_000),
        };
        let mut c = clocks(vec![reading("API server", 0)]);
        c.ca_serving = Some(&cert);
        let c = check(&c);
        assert_eq!(c.result, Verdict::Fail);
        assert!(c.detail.contains("starts 300 s in this machine's future"));
    }

    #[test]
    fn nothing_read_is_unknown_and_unread_clocks_are_said() {
        let mut c = clocks(vec![]);
        c.unread = vec![("agents".into(), "not reachable".into())];
        let c = check(&c);
        assert_eq!(c.result, Verdict::Unknown);
        assert!(c.detail.contains("agents: not reachable"));
    }
}
