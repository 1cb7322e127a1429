//! `POST /v1/certificates`: authenticate the agent (TokenReview), read the CSR,
//! check the identity against the pods on the agent's node, sign. The I/O
//! (API server, signing) is here; the decisions are in `authorize` and `csr`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tracing::{info, warn};

use super::api::{IssueRequest, IssueResponse};
use super::authorize::{Refusal, ServiceAccountRef, authenticate, authorize};
use super::csr::check_csr;
use super::http::Issuer;
use super::limit::LogLimiter;
use super::review::{pods_on_node, review_token};
use super::signer::Signer;
use crate::identity::ca::to_pem;

/// Refusal lines per client and kind of refusal, at most one per window.
const LOG_WINDOW: Duration = Duration::from_secs(10);

pub struct CaService {
    pub client: kube::Client,
    pub signer: Arc<Signer>,
    pub audience: String,
    pub agent: ServiceAccountRef,
    pub trust_domain: String,
    pub max_lifetime: Duration,
    limiter: LogLimiter<(IpAddr, &'static str)>,
}

impl CaService {
    pub fn new(
        client: kube::Client,
        signer: Arc<Signer>,
        audience: String,
        agent: ServiceAccountRef,
        trust_domain: String,
        max_lifetime: Duration,
    ) -> Self {
        Self {
            client,
            signer,
            audience,
            agent,
            trust_domain,
            max_lifetime,
            limiter: LogLimiter::new(LOG_WINDOW),
        }
    }

    /// Handles one request from `peer`, logging the decision.
    pub async fn handle(
        &self,
        peer: IpAddr,
        bearer: Option<&str>,
        body: &[u8],
    ) -> Result<IssueResponse, Refusal> {
        let mut who = Who::default();
        let result = self.decide_and_sign(bearer, body, &mut who).await;
        match &result {
            Ok(answer) => info!(
                %peer,
                node = who.node.as_deref().unwrap_or("?"),
                agent_pod = who.pod.as_deref().unwrap_or("?"),
                identity = who.identity.as_deref().unwrap_or("?"),
                not_after = answer.not_after,
                "certificate issued"
            ),
            Err(refusal) => {
                if let Some(left_out) = self.limiter.admit(&(peer, refusal.kind()), Instant::now())
                {
                    warn!(
                        %peer,
                        status = refusal.status(),
                        node = who.node.as_deref().unwrap_or("?"),
                        identity = who.identity.as_deref().unwrap_or("?"),
                        reason = %refusal,
                        similar_refusals_not_logged = left_out,
                        "certificate refused"
                    );
                }
            }
        }
        result
    }

    async fn decide_and_sign(
        &self,
        bearer: Option<&str>,
        body: &[u8],
        who: &mut Who,
    ) -> Result<IssueResponse, Refusal> {
        let token = bearer.filter(|t| !t.is_empty()).ok_or_else(|| {
            Refusal::Unauthenticated(
                "no bearer token: send the agent's projected ServiceAccount token".into(),
            )
        })?;
        let request: IssueRequest = serde_json::from_slice(body).map_err(|e| {
            Refusal::BadRequest(format!("the body is not {{\"csr\": <PEM>}} JSON: {e}"))
        })?;
        let review = review_token(&self.client, token, &self.audience)
            .await
            .map_err(|e| Refusal::Unavailable(format!("cannot review the token: {e}")))?;
        let caller = authenticate(&review, &self.audience, &self.agent)?;
        who.node = Some(caller.node.clone());
        who.pod = caller.pod.clone();
        let csr = check_csr(&request.csr, &self.trust_domain)
            .map_err(|e| Refusal::BadRequest(e.to_string()))?;
        who.identity = Some(csr.identity.to_string());
        let lifetime = lifetime(request.lifetime_seconds, self.max_lifetime)?;
        let pods = pods_on_node(&self.client, csr.identity.namespace(), &caller.node)
            .await
            .map_err(|e| {
                Refusal::Unavailable(format!(
                    "cannot list the pods of node {:?}: {e}",
                    caller.node
                ))
            })?;
        authorize(&caller, &csr.identity, &pods)?;
        let keys = self.signer.keys();
        let signed = keys
            .ca
            .sign_request(&csr.identity, &csr.public_key, lifetime)
            .map_err(|e| Refusal::Unavailable(format!("{e:#}")))?;
        Ok(IssueResponse {
            chain: signed.chain.iter().map(to_pem).collect(),
            not_after: signed
                .not_after
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        })
    }
}

impl Issuer for CaService {
    fn issue(
        &self,
        peer: IpAddr,
        bearer: Option<&str>,
        body: &[u8],
    ) -> impl std::future::Future<Output = Result<IssueResponse, Refusal>> + Send {
        self.handle(peer, bearer, body)
    }
}

/// What is known of a request so far, for its log line.
#[derive(Default)]
struct Who {
    node: Option<String>,
    pod: Option<String>,
    identity: Option<String>,
}

/// The lifetime to sign for: what was asked, at most `max`; the cap when
/// nothing was asked.
pub fn lifetime(requested: Option<u64>, max: Duration) -> Result<Duration, Refusal> {
    match requested {
        None => Ok(max),
        Some(0) => Err(Refusal::BadRequest(
            "lifetime_seconds must be at least 1".into(),
        )),
        Some(s) => Ok(Duration::from_secs(s).min(max)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_are_capped() {
        let max = Duration::from_secs(86_400);
        assert_eq!(lifetime(None, max), Ok(max));
        assert_eq!(lifetime(Some(60), max), Ok(Duration::from_secs(60)));
        assert_eq!(lifetime(Some(10 * 86_400), max), Ok(max));
        assert_eq!(lifetime(Some(0), max).unwrap_err().status(), 400);
    }
}
