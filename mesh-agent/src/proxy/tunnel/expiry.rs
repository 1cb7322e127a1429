//! The tunnel's transport tells when its peer's certificate expires, so a
//! connection ends with the identity it was authenticated with
//! (docs/security.md): TLS gives the notAfter, plain transports nothing.

use std::time::{Duration, SystemTime};

use tokio::io::DuplexStream;
use tokio::net::TcpStream;
use tokio_util::either::Either;

/// A transport that may carry a verified peer certificate.
pub trait PeerCertificate {
    /// The peer certificate's notAfter; `None` without one.
    fn peer_not_after(&self) -> Option<SystemTime>;

    /// Until when the connection's identities are valid: the earlier of both
    /// ends' certificates where the transport knows its own too (a client
    /// stops opening streams before then).
    fn valid_until(&self) -> Option<SystemTime> {
        self.peer_not_after()
    }
}

impl PeerCertificate for TcpStream {
    fn peer_not_after(&self) -> Option<SystemTime> {
        None
    }
}

impl PeerCertificate for DuplexStream {
    fn peer_not_after(&self) -> Option<SystemTime> {
        None
    }
}

impl<A: PeerCertificate, B: PeerCertificate> PeerCertificate for Either<A, B> {
    fn peer_not_after(&self) -> Option<SystemTime> {
        match self {
            Either::Left(a) => a.peer_not_after(),
            Either::Right(b) => b.peer_not_after(),
        }
    }

    fn valid_until(&self) -> Option<SystemTime> {
        match self {
            Either::Left(a) => a.valid_until(),
            Either::Right(b) => b.valid_until(),
        }
    }
}

/// When a client stops opening streams on a connection valid until
/// `valid_until`: a margin ahead of it (a quarter of what is left, at most
/// 5 s), so that streams opened just before are done when the server closes
/// the connection at the notAfter.
pub(crate) fn retire_before(valid_until: SystemTime, now: SystemTime) -> Duration {
    let left = time_left(valid_until, now);
    left - (left / 4).min(Duration::from_secs(5))
}

/// How long from `now` until `not_after` (zero once past).
pub(crate) fn time_left(not_after: SystemTime, now: SystemTime) -> Duration {
    not_after.duration_since(now).unwrap_or(Duration::ZERO)
}
