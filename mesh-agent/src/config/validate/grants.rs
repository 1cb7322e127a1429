//! Checks of ReferenceGrant, on its own. Entries of kinds Weft does not use
//! (a Gateway's Secret, say) are valid: the grant may serve another controller.

use crate::config::resources::reference_grant::ReferenceGrant;

use super::{
    Ck,
    fields::{is_dns_label, is_dns_subdomain, metadata},
};

/// Gateway API's bound on `from` and `to`.
const MAX_ENTRIES: usize = 16;

pub fn reference_grant(ck: &mut Ck<'_>, g: &ReferenceGrant) {
    metadata(ck, &g.metadata, false);
    entries(
        ck,
        "spec.from",
        g.spec.from.len(),
        "at least one `{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: <the route's>}`",
    );
    entries(
        ck,
        "spec.to",
        g.spec.to.len(),
        "at least one `{group: \"\", kind: Service}` (optionally with `name`)",
    );
    for (i, f) in g.spec.from.iter().enumerate() {
        let field = format!("spec.from[{i}]");
        group(ck, &field, &f.group);
        kind(ck, &field, &f.kind);
        if !is_dns_label(&f.namespace) {
            ck.err(
                format!("{field}.namespace"),
                format!("{:?} is not a valid namespace name: lowercase letters, digits and '-', at most 63 characters", f.namespace),
            );
        }
    }
    for (i, t) in g.spec.to.iter().enumerate() {
        let field = format!("spec.to[{i}]");
        group(ck, &field, &t.group);
        kind(ck, &field, &t.kind);
        if let Some(n) = t.name.as_deref()
            && !is_dns_subdomain(n)
        {
            ck.err(
                format!("{field}.name"),
                format!("{n:?} is not a valid name: lowercase letters, digits, '-' and '.'; leave it out to grant every object of the kind"),
            );
        }
    }
}

fn entries(ck: &mut Ck<'_>, field: &str, n: usize, example: &str) {
    if n == 0 {
        ck.err(field, format!("required: {example}"));
    } else if n > MAX_ENTRIES {
        ck.err(
            field,
            format!("at most {MAX_ENTRIES} entries (got {n}): split it over several grants"),
        );
    }
}

/// `""` is the core group (Service); any other must be a DNS subdomain.
fn group(ck: &mut Ck<'_>, field: &str, g: &str) {
    if !g.is_empty() && !is_dns_subdomain(g) {
        ck.err(
            format!("{field}.group"),
            format!("{g:?} is not an API group: \"\" for core kinds (Service), else e.g. gateway.networking.k8s.io"),
        );
    }
}

fn kind(ck: &mut Ck<'_>, field: &str, k: &str) {
    let valid = k.len() <= 63
        && k.starts_with(|c: char| c.is_ascii_alphabetic())
        && k.chars().all(|c| c.is_ascii_alphanumeric());
    if !valid {
        ck.err(
            format!("{field}.kind"),
            format!("{k:?} is not a kind: e.g. HTTPRoute, GRPCRoute or Service"),
        );
    }
}
