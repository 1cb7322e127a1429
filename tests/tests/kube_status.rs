//! Route and policy status on a real API server: the CA Deployment's replicas
//! (run from `manifests/` with its args, env and ServiceAccount, two of them)
//! elect a writer with the Lease `weft-ca-status`; it writes `status` on
//! HTTPRoutes (per parent Service: Accepted, ResolvedRefs; a backend in
//! another namespace RefNotPermitted until a ReferenceGrant there permits it)
//! and on Weft's policies (Accepted), read back here with `kubectl get -o json`.
//! A node agent's `mesh-agent routes` says the same for every route, refused
//! ones included. Killing the
//! leader hands the writing to the other replica. Run as root.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use lab::cluster::{CaService, Cluster, SYSTEM_NAMESPACE, install};
use lab::kube::ControlPlane;
use serde_json::Value;

const NS: &str = "status-shop";
/// Where the cross-namespace backend lives.
const OTHER_NS: &str = "status-other";
const LEASE: &str = "weft-ca-status";

/// Polls `f` until it returns `Some`, for up to `secs` seconds.
fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(value) = f()? {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("timed out after {secs} s waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn get(cp: &ControlPlane, resource: &str, name: &str) -> Result<Value> {
    let text = cp.kubectl(&["get", resource, name, "-n", NS, "-o", "json"])?;
    serde_json::from_str(&text).with_context(|| format!("not JSON: {text}"))
}

/// The condition `type_` of Weft's entry for parent Service `parent`, once written.
fn route_condition(
    cp: &ControlPlane,
    route: &str,
    parent: &str,
    type_: &str,
) -> Result<Option<Value>> {
    let obj = get(cp, "httproute", route)?;
    let entry = obj["status"]["parents"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["controllerName"] == "weft.dev/mesh" && p["parentRef"]["name"] == parent);
    Ok(entry.and_then(|e| condition(&e["conditions"], type_)))
}

fn condition(conditions: &Value, type_: &str) -> Option<Value> {
    conditions
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .cloned()
}

/// Waits for condition `type_` of `route`'s entry for `parent` to have
/// `status` and `reason`; returns the condition.
fn wait_route(
    cp: &ControlPlane,
    route: &str,
    parent: &str,
    type_: &str,
    status: &str,
    reason: &str,
) -> Result<Value> {
    let what = format!("HTTPRoute {route}: {type_}={status} ({reason}) for parent {parent}");
    wait_for(&what, 60, || {
        Ok(route_condition(cp, route, parent, type_)?
            .filter(|c| c["status"] == status && c["reason"] == reason))
    })
}

fn holder(cp: &ControlPlane) -> Result<String> {
    Ok(cp
        .kubectl(&[
            "get",
            "lease",
            LEASE,
            "-n",
            SYSTEM_NAMESPACE,
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ])?
        .trim()
        .to_owned())
}

fn route(name: &str, parent: &str, backend: &str) -> String {
    format!(
        r#"{{"apiVersion":"gateway.networking.k8s.io/v1","kind":"HTTPRoute","metadata":{{"name":"{name}","namespace":"{NS}"}},
"spec":{{"parentRefs":[{{"group":"","kind":"Service","name":"{parent}","port":9080}}],
"rules":[{{"backendRefs":[{{"name":"{backend}","port":9080}}]}}]}}}}"#
    )
}

fn service(name: &str) -> String {
    format!(
        r#"{{"apiVersion":"v1","kind":"Service","metadata":{{"name":"{name}","namespace":"{NS}"}},
"spec":{{"selector":{{"app":"{name}"}},"ports":[{{"name":"http","port":9080}}]}}}}"#
    )
}

/// A route's verdicts: (parent Service, Accepted reason, ResolvedRefs reason)
/// for each of Weft's parent entries, or ("-", the reason, "-") for a refused
/// route, as the CA wrote them.
type Verdicts = Vec<(String, String, String)>;

fn reason(conditions: &Value, type_: &str) -> String {
    condition(conditions, type_)
        .and_then(|c| c["reason"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn written_verdicts(cp: &ControlPlane, route: &str) -> Result<Verdicts> {
    let obj = get(cp, "httproute", route)?;
    let mut out: Verdicts = obj["status"]["parents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["controllerName"] == "weft.dev/mesh")
        .map(|p| {
            let accepted = reason(&p["conditions"], "Accepted");
            let resolved = reason(&p["conditions"], "ResolvedRefs");
            let parent = p["parentRef"]["name"].as_str().unwrap_or("").to_owned();
            // A refused route: the agent lists it without its parents.
            if accepted == "UnsupportedValue" {
                ("-".into(), accepted, "-".into())
            } else {
                (parent, accepted, resolved)
            }
        })
        .collect();
    out.sort();
    Ok(out)
}

/// The same, from `mesh-agent routes -o json` on node `a`, per route.
fn agent_verdicts(c: &Cluster, routes: &[&str]) -> Result<Vec<Verdicts>> {
    let out = c.agent_cli("a", &["routes", "-o", "json"])?;
    if !out.status.success() {
        return Ok(Vec::new()); // the agent is not serving yet
    }
    let v: Value = serde_json::from_slice(&out.stdout)?;
    let list = v["routes"].as_array().cloned().unwrap_or_default();
    Ok(routes
        .iter()
        .map(|name| {
            let mut out: Verdicts = list
                .iter()
                .filter(|r| r["namespace"] == NS && r["name"] == *name)
                .flat_map(|r| {
                    let refused = r["refused"]["reason"]
                        .as_str()
                        .map(|reason| ("-".to_owned(), reason.to_owned(), "-".to_owned()));
                    let parents = r["parents"].as_array().cloned().unwrap_or_default();
                    refused.into_iter().chain(parents.into_iter().map(|p| {
                        let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
                        (
                            s(&p["parentRef"]["name"]),
                            s(&p["accepted"]["reason"]),
                            s(&p["resolvedRefs"]["reason"]),
                        )
                    }))
                })
                .collect();
            out.sort();
            out
        })
        .collect())
}

fn log_of(ca: &CaService) -> String {
    std::fs::read_to_string(&ca.log).unwrap_or_default()
}

#[test]
fn the_elected_ca_writes_route_and_policy_status_and_another_takes_over() -> Result<()> {
    let shared = ControlPlane::shared()?;
    let mut c = Cluster::new(shared.clone(), &["a"])?;
    let ca_dir = install(c.cp())?;
    let dir = c.dir();
    let klab = &c.klab;
    let replica = CaService::start_replica(klab.cp(), &dir, &ca_dir, "weft-ca-lab-2", |cmd| {
        klab.spawn(cmd)
    })?;
    c.klab.create_namespace(NS, &[])?;
    c.klab.create_namespace(OTHER_NS, &[])?;
    let cp = &*shared;
    for s in ["reviews", "reviews-v1"] {
        cp.apply_yaml(&service(s))?;
    }
    cp.apply_yaml(&route("good", "reviews", "reviews-v1"))?;
    cp.apply_yaml(&route("missing-backend", "reviews", "reviews-v9"))?;
    cp.apply_yaml(&route("orphan", "ghost", "reviews-v1"))?;
    // Valid for the CRD's schema (port is optional), refused by the validator.
    cp.apply_yaml(
        &route("no-port", "reviews", "reviews-v1").replace(r#","port":9080}]}]"#, "}]}]"),
    )?;
    cp.apply_yaml(&format!(
        r#"{{"apiVersion":"v1","kind":"Service","metadata":{{"name":"ratings","namespace":"{OTHER_NS}"}},
"spec":{{"selector":{{"app":"ratings"}},"ports":[{{"name":"http","port":9080}}]}}}}"#
    ))?;
    cp.apply_yaml(&route("remote", "reviews", "reviews-v1").replace(
        r#"{"name":"reviews-v1","port":9080}"#,
        &format!(r#"{{"name":"ratings","namespace":"{OTHER_NS}","port":9080}}"#),
    ))?;
    // Valid for the CRD's schema (a string), refused by the agents' validator.
    cp.apply_yaml(&format!(
        r#"{{"apiVersion":"weft.dev/v1alpha1","kind":"AuthorizationPolicy","metadata":{{"name":"bad-cidr","namespace":"{NS}"}},
"spec":{{"action":"DENY","rules":[{{"from":[{{"source":{{"ipBlocks":["10.0.0.0/33"]}}}}]}}]}}}}"#
    ))?;
    cp.apply_yaml(&format!(
        r#"{{"apiVersion":"weft.dev/v1alpha1","kind":"AuthorizationPolicy","metadata":{{"name":"deny-other","namespace":"{NS}"}},
"spec":{{"action":"DENY","rules":[{{"from":[{{"source":{{"namespaces":["other"]}}}}]}}]}}}}"#
    ))?;

    let result = (|| -> Result<()> {
        // A valid route to an existing Service.
        let accepted = wait_route(cp, "good", "reviews", "Accepted", "True", "Accepted")?;
        wait_route(
            cp,
            "good",
            "reviews",
            "ResolvedRefs",
            "True",
            "ResolvedRefs",
        )?;
        let good = get(cp, "httproute", "good")?;
        assert_eq!(
            accepted["observedGeneration"],
            good["metadata"]["generation"]
        );
        assert_eq!(
            good["status"]["parents"][0]["parentRef"],
            serde_json::json!({"group": "", "kind": "Service", "name": "reviews", "port": 9080})
        );
        // Its backend Service is missing: accepted, references not resolved.
        wait_route(
            cp,
            "missing-backend",
            "reviews",
            "Accepted",
            "True",
            "Accepted",
        )?;
        let refs = wait_route(
            cp,
            "missing-backend",
            "reviews",
            "ResolvedRefs",
            "False",
            "BackendNotFound",
        )?;
        assert!(
            refs["message"]
                .as_str()
                .is_some_and(|m| m.contains("reviews-v9 does not exist")),
            "{refs}"
        );
        // Its parent Service is missing.
        wait_route(
            cp,
            "orphan",
            "ghost",
            "Accepted",
            "False",
            "NoMatchingParent",
        )?;
        // A backend in another namespace: not permitted without a grant
        // there; a ReferenceGrant in that namespace permits it.
        let refs = wait_route(
            cp,
            "remote",
            "reviews",
            "ResolvedRefs",
            "False",
            "RefNotPermitted",
        )?;
        assert!(
            refs["message"]
                .as_str()
                .is_some_and(|m| m.contains(&format!(
                    "Service {OTHER_NS}/ratings is in another namespace"
                ))),
            "{refs}"
        );
        cp.apply_yaml(&format!(
            r#"{{"apiVersion":"gateway.networking.k8s.io/v1beta1","kind":"ReferenceGrant","metadata":{{"name":"shop-routes","namespace":"{OTHER_NS}"}},
"spec":{{"from":[{{"group":"gateway.networking.k8s.io","kind":"HTTPRoute","namespace":"{NS}"}}],"to":[{{"group":"","kind":"Service"}}]}}}}"#
        ))?;
        wait_route(
            cp,
            "remote",
            "reviews",
            "ResolvedRefs",
            "True",
            "ResolvedRefs",
        )?;
        wait_route(
            cp,
            "no-port",
            "reviews",
            "Accepted",
            "False",
            "UnsupportedValue",
        )?;
        // The node agent computes the same verdicts over its own state.
        c.start_agent("a")?;
        let routes = ["good", "missing-backend", "orphan", "remote", "no-port"];
        let mut last = (Vec::new(), Vec::new());
        wait_for(
            "mesh-agent routes to agree with the written status",
            30,
            || {
                let written = routes
                    .iter()
                    .map(|r| written_verdicts(cp, r))
                    .collect::<Result<Vec<_>>>()?;
                let local = agent_verdicts(&c, &routes)?;
                let agree = written == local;
                last = (written, local);
                Ok(agree.then_some(()))
            },
        )
        .map_err(|e| e.context(format!("written, then the agent's: {last:#?}")))?;
        let table = String::from_utf8(c.agent_cli("a", &["routes", "-n", NS])?.stdout)?;
        assert!(
            table.lines().any(
                |l| l.contains(&format!("{NS}/orphan")) && l.contains("False/NoMatchingParent")
            ),
            "{table}"
        );
        // The invalid policy says why; the valid one is accepted.
        let refused =
            wait_for("AuthorizationPolicy bad-cidr: Accepted=False", 60, || {
                let p = get(cp, "authorizationpolicy", "bad-cidr")?;
                Ok(condition(&p["status"]["conditions"], "Accepted")
                    .filter(|c| c["status"] == "False"))
            })?;
        assert_eq!(refused["reason"], "Invalid");
        assert!(
            refused["message"]
                .as_str()
                .is_some_and(|m| m.contains("spec.rules[0].from[0].source.ipBlocks[0]")),
            "{refused}"
        );
        wait_for("AuthorizationPolicy deny-other: Accepted=True", 60, || {
            let p = get(cp, "authorizationpolicy", "deny-other")?;
            Ok(condition(&p["status"]["conditions"], "Accepted").filter(|c| c["status"] == "True"))
        })?;
        // The printer column shows it.
        let table = cp.kubectl(&["get", "authorizationpolicies", "-n", NS])?;
        assert!(
            table
                .lines()
                .any(|l| l.starts_with("bad-cidr") && l.contains("False")),
            "{table}"
        );

        // The missing backend appears: the references resolve.
        cp.apply_yaml(&service("reviews-v9"))?;
        wait_route(
            cp,
            "missing-backend",
            "reviews",
            "ResolvedRefs",
            "True",
            "ResolvedRefs",
        )?;

        // Kill the leader: the other replica takes over and writes new status.
        let leader = holder(cp)?;
        let (dead, survivor) = match leader.as_str() {
            "weft-ca-lab" => (&c.ca, &replica),
            "weft-ca-lab-2" => (&replica, &c.ca),
            other => bail!("the Lease is held by {other:?}, not one of the two replicas"),
        };
        let survivor_name = if leader == "weft-ca-lab" {
            "weft-ca-lab-2"
        } else {
            "weft-ca-lab"
        };
        let good_version = get(cp, "httproute", "good")?["metadata"]["resourceVersion"].clone();
        c.klab.lab().kill(dead.pid)?;
        let killed = Instant::now();
        cp.apply_yaml(&route("after-failover", "reviews", "reviews-v1"))?;
        wait_route(
            cp,
            "after-failover",
            "reviews",
            "Accepted",
            "True",
            "Accepted",
        )
        .map_err(|e| {
            e.context(format!(
                "the surviving replica's log:\n{}",
                log_of(survivor)
            ))
        })?;
        eprintln!(
            "status written by the new leader {:?} after the old one was killed",
            killed.elapsed()
        );
        assert_eq!(holder(cp)?, survivor_name);
        assert!(log_of(survivor).contains("elected: this replica writes route and policy status"));
        // What was already right is not written again by the new leader.
        assert_eq!(
            get(cp, "httproute", "good")?["metadata"]["resourceVersion"],
            good_version,
            "the new leader rewrote an unchanged status"
        );

        // A leader stopped with SIGTERM (a rollout, a drain) frees the Lease: a
        // third replica takes over at its next look, not a lease duration later.
        let third =
            CaService::start_replica(cp, &dir, &ca_dir, "weft-ca-lab-3", |cmd| c.klab.spawn(cmd))?;
        let pid = i32::try_from(survivor.pid)?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGTERM)?;
        let stopped = Instant::now();
        wait_for("weft-ca-lab-3 to hold the Lease", 20, || {
            Ok((holder(cp)? == "weft-ca-lab-3").then_some(()))
        })
        .map_err(|e| e.context(format!("the third replica's log:\n{}", log_of(&third))))?;
        let handover = stopped.elapsed();
        eprintln!("Lease handed over {handover:?} after SIGTERM");
        assert!(
            handover < Duration::from_secs(12),
            "{handover:?}: the Lease was not released"
        );
        assert!(log_of(survivor).contains("status Lease released"));
        cp.apply_yaml(&route("after-handover", "reviews", "reviews-v1"))?;
        wait_route(
            cp,
            "after-handover",
            "reviews",
            "Accepted",
            "True",
            "Accepted",
        )?;
        Ok(())
    })();
    result.map_err(|e| {
        e.context(format!(
            "CA log ({}):\n{}\nreplica log:\n{}",
            c.ca.log.display(),
            log_of(&c.ca),
            log_of(&replica)
        ))
    })
}
