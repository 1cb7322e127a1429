//! The CA: its Deployment available (and its key Secret present), the trust
//! bundle ConfigMap present with at least one valid root, and, when it can be
//! reached from here, a TLS handshake with the CA service verified against that
//! bundle.

use std::time::{Duration, SystemTime};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;

use super::clock::format_date;
use super::facts::{CaProbe, CertTimes, Fetched};
use crate::check::Check;
use crate::identity::{CertificateDer, DEFAULT_TRUST_BUNDLE, roots_of};

pub const DEPLOYMENT: &str = "weft-ca";
pub const KEY_SECRET: &str = "weft-ca-key";
pub const SERVICE: &str = "weft-ca";
/// A root that expires sooner than this is a warning: rotate now.
const ROOT_WARNING: Duration = Duration::from_secs(30 * 86_400);

/// The Deployment line, with the key Secret when that explains a failure.
pub fn deployment(dep: &Fetched<Deployment>, key: &Fetched<()>, ns: &str) -> Check {
    let label = format!("CA Deployment {DEPLOYMENT}");
    let dep = match dep {
        Fetched::Found(dep) => dep,
        Fetched::Missing => {
            return Check::fail(
                label,
                format!("{ns}/{DEPLOYMENT} does not exist: agents cannot get certificates"),
                "install Weft: kubectl apply --server-side -k manifests/ (docs/install.md)",
            );
        }
        other => {
            return Check::unknown(
                label,
                other.unreadable().unwrap_or_default(),
                "check with credentials that may get deployments in weft-system",
            );
        }
    };
    let desired = dep.spec.replicas.unwrap_or(1);
    let available = dep
        .status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0);
    let counts = format!("{available} of {desired} replicas available");
    let key_missing = matches!(key, Fetched::Missing);
    let create_key = format!(
        "create the CA key Secret (docs/install.md, \"Create the CA key\"): mesh-agent ca init ./weft-ca && \
         kubectl -n {ns} create secret generic {KEY_SECRET} --from-file=ca.crt=./weft-ca/ca.crt \
         --from-file=ca.key=./weft-ca/ca.key"
    );
    if available == 0 {
        return if key_missing {
            Check::fail(
                label,
                format!(
                    "{counts}: the Secret {KEY_SECRET} does not exist, and the CA cannot start without its key"
                ),
                create_key,
            )
        } else {
            Check::fail(
                label,
                format!("{counts}: agents cannot get certificates for new pods"),
                format!(
                    "kubectl -n {ns} describe deployment {DEPLOYMENT}; kubectl -n {ns} logs deploy/{DEPLOYMENT}"
                ),
            )
        };
    }
    if key_missing {
        return Check::warn(
            label,
            format!(
                "{counts}, but the Secret {KEY_SECRET} is gone: a restarted CA pod cannot start"
            ),
            create_key,
        );
    }
    if available < desired {
        return Check::warn(
            label,
            format!("{counts}: the CA serves, with less redundancy"),
            format!("kubectl -n {ns} describe deployment {DEPLOYMENT}"),
        );
    }
    Check::pass(label, counts)
}

/// The trust bundle line: present, parseable, with a root valid now.
pub fn trust_bundle(cm: &Fetched<ConfigMap>, ns: &str, now: SystemTime) -> Check {
    let label = "trust bundle";
    let what = format!("ConfigMap {ns}/{DEFAULT_TRUST_BUNDLE}");
    let republish = format!(
        "the CA service writes it at start and checks it every minute: look at the CA \
         (kubectl -n {ns} logs deploy/{DEPLOYMENT}); it needs get, create and update on \
         ConfigMaps in {ns} (manifests/ca/rbac.yaml)"
    );
    let cm = match cm {
        Fetched::Found(cm) => cm,
        Fetched::Missing => {
            return Check::fail(
                label,
                format!(
                    "{what} does not exist: agents wait for it at start and cannot verify their peers"
                ),
                republish,
            );
        }
        other => {
            return Check::unknown(
                label,
                other.unreadable().unwrap_or_default(),
                format!("check with credentials that may get configmaps in {ns}"),
            );
        }
    };
    let replace = format!(
        "delete it and the CA publishes it again within a minute: kubectl -n {ns} delete configmap \
         {DEFAULT_TRUST_BUNDLE} (if it comes back invalid, check ca.crt in the Secret {KEY_SECRET})"
    );
    let roots = match roots_of(cm) {
        Ok(roots) => roots,
        Err(why) => return Check::fail(label, format!("{what} is invalid: {why}"), replace),
    };
    let mut times = Vec::new();
    for root in &roots {
        match cert_times(root) {
            Some(t) => times.push(t),
            None => {
                return Check::fail(
                    label,
                    format!("{what} holds a root that is not an X.509 certificate"),
                    replace,
                );
            }
        }
    }
    let valid: Vec<&CertTimes> = times
        .iter()
        .filter(|t| t.not_before <= now && now < t.not_after)
        .collect();
    let listed = times
        .iter()
        .map(|t| format!("{} until {}", t.subject, format_date(t.not_after)))
        .collect::<Vec<_>>()
        .join(", ");
    let count = format!(
        "{} root{}",
        times.len(),
        if times.len() == 1 { "" } else { "s" }
    );
    if valid.is_empty() {
        return Check::fail(
            label,
            format!("{what}: no root is valid now ({listed}): no certificate verifies"),
            "rotate the root (docs/install.md): a new ca.crt and ca.key in the Secret weft-ca-key; \
             if the dates look right, check this machine's clock",
        );
    }
    if let Some(expiring) = valid.iter().find(|t| {
        t.not_after
            .duration_since(now)
            .is_ok_and(|left| left < ROOT_WARNING)
    }) {
        return Check::warn(
            label,
            format!(
                "{count} ({listed}); {} expires on {}",
                expiring.subject,
                format_date(expiring.not_after)
            ),
            "rotate the root before it expires (two roots in the bundle during the switch)",
        );
    }
    let expired = times.len() - valid.len();
    let note = if expired > 0 {
        format!("; {expired} not valid now (a rotation's old or next root)")
    } else {
        String::new()
    };
    Check::pass(label, format!("{what}: {count} ({listed}){note}"))
}

/// A certificate's subject and validity; none if it cannot be parsed.
pub fn cert_times(der: &CertificateDer<'_>) -> Option<CertTimes> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let at = |t: x509_parser::time::ASN1Time| {
        let secs = t.timestamp();
        let abs = Duration::from_secs(secs.unsigned_abs());
        if secs >= 0 {
            SystemTime::UNIX_EPOCH + abs
        } else {
            SystemTime::UNIX_EPOCH - abs
        }
    };
    Some(CertTimes {
        subject: cert.subject().to_string(),
        not_before: at(cert.validity().not_before),
        not_after: at(cert.validity().not_after),
    })
}

/// The CA service line (the handshake).
pub fn service(probe: &CaProbe, ns: &str) -> Check {
    let label = "CA service";
    let port_forward = format!(
        "kubectl -n {ns} port-forward svc/{SERVICE} 15012:15012, then add --ca-addr 127.0.0.1:15012"
    );
    match probe {
        CaProbe::Answered {
            target,
            healthz: 200,
            ..
        } => Check::pass(
            label,
            format!(
                "TLS with {target} as {SERVICE}.{ns}.svc: its certificate verifies against the trust bundle; /healthz 200"
            ),
        ),
        CaProbe::Answered {
            target, healthz, ..
        } => Check::fail(
            label,
            format!("{target}: TLS verified, but /healthz answered {healthz}"),
            format!("kubectl -n {ns} logs deploy/{DEPLOYMENT}"),
        ),
        CaProbe::Untrusted {
            target,
            why,
            should_reach: false,
        } => Check::unknown(
            label,
            format!(
                "{target} answered, but not as the CA ({why}): from outside the cluster this is \
                 likely something else on the way (a proxy), not the CA"
            ),
            format!("to test the handshake with the CA itself: {port_forward}"),
        ),
        CaProbe::Untrusted { target, why, .. } => Check::fail(
            label,
            format!("{target}: {why}: agents cannot get certificates from it"),
            format!(
                "the CA's serving certificate must chain to a root of the trust bundle: check that ca.crt \
                 in the Secret {KEY_SECRET} is in the bundle, then kubectl -n {ns} rollout restart \
                 deployment/{DEPLOYMENT}"
            ),
        ),
        CaProbe::Unreachable {
            target,
            why,
            should_reach: true,
        } => Check::fail(
            label,
            format!("cannot connect to {target}: {why}"),
            format!("is the port-forward running? {port_forward}"),
        ),
        CaProbe::Unreachable { target, why, .. } => Check::unknown(
            label,
            format!("{target} is not reachable from here ({why}); normal outside the cluster"),
            format!("to test the handshake from a workstation: {port_forward}"),
        ),
        CaProbe::NoService => Check::fail(
            label,
            format!("the Service {ns}/{SERVICE} does not exist: agents reach the CA through it"),
            "install Weft: kubectl apply --server-side -k manifests/ (docs/install.md)",
        ),
        CaProbe::NotTried(why) => Check::unknown(label, why.clone(), port_forward),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Verdict;
    use crate::identity::{LocalCa, ROOTS_KEY, to_pem};
    use serde_json::json;

    fn dep(desired: i32, available: i32) -> Fetched<Deployment> {
        Fetched::Found(
            serde_json::from_value(json!({
                "metadata": {"name": "weft-ca"},
                "spec": {"replicas": desired, "selector": {}, "template": {}},
                "status": {"availableReplicas": available},
            }))
            .unwrap(),
        )
    }

    #[test]
    fn deployment_verdicts() {
        let ns = "weft-system";
        assert_eq!(
            deployment(&dep(2, 2), &Fetched::Found(()), ns).result,
            Verdict::Pass
        );
        assert_eq!(
            deployment(&dep(2, 1), &Fetched::Found(()), ns).result,
            Verdict::Warn
        );
        let c = deployment(&dep(2, 0), &Fetched::Found(()), ns);
        assert_eq!(c.result, Verdict::Fail);
        assert!(c.fix.unwrap().contains("logs deploy/weft-ca"));
        let c = deployment(&dep(2, 0), &Fetched::Missing, ns);
        assert!(c.detail.contains("weft-ca-key does not exist"), "{c:?}");
        assert!(c.fix.unwrap().contains("mesh-agent ca init"));
        // Forbidden to read Secrets says nothing about the key.
        assert_eq!(
            deployment(&dep(2, 2), &Fetched::Forbidden("no".into()), ns).result,
            Verdict::Pass
        );
        assert_eq!(
            deployment(&Fetched::Missing, &Fetched::Missing, ns).result,
            Verdict::Fail
        );
    }

    fn bundle(pem: &str) -> Fetched<ConfigMap> {
        Fetched::Found(serde_json::from_value(json!({"data": {ROOTS_KEY: pem}})).unwrap())
    }

    fn root_pem() -> String {
        let dir = tempfile::tempdir().unwrap();
        LocalCa::init(dir.path()).unwrap();
        let ca = LocalCa::load(dir.path()).unwrap();
        to_pem(ca.certificate())
    }

    #[test]
    fn a_valid_bundle_passes_and_lists_its_roots() {
        let c = trust_bundle(&bundle(&root_pem()), "weft-system", SystemTime::now());
        assert_eq!(c.result, Verdict::Pass, "{c:?}");
        assert!(c.detail.contains("1 root ("), "{c:?}");
    }

    #[test]
    fn missing_invalid_or_expired_bundles_fail_with_the_fix() {
        let now = SystemTime::now();
        let c = trust_bundle(&Fetched::Missing, "weft-system", now);
        assert_eq!(c.result, Verdict::Fail);
        assert!(
            c.detail
                .contains("weft-system/weft-trust-bundle does not exist")
        );
        assert!(c.fix.unwrap().contains("logs deploy/weft-ca"));

        let c = trust_bundle(&bundle("not a certificate"), "weft-system", now);
        assert_eq!(c.result, Verdict::Fail);
        assert!(c.detail.contains("is invalid"), "{c:?}");
        assert!(
            c.fix
                .unwrap()
                .contains("delete configmap weft-trust-bundle")
        );

        let empty: Fetched<ConfigMap> =
            Fetched::Found(serde_json::from_value(json!({"data": {}})).unwrap());
        assert!(
            trust_bundle(&empty, "weft-system", now)
                .detail
                .contains("no roots.pem")
        );

        let later = now + Duration::from_secs(20 * 365 * 86_400);
        let c = trust_bundle(&bundle(&root_pem()), "weft-system", later);
        assert_eq!(c.result, Verdict::Fail);
        assert!(c.detail.contains("no root is valid now"), "{c:?}");
    }

    #[test]
    fn the_handshake_lines() {
        let ns = "weft-system";
        let answered = CaProbe::Answered {
            target: "10.96.0.9:15012".into(),
            healthz: 200,
            serving: None,
            clock: None,
        };
        assert_eq!(service(&answered, ns).result, Verdict::Pass);
        let far = CaProbe::Unreachable {
            target: "10.96.0.9:15012".into(),
            why: "timed out".into(),
            should_reach: false,
        };
        let c = service(&far, ns);
        assert_eq!(c.result, Verdict::Unknown);
        assert!(c.fix.unwrap().contains("port-forward svc/weft-ca"));
        let given = CaProbe::Unreachable {
            target: "127.0.0.1:15012".into(),
            why: "refused".into(),
            should_reach: true,
        };
        assert_eq!(service(&given, ns).result, Verdict::Fail);
        let untrusted = |should_reach| CaProbe::Untrusted {
            target: "x".into(),
            why: "invalid peer certificate: UnknownIssuer".into(),
            should_reach,
        };
        assert_eq!(service(&untrusted(true), ns).result, Verdict::Fail);
        // From a workstation, whatever answers at a cluster IP may not be the CA.
        assert_eq!(service(&untrusted(false), ns).result, Verdict::Unknown);
        assert_eq!(service(&CaProbe::NoService, ns).result, Verdict::Fail);
    }
}
