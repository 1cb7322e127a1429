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
}

/// How long from `now` until `not_after` (zero once past).
pub(crate) fn time_left(not_after: SystemTime, now: SystemTime) -> Duration {
    not_after.duration_since(now).unwrap_or(Duration::ZERO)
}
