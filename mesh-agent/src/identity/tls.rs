//! rustls for the HBONE tunnel: TLS 1.3 only, ALPN `h2`, mutual
//! authentication by SPIFFE id. The server requires a client certificate that
//! chains to the roots and reads the client's id from it; the client accepts
//! the server only if its certificate chains to the roots *and* names the id
//! the state says runs at the destination IP (no DNS names, no SNI).

mod buffered;
mod client_tunnel;

use std::fmt;
use std::io;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig,
    SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::{TlsAcceptor, TlsConnector, client, server};

pub use buffered::Buffered;
pub use client_tunnel::ClientTunnelTls;

use super::{IssuedCert, SpiffeId};
use crate::proxy::tunnel::PeerCertificate;

pub const ALPN_H2: &[u8] = b"h2";

/// The crypto provider of every Weft TLS connection: ring, chosen by
/// measurement (`cargo bench -p mesh-agent --bench tls_provider`: mutual-TLS
/// handshakes with P-256 certificates and bulk data, one thread, in memory).
/// On our 2-core machines ring did 1,320–1,780 handshakes/s and 1,070–1,130
/// MiB/s against aws-lc-rs's 1,050–1,200 and 630–900 (aws-lc built without its
/// assembly, as it is where no cmake/nasm is installed), and it needs no C
/// library build.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Makes [`provider`] the process's default too, for libraries that build
/// rustls configs without naming a provider (kube-client): with more than one
/// provider compiled in (test builds), they would panic. Idempotent.
pub fn install_process_provider() {
    let _ = CryptoProvider::install_default((*provider()).clone());
}

/// A root store from DER certificates.
pub fn root_store(roots: &[CertificateDer<'static>]) -> io::Result<Arc<RootCertStore>> {
    let mut store = RootCertStore::empty();
    for root in roots {
        store
            .add(root.clone())
            .map_err(|e| io::Error::other(format!("bad CA certificate: {e}")))?;
    }
    Ok(Arc::new(store))
}

/// The server side of the tunnel for the pod that owns `cert`.
pub fn server_config(
    cert: &IssuedCert,
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
) -> io::Result<Arc<ServerConfig>> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(io::Error::other)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(io::Error::other)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(cert.chain.clone(), cert.private_key())
        .map_err(io::Error::other)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    no_server_resumption(&mut config);
    Ok(Arc::new(config))
}

/// No session tickets and no session cache: a resumed session would skip the
/// certificate check, and so the identity and expiry checks made at every full
/// handshake (docs/security.md).
fn no_server_resumption(config: &mut ServerConfig) {
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
}

/// The client side of the tunnel from the pod that owns `cert` to a server
/// that must prove `expected`.
pub fn client_config(
    cert: &IssuedCert,
    roots: Arc<RootCertStore>,
    expected: &SpiffeId,
    provider: Arc<CryptoProvider>,
) -> io::Result<Arc<ClientConfig>> {
    let verifier = Arc::new(IdentityVerifier {
        roots,
        expected: expected.clone(),
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(io::Error::other)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(cert.chain.clone(), cert.private_key())
        .map_err(io::Error::other)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    // Every connection verifies the server's certificate afresh (as the
    // server's side, above).
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// Checks the chain like WebPKI, then the SPIFFE id instead of a DNS name.
#[derive(Debug)]
struct IdentityVerifier {
    roots: Arc<RootCertStore>,
    expected: SpiffeId,
    algorithms: WebPkiSupportedAlgorithms,
}

/// Why a peer's certificate was not accepted, in words for the log.
#[derive(Debug)]
struct WrongIdentity {
    presented: String,
    expected: SpiffeId,
}

impl fmt::Display for WrongIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "server presented {}, expected {} (the identity the state says runs at that address)",
            self.presented, self.expected
        )
    }
}

impl std::error::Error for WrongIdentity {}

impl ServerCertVerifier for IdentityVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        let presented = spiffe_uri(end_entity).unwrap_or_else(|| "no SPIFFE id".to_owned());
        if presented != self.expected.to_string() {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                rustls::OtherError(Arc::new(WrongIdentity {
                    presented,
                    expected: self.expected.clone(),
                })),
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The URI SAN of a certificate, if it has one.
fn spiffe_uri(der: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|name| match name {
        x509_parser::extensions::GeneralName::URI(uri) => Some((*uri).to_owned()),
        _ => None,
    })
}

/// The verified SPIFFE id of the peer of a finished handshake.
pub fn peer_identity(conn: &rustls::CommonState) -> io::Result<SpiffeId> {
    let leaf = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the peer presented no certificate",
            )
        })?;
    let uri = spiffe_uri(leaf).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the peer's certificate has no URI SAN",
        )
    })?;
    uri.parse()
        .map_err(|e| io::Error::new(io::ErrorKind::PermissionDenied, format!("{e}")))
}

/// When the peer's certificate stops being valid (its notAfter), if the
/// transport has a verified peer certificate.
pub fn peer_not_after(conn: &rustls::CommonState) -> Option<SystemTime> {
    let leaf = conn.peer_certificates()?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
    let secs = u64::try_from(cert.validity().not_after.timestamp()).unwrap_or(0);
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

impl<T> PeerCertificate for server::TlsStream<T> {
    fn peer_not_after(&self) -> Option<SystemTime> {
        peer_not_after(self.get_ref().1)
    }
}

impl<T> PeerCertificate for client::TlsStream<T> {
    fn peer_not_after(&self) -> Option<SystemTime> {
        peer_not_after(self.get_ref().1)
    }
}

/// Opens TLS to a tunnel server that must prove the id `config` expects.
pub async fn connect<T>(
    io: T,
    config: Arc<ClientConfig>,
) -> io::Result<client::TlsStream<Buffered<T>>>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    // Never sent (no SNI for an IP) and never checked: the verifier checks the id.
    let name = ServerName::IpAddress(std::net::Ipv4Addr::UNSPECIFIED.into());
    let mut stream = TlsConnector::from(config)
        .connect(name, Buffered::new(io))
        .await
        .map_err(explain)?;
    stream.get_mut().0.start_buffering();
    Ok(stream)
}

/// Accepts TLS from a tunnel client; gives the client's verified id.
pub async fn accept<T>(
    io: T,
    config: Arc<ServerConfig>,
) -> io::Result<(server::TlsStream<Buffered<T>>, SpiffeId)>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut stream = TlsAcceptor::from(config)
        .accept(Buffered::new(io))
        .await
        .map_err(explain)?;
    let id = peer_identity(stream.get_ref().1)?;
    // Only an authenticated peer gets the read buffer (docs/security.md).
    stream.get_mut().0.start_buffering();
    Ok((stream, id))
}

/// Puts a handshake failure in words an operator can act on.
pub fn explain(e: io::Error) -> io::Error {
    let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return e;
    };
    let why = match tls {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                "the peer's certificate is not signed by a trusted CA".to_owned()
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                format!("the peer's certificate has expired ({c:?})")
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                format!("the peer's certificate is not valid yet ({c:?})")
            }
            CertificateError::Other(other) => other.to_string(),
            other => format!("the peer's certificate is invalid: {other:?}"),
        },
        rustls::Error::NoCertificatesPresented => {
            "the peer presented no certificate (mutual TLS is required)".to_owned()
        }
        rustls::Error::AlertReceived(alert) => {
            format!(
                "the peer refused the handshake (alert {alert:?}): it did not accept our certificate"
            )
        }
        other => format!("TLS handshake failed: {other}"),
    };
    io::Error::new(io::ErrorKind::PermissionDenied, why)
}

#[cfg(test)]
mod tests;
