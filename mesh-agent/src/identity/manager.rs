//! The certificates of this node's workloads: one per identity of an enrolled
//! pod, issued when the first such pod enrols, dropped with the last, renewed
//! at half life (with jitter) by a background task. A renewal that fails is
//! retried and reported at once, that is half a lifetime before expiry.
//!
//! The roots (the trust bundle) can change while the agent runs
//! ([`CertManager::set_roots`]): new handshakes use the new roots; a held
//! certificate whose root left the bundle is renewed at once.

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{Result, bail};
use arc_swap::ArcSwap;
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::tls::{client_config, provider, root_store, server_config};
use super::{CertificateAuthority, IssuedCert, SpiffeId};

#[derive(Clone, Debug)]
pub struct CertConfig {
    pub lifetime: Duration,
    /// Renewal happens at half life, moved by up to this fraction of the
    /// lifetime either way, so a node's certificates do not all renew at once.
    pub jitter: f64,
}

impl Default for CertConfig {
    fn default() -> Self {
        Self {
            lifetime: Duration::from_secs(24 * 3600),
            jitter: 0.05,
        }
    }
}

/// One identity's current certificate, ready for handshakes.
pub struct Credential {
    pub cert: Arc<IssuedCert>,
    pub server: Arc<ServerConfig>,
    renew_at: SystemTime,
    /// The roots `server` verifies clients with, and the client side verifies
    /// servers with.
    roots: Arc<RootCertStore>,
    /// The client side toward each destination identity, built at the first
    /// dial: a renewal or a new trust bundle makes a new `Credential`, so a
    /// cached config never outlives its certificate or roots.
    clients: Mutex<HashMap<SpiffeId, Arc<ClientConfig>>>,
}

/// Destination identities whose client side one credential keeps; past it
/// the cache starts over (a node's pods talk to far fewer).
const CLIENT_CONFIGS_PER_CREDENTIAL: usize = 1024;

impl Credential {
    fn new(
        cert: Arc<IssuedCert>,
        server: Arc<ServerConfig>,
        renew_at: SystemTime,
        roots: Arc<RootCertStore>,
    ) -> Self {
        Self {
            cert,
            server,
            renew_at,
            roots,
            clients: Mutex::default(),
        }
    }

    /// The client side from this certificate to a server that must prove
    /// `expected`, built once per destination identity (docs/security.md).
    fn client_config(
        &self,
        expected: &SpiffeId,
        provider: &Arc<CryptoProvider>,
    ) -> io::Result<Arc<ClientConfig>> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(config) = clients.get(expected) {
            return Ok(config.clone());
        }
        let config = client_config(&self.cert, self.roots.clone(), expected, provider.clone())?;
        if clients.len() >= CLIENT_CONFIGS_PER_CREDENTIAL {
            clients.clear();
        }
        clients.insert(expected.clone(), config.clone());
        Ok(config)
    }
}

struct Slot {
    current: Arc<Credential>,
    /// The last renewal error, until a renewal succeeds.
    failing: Option<String>,
    retry_at: SystemTime,
    /// Its chain does not end at a root of the bundle any more: renew now.
    orphaned: bool,
}

/// What `/certs` and `mesh-agent certs` show for one identity.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct CertStatus {
    pub identity: String,
    pub serial: String,
    /// Unix seconds.
    pub not_before: u64,
    pub not_after: u64,
    pub renew_at: u64,
    /// Negative once renewal is overdue (failing).
    pub seconds_to_renewal: i64,
    pub renewal_error: Option<String>,
}

pub struct CertManager {
    ca: Arc<dyn CertificateAuthority>,
    config: CertConfig,
    /// The trust bundle: the DER roots and the store built from them.
    roots: ArcSwap<Roots>,
    provider: Arc<CryptoProvider>,
    slots: Mutex<HashMap<SpiffeId, Slot>>,
    expiry: IntGaugeVec,
    renewals: IntCounterVec,
}

impl CertManager {
    pub fn new(
        ca: Arc<dyn CertificateAuthority>,
        config: CertConfig,
        registry: &Registry,
    ) -> Result<Arc<Self>> {
        let roots = Roots::new(ca.roots())?;
        let expiry = IntGaugeVec::new(
            Opts::new(
                "weft_certificate_expiry_timestamp_seconds",
                "When each workload certificate this agent holds expires (unix seconds)",
            ),
            &["identity"],
        )?;
        registry.register(Box::new(expiry.clone()))?;
        let renewals = IntCounterVec::new(
            Opts::new(
                "weft_certificate_renewals_total",
                "Workload certificate renewals, by result",
            ),
            &["result"],
        )?;
        registry.register(Box::new(renewals.clone()))?;
        for result in ["success", "failure"] {
            renewals.with_label_values(&[result]);
        }
        Ok(Arc::new(Self {
            ca,
            config,
            roots: ArcSwap::from_pointee(roots),
            provider: provider(),
            slots: Mutex::new(HashMap::new()),
            expiry,
            renewals,
        }))
    }

    /// Holds certificates for exactly `ids`: issues the missing ones now (the
    /// pods about to enrol need them), drops the others. Returns the ids that
    /// could not be issued, with why.
    pub fn set_wanted(&self, ids: impl IntoIterator<Item = SpiffeId>) -> Vec<(SpiffeId, String)> {
        let wanted: HashSet<SpiffeId> = ids.into_iter().collect();
        let missing: Vec<SpiffeId> = {
            let mut slots = self.lock();
            slots.retain(|id, _| {
                let keep = wanted.contains(id);
                if !keep {
                    let _ = self.expiry.remove_label_values(&[&id.to_string()]);
                }
                keep
            });
            wanted
                .iter()
                .filter(|id| !slots.contains_key(*id))
                .cloned()
                .collect()
        };
        let mut failed = Vec::new();
        for id in missing {
            match self.issue(&id) {
                Ok(credential) => {
                    info!(identity = %id, serial = %credential.cert.serial, "workload certificate issued");
                    self.install(&id, credential);
                }
                Err(e) => failed.push((id, format!("{e:#}"))),
            }
        }
        failed
    }

    /// The server side for the pod of identity `id`, with its current certificate.
    pub fn server_config(&self, id: &SpiffeId) -> Option<Arc<ServerConfig>> {
        self.lock().get(id).map(|s| s.current.server.clone())
    }

    /// The client side from `source` to a server that must prove `expected`.
    pub fn client_config(
        &self,
        source: &SpiffeId,
        expected: &SpiffeId,
    ) -> io::Result<Arc<ClientConfig>> {
        let credential = self
            .credential(source)
            .ok_or_else(|| io::Error::other(format!("no certificate held for {source}")))?;
        credential.client_config(expected, &self.provider)
    }

    /// The roots peers' chains must lead to now.
    pub fn roots(&self) -> Vec<CertificateDer<'static>> {
        self.roots.load().certs.clone()
    }

    /// Replaces the trust bundle (the CA's roots, e.g. from the trust-bundle
    /// ConfigMap during a root rotation). Connections made from now on verify
    /// peers against `roots`; open ones are not touched. The CA is told too
    /// (a remote CA verifies its server with them). A held certificate whose
    /// chain does not end at one of the new roots is renewed at once, so that
    /// peers which trust only the new roots accept it. An empty bundle is
    /// refused: it would make every handshake fail.
    pub fn set_roots(&self, roots: Vec<CertificateDer<'static>>) -> Result<()> {
        if roots.is_empty() {
            bail!("refusing an empty trust bundle: no peer could be verified");
        }
        if *self.roots.load().certs == roots {
            return Ok(());
        }
        let roots = Roots::new(roots)?;
        let count = roots.certs.len();
        let mut orphans = Vec::new();
        {
            let mut slots = self.lock();
            // The server side verifies clients with the roots it was built
            // with: rebuild every one before changing anything.
            let mut rebuilt = Vec::with_capacity(slots.len());
            for (id, slot) in slots.iter() {
                let current = &slot.current;
                let server =
                    server_config(&current.cert, roots.store.clone(), self.provider.clone())?;
                rebuilt.push((
                    id.clone(),
                    Arc::new(Credential::new(
                        current.cert.clone(),
                        server,
                        current.renew_at,
                        roots.store.clone(),
                    )),
                ));
            }
            for (id, credential) in rebuilt {
                let Some(slot) = slots.get_mut(&id) else {
                    continue;
                };
                if !roots.anchors(&credential.cert) {
                    slot.orphaned = true;
                    slot.retry_at = SystemTime::UNIX_EPOCH;
                    orphans.push(id.to_string());
                }
                slot.current = credential;
            }
            self.ca.roots_changed(&roots.certs);
            self.roots.store(Arc::new(roots));
        }
        info!(roots = count, "trust bundle replaced");
        if !orphans.is_empty() {
            warn!(identities = ?orphans, "certificates whose root left the trust bundle: renewing them now");
        }
        Ok(())
    }

    pub fn credential(&self, id: &SpiffeId) -> Option<Arc<Credential>> {
        self.lock().get(id).map(|s| s.current.clone())
    }

    pub fn list(&self) -> Vec<CertStatus> {
        let now = SystemTime::now();
        let mut list: Vec<CertStatus> = self
            .lock()
            .values()
            .map(|slot| {
                let c = &slot.current;
                CertStatus {
                    identity: c.cert.identity.to_string(),
                    serial: c.cert.serial.clone(),
                    not_before: unix(c.cert.not_before),
                    not_after: unix(c.cert.not_after),
                    renew_at: unix(c.renew_at),
                    seconds_to_renewal: signed_secs(now, c.renew_at),
                    renewal_error: slot.failing.clone(),
                }
            })
            .collect();
        list.sort_by(|a, b| a.identity.cmp(&b.identity));
        list
    }

    /// Renews due certificates until `shutdown`; checks at a tenth of the
    /// lifetime, at most every second.
    pub async fn run_renewals(self: Arc<Self>, shutdown: CancellationToken) {
        let tick = (self.config.lifetime / 10).min(Duration::from_secs(1));
        loop {
            tokio::select! {
                () = tokio::time::sleep(tick) => self.renew_due(SystemTime::now()),
                () = shutdown.cancelled() => return,
            }
        }
    }

    fn renew_due(&self, now: SystemTime) {
        let due: Vec<SpiffeId> = self
            .lock()
            .iter()
            .filter(|(_, s)| (s.orphaned || now >= s.current.renew_at) && now >= s.retry_at)
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            match self.issue(&id) {
                Ok(credential) => {
                    self.renewals.with_label_values(&["success"]).inc();
                    if !self.lock().contains_key(&id) {
                        continue; // its last pod left meanwhile
                    }
                    info!(identity = %id, serial = %credential.cert.serial, "workload certificate renewed");
                    self.install(&id, credential);
                }
                Err(e) => {
                    self.renewals.with_label_values(&["failure"]).inc();
                    let mut slots = self.lock();
                    let Some(slot) = slots.get_mut(&id) else {
                        continue;
                    };
                    let left = slot
                        .current
                        .cert
                        .not_after
                        .duration_since(now)
                        .unwrap_or_default();
                    warn!(identity = %id, error = %format!("{e:#}"), expires_in = ?left, "workload certificate renewal failed; the current one stays in use until it expires");
                    slot.failing = Some(format!("{e:#}"));
                    // Retry soon, but not in a tight loop.
                    slot.retry_at =
                        now + (self.config.lifetime / 20).max(Duration::from_millis(100));
                }
            }
        }
    }

    fn issue(&self, id: &SpiffeId) -> Result<Arc<Credential>> {
        let issued_at = SystemTime::now();
        let cert = Arc::new(self.ca.issue(id, self.config.lifetime)?);
        let roots = self.roots.load().store.clone();
        let server = server_config(&cert, roots.clone(), self.provider.clone())?;
        // Half of what is left, not of the (backdated) validity.
        let left = cert.not_after.duration_since(issued_at).unwrap_or_default();
        let renew_at = issued_at + jittered_half(left, self.config.jitter);
        Ok(Arc::new(Credential::new(cert, server, renew_at, roots)))
    }

    fn install(&self, id: &SpiffeId, mut credential: Arc<Credential>) {
        self.expiry
            .with_label_values(&[&id.to_string()])
            .set(unix(credential.cert.not_after) as i64);
        let mut slots = self.lock();
        // The bundle changed while the certificate was being issued: the
        // server side must verify clients with the new roots.
        let roots = self.roots.load().store.clone();
        if !Arc::ptr_eq(&roots, &credential.roots) {
            match server_config(&credential.cert, roots.clone(), self.provider.clone()) {
                Ok(server) => {
                    credential = Arc::new(Credential::new(
                        credential.cert.clone(),
                        server,
                        credential.renew_at,
                        roots,
                    ))
                }
                Err(e) => {
                    warn!(identity = %id, error = %e, "cannot rebuild the server side with the new trust bundle")
                }
            }
        }
        slots.insert(
            id.clone(),
            Slot {
                current: credential,
                failing: None,
                retry_at: SystemTime::UNIX_EPOCH,
                orphaned: false,
            },
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SpiffeId, Slot>> {
        // Each critical section is a few map operations; a panic cannot tear it.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A trust bundle: its roots as given and as a rustls store.
struct Roots {
    certs: Vec<CertificateDer<'static>>,
    store: Arc<RootCertStore>,
}

impl Roots {
    fn new(certs: Vec<CertificateDer<'static>>) -> Result<Self> {
        let store = root_store(&certs)?;
        Ok(Self { certs, store })
    }

    /// Whether `cert`'s chain ends at one of these roots (Weft's chains carry
    /// their root last).
    fn anchors(&self, cert: &IssuedCert) -> bool {
        cert.chain
            .last()
            .is_some_and(|last| self.certs.contains(last))
    }
}

/// Half of `lifetime`, moved by a random amount within ±`jitter` of it.
fn jittered_half(lifetime: Duration, jitter: f64) -> Duration {
    let spread = (rand::random::<f64>() * 2.0 - 1.0) * jitter.clamp(0.0, 0.4);
    lifetime.mul_f64(0.5 + spread)
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn signed_secs(now: SystemTime, at: SystemTime) -> i64 {
    match at.duration_since(now) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}
