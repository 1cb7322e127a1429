//! Asking the API server who a token belongs to (`TokenReview`, for our
//! audience only) and which pods run on a node.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{ListParams, PostParams};

use super::authorize::{PodOnNode, TokenReviewResult};

/// Reviews `token` for `audience`. An error is the API server's (the CA
/// answers 503); a token it does not accept is a result with
/// `authenticated: false`.
pub async fn review_token(
    client: &kube::Client,
    token: &str,
    audience: &str,
) -> Result<TokenReviewResult, kube::Error> {
    let request = TokenReview {
        spec: TokenReviewSpec {
            token: token.to_owned(),
            audiences: Some(vec![audience.to_owned()]),
        },
        ..TokenReview::default()
    };
    let answer = Api::<TokenReview>::all(client.clone())
        .create(&PostParams::default(), &request)
        .await?;
    let status = answer.status.unwrap_or_default();
    let user = status.user.unwrap_or_default();
    Ok(TokenReviewResult {
        authenticated: status.authenticated.unwrap_or(false),
        audiences: status.audiences.unwrap_or_default(),
        username: user.username.unwrap_or_default(),
        extra: user.extra.unwrap_or_default(),
        error: status.error,
    })
}

/// The pods of `namespace` scheduled on `node`.
pub async fn pods_on_node(
    client: &kube::Client,
    namespace: &str,
    node: &str,
) -> Result<Vec<PodOnNode>, kube::Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let list = api
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await?;
    Ok(list.items.into_iter().map(summary).collect())
}

fn summary(pod: Pod) -> PodOnNode {
    let spec = pod.spec.unwrap_or_default();
    PodOnNode {
        namespace: pod.metadata.namespace.unwrap_or_default(),
        name: pod.metadata.name.unwrap_or_default(),
        service_account: spec
            .service_account_name
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".to_owned()),
        phase: pod.status.and_then(|s| s.phase),
    }
}
