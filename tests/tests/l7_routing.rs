//! L7 routing end to end (issue 14): real curl in lab pods, HTTP parsed by
//! the source node's agent, each request sent by the Service's HTTPRoute to
//! an endpoint it chose, through the mTLS tunnel; the lab's echo servers say
//! which pod answered and what they received.

use anyhow::Result;
use lab::MeshLab;
use lab::http::{curl, curl_many, pods_of};

/// The `reviews` Service (examples/mesh.yaml): its route sends `x-canary:
/// true` to reviews-v2, the rest 90/10 to reviews-v1/reviews-v2.
const REVIEWS: &str = "http://10.96.0.20:9080";

fn is_v2(pod: &str) -> bool {
    pod.starts_with("reviews-v2-")
}

fn is_v1(pod: &str) -> bool {
    pod.starts_with("reviews-v1-")
}

#[test]
fn a_header_match_and_a_weighted_split_route_each_request() -> Result<()> {
    let mesh = MeshLab::start()?;
    let client = mesh.pod("frontend-7d9f-a")?;

    let canary = curl(
        client,
        &["-H", "x-canary: true", &format!("{REVIEWS}/ratings?x=1")],
    )?;
    assert_eq!(canary.status, 200, "{canary:?}");
    let echo = canary.echo()?;
    assert!(is_v2(echo["pod"].as_str().unwrap_or_default()), "{echo}");
    assert_eq!(echo["path"], "/ratings?x=1");
    assert_eq!(
        echo["headers"]["host"], "10.96.0.20:9080",
        "Host passes unchanged"
    );
    assert!(
        echo["headers"]["x-request-id"]
            .as_str()
            .is_some_and(|id| id.len() == 36),
        "x-request-id added: {echo}"
    );

    // 2,000 requests on kept-alive connections: a χ² test of the 90/10 split
    // (1 degree of freedom; 10.83 is p = 0.001).
    let mut pods = Vec::new();
    for _ in 0..4 {
        pods.extend(pods_of(&curl_many(
            client,
            &format!("{REVIEWS}/"),
            500,
            &[],
        )?));
    }
    let v1 = pods.iter().filter(|p| is_v1(p)).count() as f64;
    let v2 = pods.iter().filter(|p| is_v2(p)).count() as f64;
    assert_eq!(
        v1 + v2,
        2000.0,
        "every request answered by reviews: {pods:?}"
    );
    let (e1, e2) = (1800.0, 200.0);
    let chi2 = (v1 - e1).powi(2) / e1 + (v2 - e2).powi(2) / e2;
    assert!(chi2 < 10.83, "v1 {v1}, v2 {v2}: χ² {chi2:.2}");
    // Both reviews-v1 pods (one per node) take a share: per-request balancing.
    let v1_pods: std::collections::BTreeSet<_> = pods.iter().filter(|p| is_v1(p)).collect();
    assert_eq!(v1_pods.len(), 2, "{v1_pods:?}");
    Ok(())
}
