//! `mesh-agent routes` against a running lab agent (issue 14, deliverable 3):
//! the agent computes each route's Accepted and ResolvedRefs with the route
//! status functions the CA's writer uses, over the state it serves; a backend
//! in another namespace is RefNotPermitted until a ReferenceGrant there
//! permits it, and a grant added to the file applies on reload. Run as root.
//!
//! The file source refuses a route whose parent Service lacks the port (the
//! whole file, as every cross-resource error: docs/config.md), so
//! NoMatchingParent is only reachable from a cluster: the unit tests of
//! `status::local` build such a state the way the cluster source does, and
//! `kube_status` shows the CA writing it.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use lab::MeshLab;
use serde_json::Value;

const NODE: &str = "node-a";

/// `shop/to-payments`: a backend in namespace `payments`, with no grant there.
const TO_PAYMENTS: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: to-payments, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: frontend, port: 80}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /pay}}]
      backendRefs: [{name: payments, namespace: payments, port: 443}]
    - backendRefs: [{name: frontend, port: 80}]
"#;

/// `shop/to-inventory`: a backend in namespace `legacy`, permitted by
/// [`GRANT`] once it is added.
const TO_INVENTORY: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: to-inventory, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: reviews}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /stock}}]
      backendRefs: [{name: inventory, namespace: legacy, port: 8000}]
"#;

const GRANT: &str = r#"
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: shop-routes, namespace: legacy}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: shop}]
  to: [{group: "", kind: Service, name: inventory}]
"#;

fn routes_cli(mesh: &MeshLab, args: &[&str]) -> Result<String> {
    let mut all = vec!["routes"];
    all.extend_from_slice(args);
    let out = mesh.agent_cli(NODE, &all)?;
    if !out.status.success() {
        bail!(
            "mesh-agent {all:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

fn json(mesh: &MeshLab) -> Result<Value> {
    let text = routes_cli(mesh, &["-o", "json"])?;
    serde_json::from_str(&text).with_context(|| format!("not JSON: {text}"))
}

/// The route `namespace/name` of the JSON output.
fn route<'a>(out: &'a Value, name: &str) -> Result<&'a Value> {
    out["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| {
            format!(
                "{}/{}",
                r["namespace"].as_str().unwrap_or(""),
                r["name"].as_str().unwrap_or("")
            ) == name
        })
        .with_context(|| format!("no route {name} in {out:#}"))
}

/// (status, reason) of condition `key` (`accepted`, `resolvedRefs`) of the
/// route's only parent.
fn condition(out: &Value, name: &str, key: &str) -> Result<(String, String)> {
    let parents = route(out, name)?["parents"].as_array().context("parents")?;
    if parents.len() != 1 {
        bail!("{name}: {} parents: {parents:?}", parents.len());
    }
    let c = &parents[0][key];
    Ok((
        c["status"].as_str().unwrap_or_default().to_owned(),
        c["reason"].as_str().unwrap_or_default().to_owned(),
    ))
}

fn pair(status: &str, reason: &str) -> (String, String) {
    (status.to_owned(), reason.to_owned())
}

/// The table's line for `route` (its first column is the kind).
fn line<'a>(table: &'a str, route: &str) -> Result<&'a str> {
    table
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(route))
        .with_context(|| format!("no line for {route} in\n{table}"))
}

#[test]
fn routes_shows_the_status_verdicts_and_a_grant_permits_a_cross_namespace_backend() -> Result<()> {
    let mut mesh = MeshLab::start()?;
    mesh.config.add_yaml(TO_PAYMENTS)?;
    mesh.config.add_yaml(TO_INVENTORY)?;
    mesh.apply_config()?;

    let out = json(&mesh)?;
    let generation = out["generation"].as_u64().context("generation")?;
    // The example's route: attached to reviews:9080, every backend resolved.
    assert_eq!(
        condition(&out, "shop/reviews", "accepted")?,
        pair("True", "Accepted")
    );
    assert_eq!(
        condition(&out, "shop/reviews", "resolvedRefs")?,
        pair("True", "ResolvedRefs")
    );
    assert_eq!(route(&out, "shop/reviews")?["rules"], 2);
    assert_eq!(
        route(&out, "shop/reviews")?["parents"][0]["parentRef"]["port"],
        9080
    );
    // Backends in namespaces that grant nothing: accepted, not resolved.
    for name in ["shop/to-payments", "shop/to-inventory"] {
        assert_eq!(condition(&out, name, "accepted")?, pair("True", "Accepted"));
        assert_eq!(
            condition(&out, name, "resolvedRefs")?,
            pair("False", "RefNotPermitted"),
            "{name}"
        );
    }
    let message = route(&out, "shop/to-payments")?["parents"][0]["resolvedRefs"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.starts_with("spec.rules[0].backendRefs[0]: Service payments/payments is in another namespace and no ReferenceGrant there permits it: add one in namespace payments"),
        "{message}"
    );

    let table = routes_cli(&mesh, &[])?;
    assert!(
        table.starts_with("KIND  ")
            && table.lines().next().is_some_and(|h| {
                [
                    "ROUTE",
                    "PARENT",
                    "ACCEPTED",
                    "RESOLVED_REFS",
                    "RULES",
                    "MESSAGE",
                ]
                .iter()
                .all(|c| h.contains(c))
            }),
        "{table}"
    );
    let cols = |l: &str| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(
        cols(line(&table, "shop/reviews")?),
        [
            "HTTPRoute",
            "shop/reviews",
            "reviews:9080",
            "True",
            "True",
            "2"
        ]
    );
    let payments = line(&table, "shop/to-payments")?;
    assert_eq!(
        cols(payments)[..6],
        [
            "HTTPRoute",
            "shop/to-payments",
            "frontend:80",
            "True",
            "False/RefNotPermitted",
            "2"
        ]
    );
    assert!(
        payments.contains("Service payments/payments is in another namespace"),
        "{table}"
    );

    // The grant in `legacy` permits the inventory route, and only it.
    mesh.config.add_yaml(GRANT)?;
    mesh.apply_config()?;
    let out = json(&mesh)?;
    assert!(out["generation"].as_u64() > Some(generation));
    assert_eq!(
        condition(&out, "shop/to-inventory", "resolvedRefs")?,
        pair("True", "ResolvedRefs")
    );
    assert_eq!(
        condition(&out, "shop/to-payments", "resolvedRefs")?,
        pair("False", "RefNotPermitted")
    );
    let table = routes_cli(&mesh, &["-n", "shop"])?;
    assert_eq!(
        cols(line(&table, "shop/to-inventory")?),
        [
            "HTTPRoute",
            "shop/to-inventory",
            "reviews",
            "True",
            "True",
            "1"
        ]
    );

    // An invalid grant refuses the file: the last good state, grant included,
    // stays in force.
    let from = mesh.agent(NODE)?.log_len();
    mesh.config.add_yaml(
        &GRANT
            .replace("shop-routes", "bad")
            .replace("namespace: shop}", "namespace: Shop}"),
    )?;
    mesh.config.save()?;
    mesh.agent(NODE)?.wait_for_log(
        "ReferenceGrant legacy/bad: spec.from[0].namespace",
        from,
        Duration::from_secs(3),
    )?;
    assert_eq!(
        condition(&json(&mesh)?, "shop/to-inventory", "resolvedRefs")?,
        pair("True", "ResolvedRefs")
    );
    Ok(())
}
