//! Reading the installed mesh from the API server: the CRDs, the DaemonSet,
//! the nodes and the agents' pods, the CA's Deployment, key Secret (metadata
//! only) and trust bundle. Every read is independent: one that fails becomes
//! a [`Fetched`] that says why, and the checks that need it say `unknown`.

use std::future::Future;
use std::time::SystemTime;

use http::Request;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::ListParams;
use kube::client::Body;
use kube::{Api, Client};

use super::clock::parse_http_date;
use super::facts::{ClockReading, Fetched};
use super::{ca, rollout};
use crate::identity::DEFAULT_TRUST_BUNDLE;

pub const GATEWAY_CRDS: [&str; 2] = [
    "httproutes.gateway.networking.k8s.io",
    "grpcroutes.gateway.networking.k8s.io",
];
const AGENT_SELECTOR: &str = "app.kubernetes.io/name=weft-agent";

/// Why the API server itself could not be asked: nothing else is checked.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ApiDown(pub String);

/// The API server's `gitVersion` and clock (`GET /version`).
pub async fn version(client: &Client) -> Result<(String, Option<ClockReading>), ApiDown> {
    let request = Request::get("/version")
        .body(Body::empty())
        .map_err(|e| ApiDown(e.to_string()))?;
    let response = client
        .send(request)
        .await
        .map_err(|e| ApiDown(format!("{e}")))?;
    let local = SystemTime::now();
    let status = response.status();
    let remote = response
        .headers()
        .get(http::header::DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_http_date);
    let body = response
        .into_body()
        .collect_bytes()
        .await
        .map_err(|e| ApiDown(format!("read /version: {e}")))?;
    if !status.is_success() {
        return Err(ApiDown(format!(
            "GET /version answered {status}: {}",
            String::from_utf8_lossy(&body).trim()
        )));
    }
    let info: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| ApiDown(format!("GET /version: not JSON: {e}")))?;
    let version = info["gitVersion"]
        .as_str()
        .unwrap_or("(unknown)")
        .to_owned();
    Ok((version, remote.map(|remote| ClockReading { local, remote })))
}

/// A read's outcome, with 404 as `Missing` and 403 as `Forbidden`.
pub async fn fetched<T>(read: impl Future<Output = kube::Result<Option<T>>>) -> Fetched<T> {
    match read.await {
        Ok(Some(t)) => Fetched::Found(t),
        Ok(None) => Fetched::Missing,
        Err(kube::Error::Api(status)) if status.code == 404 => Fetched::Missing,
        Err(kube::Error::Api(status)) if status.code == 403 => Fetched::Forbidden(status.message),
        Err(kube::Error::Api(status)) => {
            Fetched::Failed(format!("{} ({})", status.message, status.code))
        }
        Err(e) => Fetched::Failed(e.to_string()),
    }
}

pub async fn crd(client: &Client, name: &str) -> Fetched<CustomResourceDefinition> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    fetched(api.get_opt(name)).await
}

pub async fn daemonset(client: &Client, ns: &str) -> Fetched<DaemonSet> {
    let api: Api<DaemonSet> = Api::namespaced(client.clone(), ns);
    fetched(api.get_opt(rollout::DAEMONSET)).await
}

pub async fn nodes(client: &Client) -> Fetched<Vec<Node>> {
    let api: Api<Node> = Api::all(client.clone());
    fetched(async { Ok(Some(api.list(&ListParams::default()).await?.items)) }).await
}

pub async fn agent_pods(client: &Client, ns: &str) -> Fetched<Vec<Pod>> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let params = ListParams::default().labels(AGENT_SELECTOR);
    fetched(async { Ok(Some(api.list(&params).await?.items)) }).await
}

pub async fn ca_deployment(client: &Client, ns: &str) -> Fetched<Deployment> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    fetched(api.get_opt(ca::DEPLOYMENT)).await
}

/// Whether the CA key Secret exists; only its metadata is read.
pub async fn ca_key(client: &Client, ns: &str) -> Fetched<()> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    fetched(async { Ok(api.get_metadata_opt(ca::KEY_SECRET).await?.map(|_| ())) }).await
}

pub async fn trust_bundle(client: &Client, ns: &str) -> Fetched<ConfigMap> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    fetched(api.get_opt(DEFAULT_TRUST_BUNDLE)).await
}

pub async fn ca_service(client: &Client, ns: &str) -> Fetched<Service> {
    let api: Api<Service> = Api::namespaced(client.clone(), ns);
    fetched(api.get_opt(ca::SERVICE)).await
}
