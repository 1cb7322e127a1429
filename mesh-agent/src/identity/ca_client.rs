//! The agent's client of the CA service (`mesh-agent ca serve`): the key pair
//! is made here and never leaves the node; the CA gets a CSR naming the
//! identity and the agent's projected ServiceAccount token (read from its file
//! at each request: the kubelet rotates it). The CA's serving certificate is
//! verified against the trust bundle, which changes at run time
//! ([`CertificateAuthority::roots_changed`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256, SanType};
use rustls::ClientConfig;
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::ca::pem_certificates;
use super::ca_server::api::{CERTIFICATES_PATH, ErrorResponse, IssueRequest, IssueResponse};
use super::tls::{provider, root_store};
use super::{CertificateAuthority, IssuedCert, SpiffeId};

/// Where a projected token for the CA's audience is mounted in the agent's pod.
pub const DEFAULT_TOKEN_FILE: &str = "/var/run/secrets/weft.dev/ca-token/token";
pub const DEFAULT_CA_ADDRESS: &str = "https://weft-ca.weft-system.svc:15012";
/// The largest answer the client reads (a chain of two certificates is ~2 KiB).
const MAX_RESPONSE: usize = 256 * 1024;

/// How to reach the CA service.
#[derive(Clone, Debug)]
pub struct RemoteCaOptions {
    /// `https://host[:port]` (port 443 if none); the host is the name the
    /// CA's certificate must carry (a DNS name or an IP address).
    pub address: String,
    /// The projected ServiceAccount token (audience `weft-ca`), bound to the
    /// agent's pod.
    pub token_file: PathBuf,
    /// The trust bundle at start (e.g. [`super::fetch_trust_bundle`]).
    pub roots: Vec<CertificateDer<'static>>,
    /// For one whole request: connect, TLS, answer.
    pub timeout: Duration,
}

/// Why a certificate could not be had; `Refused` carries the CA's reason.
#[derive(Debug, thiserror::Error)]
pub enum CaClientError {
    #[error("read the CA token {path}: {source}")]
    Token {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot reach the CA at {address}: {why}")]
    Unreachable { address: String, why: String },
    #[error("the CA at {address} refused ({status}): {reason}")]
    Refused {
        address: String,
        status: u16,
        reason: String,
    },
    #[error("the CA at {address} answered something unusable: {why}")]
    BadAnswer { address: String, why: String },
    #[error("no answer from the CA at {address} within {timeout:?}")]
    Timeout { address: String, timeout: Duration },
    #[error("make the key pair or CSR: {0}")]
    Csr(String),
}

/// A CA reached over HTTPS.
pub struct RemoteCa {
    address: String,
    host: String,
    port: u16,
    server_name: ServerName<'static>,
    token_file: PathBuf,
    timeout: Duration,
    roots: ArcSwap<Vec<CertificateDer<'static>>>,
    tls: ArcSwap<ClientConfig>,
}

/// The CA service as the agent's [`CertificateAuthority`].
pub fn remote_authority(opts: RemoteCaOptions) -> anyhow::Result<Arc<dyn CertificateAuthority>> {
    Ok(Arc::new(RemoteCa::new(opts)?))
}

impl RemoteCa {
    pub fn new(opts: RemoteCaOptions) -> anyhow::Result<Self> {
        let uri: Uri = opts
            .address
            .parse()
            .with_context(|| format!("CA address {:?}", opts.address))?;
        if uri.scheme_str() != Some("https") {
            anyhow::bail!("CA address {:?}: must be https://host[:port]", opts.address);
        }
        let host = uri
            .host()
            .with_context(|| format!("CA address {:?}: no host", opts.address))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let server_name = ServerName::try_from(host.clone())
            .with_context(|| format!("CA address {:?}: not a DNS name or IP", opts.address))?;
        let tls = tls_config(&opts.roots)?;
        Ok(Self {
            address: opts.address.trim_end_matches('/').to_owned(),
            port: uri.port_u16().unwrap_or(443),
            host,
            server_name,
            token_file: opts.token_file,
            timeout: opts.timeout,
            roots: ArcSwap::from_pointee(opts.roots),
            tls: ArcSwap::from_pointee(tls),
        })
    }

    /// Asks the CA for a certificate for `identity`.
    pub async fn request(
        &self,
        identity: &SpiffeId,
        lifetime: Duration,
    ) -> Result<IssuedCert, CaClientError> {
        let token =
            std::fs::read_to_string(&self.token_file).map_err(|source| CaClientError::Token {
                path: self.token_file.clone(),
                source,
            })?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|e| CaClientError::Csr(e.to_string()))?;
        let csr = csr_pem(identity, &key).map_err(|e| CaClientError::Csr(format!("{e:#}")))?;
        let body = serde_json::to_vec(&IssueRequest {
            csr,
            lifetime_seconds: Some(lifetime.as_secs().max(1)),
        })
        .map_err(|e| CaClientError::Csr(e.to_string()))?;
        let (status, answer) = tokio::time::timeout(self.timeout, self.post(token.trim(), body))
            .await
            .map_err(|_| CaClientError::Timeout {
                address: self.address.clone(),
                timeout: self.timeout,
            })??;
        if status != StatusCode::OK {
            let reason = serde_json::from_slice::<ErrorResponse>(&answer)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&answer).trim().to_owned());
            return Err(CaClientError::Refused {
                address: self.address.clone(),
                status: status.as_u16(),
                reason,
            });
        }
        let bad = |why: String| CaClientError::BadAnswer {
            address: self.address.clone(),
            why,
        };
        let answer: IssueResponse =
            serde_json::from_slice(&answer).map_err(|e| bad(e.to_string()))?;
        let chain = answer
            .chain
            .iter()
            .map(|pem| pem_certificates(pem))
            .collect::<anyhow::Result<Vec<_>>>()
            .map_err(|e| bad(format!("{e:#}")))?
            .concat();
        let leaf = check_leaf(&chain, identity, &key).map_err(bad)?;
        Ok(IssuedCert {
            identity: identity.clone(),
            chain,
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
            serial: leaf.serial,
            not_before: leaf.not_before,
            not_after: leaf.not_after,
        })
    }

    async fn post(&self, token: &str, body: Vec<u8>) -> Result<(StatusCode, Bytes), CaClientError> {
        let unreachable = |why: String| CaClientError::Unreachable {
            address: self.address.clone(),
            why,
        };
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let tls = TlsConnector::from(self.tls.load_full())
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| unreachable(format!("TLS: {}", super::tls::explain(e))))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let driver = tokio::spawn(connection);
        let request = Request::builder()
            .method(Method::POST)
            .uri(CERTIFICATES_PATH)
            .header(HOST, format!("{}:{}", self.host, self.port))
            .header(CONTENT_TYPE, "application/json")
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| unreachable(e.to_string()))?;
        let result = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_RESPONSE)
                .collect()
                .await
                .map_err(|e| unreachable(format!("read the answer: {e}")))?
                .to_bytes();
            Ok((status, body))
        }
        .await;
        driver.abort();
        result
    }
}

impl CertificateAuthority for RemoteCa {
    fn issue(&self, identity: &SpiffeId, lifetime: Duration) -> anyhow::Result<IssuedCert> {
        Ok(block_on(self.request(identity, lifetime))??)
    }

    fn roots(&self) -> Vec<CertificateDer<'static>> {
        self.roots.load().to_vec()
    }

    fn roots_changed(&self, roots: &[CertificateDer<'static>]) {
        match tls_config(roots) {
            Ok(config) => {
                self.tls.store(Arc::new(config));
                self.roots.store(Arc::new(roots.to_vec()));
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "the new trust bundle cannot verify the CA; keeping the previous one for it")
            }
        }
    }
}

/// WebPKI verification of the CA's server certificate (its DNS or IP name)
/// against the trust bundle; TLS 1.3.
fn tls_config(roots: &[CertificateDer<'static>]) -> anyhow::Result<ClientConfig> {
    let store = root_store(roots)?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A CSR whose only name is `identity`, signed with `key`.
pub fn csr_pem(identity: &SpiffeId, key: &KeyPair) -> anyhow::Result<String> {
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![SanType::URI(identity.to_string().try_into()?)];
    Ok(params.serialize_request(key)?.pem()?)
}

struct Leaf {
    serial: String,
    not_before: SystemTime,
    not_after: SystemTime,
}

/// The answer must be a certificate for our key and the identity asked for.
fn check_leaf(
    chain: &[CertificateDer<'static>],
    identity: &SpiffeId,
    key: &KeyPair,
) -> Result<Leaf, String> {
    let der = chain.first().ok_or("an empty chain")?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| format!("the leaf: {e}"))?;
    if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err("the certificate is not for the key of our request".into());
    }
    let uris: Vec<String> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::URI(u) => Some((*u).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if uris != [identity.to_string()] {
        return Err(format!(
            "the certificate names {uris:?}, we asked for {identity}"
        ));
    }
    let time = |t: x509_parser::time::ASN1Time| {
        SystemTime::UNIX_EPOCH + Duration::from_secs(t.timestamp().max(0) as u64)
    };
    Ok(Leaf {
        serial: cert.raw_serial_as_string().replace(':', ""),
        not_before: time(cert.validity().not_before),
        not_after: time(cert.validity().not_after),
    })
}

/// Runs `f` to completion from synchronous code. On a multi-thread runtime the
/// worker hands its other tasks to the rest of the pool while it waits
/// (`block_in_place`); elsewhere (a current-thread runtime, no runtime) the
/// request runs on a thread of its own.
fn block_on<F>(f: F) -> anyhow::Result<F::Output>
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    use tokio::runtime::{Handle, RuntimeFlavor};
    if let Ok(handle) = Handle::try_current()
        && handle.runtime_flavor() == RuntimeFlavor::MultiThread
    {
        return Ok(tokio::task::block_in_place(|| handle.block_on(f)));
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("start a runtime for the CA request")?;
            Ok(runtime.block_on(f))
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}
