//! The CRDs: Weft's own present, established and equal to what this
//! `mesh-agent crds` generates (versions, schemas, subresources, printer
//! columns); Gateway API's route CRDs present, or a warning (routes are then
//! ignored).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, CustomResourceDefinitionVersion,
};
use serde_json::Value;

use super::facts::Fetched;
use crate::check::Check;

/// How many differences a failing line names.
const SHOWN: usize = 3;
const GATEWAY_API_INSTALL: &str = "kubectl apply --server-side -f https://github.com/kubernetes-sigs/gateway-api/releases/download/v1.4.0/standard-install.yaml";

/// One line per Weft CRD.
pub fn weft(
    crds: &[(CustomResourceDefinition, Fetched<CustomResourceDefinition>)],
    cli_version: &str,
) -> Vec<Check> {
    let fix = format!(
        "if the agents run mesh-agent {cli_version}, apply its CRDs: \
         `mesh-agent crds | kubectl apply --server-side -f -` (or `kubectl apply --server-side -k manifests/` \
         of that release); if they run another version, check with that version's mesh-agent"
    );
    crds.iter()
        .map(|(expected, served)| {
            let name = expected.metadata.name.clone().unwrap_or_default();
            let label = format!("CRD {name}");
            match served {
                Fetched::Missing => Check::fail(
                    label,
                    format!(
                        "not installed: {} objects cannot be created",
                        expected.spec.names.kind
                    ),
                    fix.clone(),
                ),
                Fetched::Found(served) => {
                    if !established(served) {
                        return Check::fail(
                            label,
                            "present but not Established: the API server does not serve it",
                            format!("kubectl describe crd {name} (its conditions say why)"),
                        );
                    }
                    let drift = drift(expected, served);
                    if drift.is_empty() {
                        Check::pass(
                            label,
                            format!(
                                "matches this mesh-agent ({cli_version}): {}",
                                versions(served)
                            ),
                        )
                    } else {
                        let more = drift.len().saturating_sub(SHOWN);
                        let mut shown = drift[..drift.len().min(SHOWN)].join("; ");
                        if more > 0 {
                            shown.push_str(&format!("; and {more} more"));
                        }
                        Check::fail(
                            label,
                            format!("differs from this mesh-agent's ({cli_version}): {shown}"),
                            fix.clone(),
                        )
                    }
                }
                other => Check::unknown(
                    label,
                    other.unreadable().unwrap_or_default(),
                    "check with credentials that may get customresourcedefinitions",
                ),
            }
        })
        .collect()
}

/// One line for Gateway API's HTTPRoute and GRPCRoute CRDs.
pub fn gateway(crds: &[(String, Fetched<CustomResourceDefinition>)]) -> Check {
    const LABEL: &str = "Gateway API routes";
    let mut missing = Vec::new();
    let mut no_v1 = Vec::new();
    let mut unreadable = Vec::new();
    for (name, served) in crds {
        let short = name.split('.').next().unwrap_or(name).to_owned();
        match served {
            Fetched::Found(crd) => {
                let v1 = crd.spec.versions.iter().any(|v| v.name == "v1" && v.served);
                if !v1 || !established(crd) {
                    no_v1.push(short);
                }
            }
            Fetched::Missing => missing.push(short),
            other => unreadable.push(format!(
                "{short}: {}",
                other.unreadable().unwrap_or_default()
            )),
        }
    }
    if !missing.is_empty() || !no_v1.is_empty() {
        let mut what = Vec::new();
        if !missing.is_empty() {
            what.push(format!("{} not installed", missing.join(", ")));
        }
        if !no_v1.is_empty() {
            what.push(format!("{} not served at v1", no_v1.join(", ")));
        }
        return Check::warn(
            LABEL,
            format!(
                "{}: such routes are ignored (the agents treat the kind as empty)",
                what.join("; ")
            ),
            format!(
                "install Gateway API v1.1.0 or later (standard channel): {GATEWAY_API_INSTALL}"
            ),
        );
    }
    if !unreadable.is_empty() {
        return Check::unknown(
            LABEL,
            unreadable.join("; "),
            "check with credentials that may get customresourcedefinitions",
        );
    }
    let names: Vec<&str> = crds
        .iter()
        .map(|(n, _)| n.split('.').next().unwrap_or(n))
        .collect();
    Check::pass(
        LABEL,
        format!(
            "{} served at gateway.networking.k8s.io/v1",
            names.join(", ")
        ),
    )
}

fn established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
}

fn versions(crd: &CustomResourceDefinition) -> String {
    let names: Vec<String> = crd
        .spec
        .versions
        .iter()
        .map(|v| {
            if v.storage {
                format!("{} (storage)", v.name)
            } else {
                v.name.clone()
            }
        })
        .collect();
    format!("version {}", names.join(", "))
}

/// What differs between the CRD this binary generates and the one served:
/// kind, scope, and per version the flags, schema, subresources and printer
/// columns. Each entry names a path and how it differs.
pub fn drift(
    expected: &CustomResourceDefinition,
    served: &CustomResourceDefinition,
) -> Vec<String> {
    let mut out = Vec::new();
    let (e, s) = (&expected.spec, &served.spec);
    if e.group != s.group || e.names.kind != s.names.kind || e.scope != s.scope {
        out.push(format!(
            "spec: {} {} ({}) in the cluster, {} {} ({}) here",
            s.group, s.names.kind, s.scope, e.group, e.names.kind, e.scope
        ));
    }
    for ev in &e.versions {
        let Some(sv) = s.versions.iter().find(|v| v.name == ev.name) else {
            out.push(format!("version {} is not in the cluster", ev.name));
            continue;
        };
        if (ev.served, ev.storage) != (sv.served, sv.storage) {
            out.push(format!(
                "version {}: served={} storage={} in the cluster, served={} storage={} here",
                ev.name, sv.served, sv.storage, ev.served, ev.storage
            ));
        }
        let (ej, sj) = (version_value(ev), version_value(sv));
        diff(&format!("versions[{}]", ev.name), &ej, &sj, &mut out);
    }
    for sv in &s.versions {
        if !e.versions.iter().any(|v| v.name == sv.name) {
            out.push(format!(
                "version {} is in the cluster but not in this mesh-agent (another release's CRD?)",
                sv.name
            ));
        }
    }
    out
}

/// The parts of a version compared in depth.
fn version_value(v: &CustomResourceDefinitionVersion) -> Value {
    let mut value = serde_json::json!({
        "schema": v.schema,
        "subresources": v.subresources,
        "additionalPrinterColumns": v.additional_printer_columns,
    });
    strip_defaults(&mut value);
    value
}

/// Fields the API server may add with their default values, and nulls, do
/// not count as differences.
fn strip_defaults(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|k, v| !(v.is_null() || (k == "priority" && v == &Value::from(0))));
            map.values_mut().for_each(strip_defaults);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_defaults),
        _ => {}
    }
}

/// Appends a line per differing leaf or subtree: missing in the cluster,
/// not in this binary, or different.
fn diff(path: &str, expected: &Value, served: &Value, out: &mut Vec<String>) {
    match (expected, served) {
        (Value::Object(e), Value::Object(s)) => {
            for (k, ev) in e {
                let p = format!("{path}.{k}");
                match s.get(k) {
                    Some(sv) => diff(&p, ev, sv, out),
                    None => out.push(format!("{p}: missing in the cluster")),
                }
            }
            for k in s.keys().filter(|k| !e.contains_key(*k)) {
                out.push(format!("{path}.{k}: in the cluster only"));
            }
        }
        (Value::Array(e), Value::Array(s)) if e.len() == s.len() => {
            for (i, (ev, sv)) in e.iter().zip(s).enumerate() {
                diff(&format!("{path}[{i}]"), ev, sv, out);
            }
        }
        (e, s) if e == s => {}
        (e, s) => out.push(format!(
            "{path}: {} in the cluster, {} here",
            short(s),
            short(e)
        )),
    }
}

fn short(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() > 40 {
        format!("{}…", text.chars().take(40).collect::<String>())
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Verdict;
    use crate::cli::crds;

    fn established_copy(crd: &CustomResourceDefinition) -> CustomResourceDefinition {
        let mut value = serde_json::to_value(crd).unwrap();
        value["status"] = serde_json::json!({
            "conditions": [{"type": "Established", "status": "True"}],
            "acceptedNames": value["spec"]["names"].clone(),
            "storedVersions": ["v1alpha1"],
        });
        // What the API server adds to printer columns and the spec.
        value["spec"]["conversion"] = serde_json::json!({"strategy": "None"});
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn the_generated_crds_match_themselves_as_served() {
        let pairs: Vec<_> = crds::weft()
            .into_iter()
            .map(|c| {
                let served = Fetched::Found(established_copy(&c));
                (c, served)
            })
            .collect();
        for check in weft(&pairs, "0.1.0") {
            assert_eq!(check.result, Verdict::Pass, "{check:?}");
            assert!(check.detail.contains("matches this mesh-agent (0.1.0)"));
        }
    }

    #[test]
    fn a_changed_schema_names_the_field() {
        let expected = crds::weft().remove(0);
        let mut value = serde_json::to_value(established_copy(&expected)).unwrap();
        let props = &mut value["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            ["properties"];
        let field = props.as_object().unwrap().keys().next().unwrap().to_owned();
        props.as_object_mut().unwrap().remove(&field);
        props["legacy"] = serde_json::json!({"type": "string"});
        let served: CustomResourceDefinition = serde_json::from_value(value).unwrap();
        let lines = drift(&expected, &served);
        assert!(
            lines
                .iter()
                .any(|l| l.ends_with(&format!(".spec.properties.{field}: missing in the cluster"))),
            "{lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.ends_with(".spec.properties.legacy: in the cluster only")),
            "{lines:?}"
        );
        let check = &weft(&[(expected, Fetched::Found(served))], "0.1.0")[0];
        assert_eq!(check.result, Verdict::Fail);
        assert!(check.fix.as_ref().unwrap().contains("mesh-agent crds"));
    }

    #[test]
    fn another_version_in_the_cluster_is_drift() {
        let expected = crds::weft().remove(1);
        let mut value = serde_json::to_value(established_copy(&expected)).unwrap();
        value["spec"]["versions"][0]["name"] = "v1beta1".into();
        let served: CustomResourceDefinition = serde_json::from_value(value).unwrap();
        let lines = drift(&expected, &served);
        assert!(lines.iter().any(|l| l.contains("is not in the cluster")));
        assert!(
            lines
                .iter()
                .any(|l| l.contains("v1beta1 is in the cluster but not"))
        );
    }

    #[test]
    fn missing_unestablished_and_forbidden() {
        let expected = crds::weft().remove(0);
        let checks = weft(
            &[
                (expected.clone(), Fetched::Missing),
                (expected.clone(), Fetched::Found(expected.clone())),
                (expected, Fetched::Forbidden("no".into())),
            ],
            "0.1.0",
        );
        assert_eq!(checks[0].result, Verdict::Fail);
        assert!(checks[0].detail.contains("not installed"));
        assert_eq!(checks[1].result, Verdict::Fail);
        assert!(checks[1].detail.contains("not Established"));
        assert_eq!(checks[2].result, Verdict::Unknown);
    }

    #[test]
    fn gateway_routes_missing_is_a_warning() {
        let http = established_copy(&crds::gateway_api().remove(0));
        let both = [
            (
                "httproutes.gateway.networking.k8s.io".to_owned(),
                Fetched::Found(http.clone()),
            ),
            (
                "grpcroutes.gateway.networking.k8s.io".to_owned(),
                Fetched::Missing,
            ),
        ];
        let check = gateway(&both);
        assert_eq!(check.result, Verdict::Warn);
        assert!(
            check.detail.contains("grpcroutes not installed"),
            "{check:?}"
        );
        assert!(check.detail.contains("ignored"));
        let mut grpc =
            serde_json::to_value(established_copy(&crds::gateway_api().remove(1))).unwrap();
        grpc["spec"]["versions"][0]["name"] = "v1".into();
        let grpc = serde_json::from_value(grpc).unwrap();
        let ok = gateway(&[
            (
                "httproutes.gateway.networking.k8s.io".to_owned(),
                Fetched::Found(http),
            ),
            (
                "grpcroutes.gateway.networking.k8s.io".to_owned(),
                Fetched::Found(grpc),
            ),
        ]);
        assert_eq!(ok.result, Verdict::Pass, "{ok:?}");
    }
}
