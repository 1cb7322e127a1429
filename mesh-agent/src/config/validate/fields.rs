//! Syntax of names and values shared by the checks.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::Ck;

/// RFC 1123 label: lowercase alphanumerics and `-`, at most 63, alphanumeric ends.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// RFC 1123 subdomain: dot-separated labels, at most 253.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// IANA service name (named ports): at most 15, lowercase alphanumerics and `-`,
/// at least one letter, no `--`.
pub fn is_port_name(s: &str) -> bool {
    is_dns_label(s)
        && s.len() <= 15
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.contains("--")
}

/// HTTP header name token.
pub fn is_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Checks `metadata.name` (subdomain or label) and `metadata.namespace`.
pub fn metadata(ck: &mut Ck<'_>, m: &ObjectMeta, label_only: bool) {
    match m.name.as_deref() {
        None | Some("") => ck.err("metadata.name", "required: a lowercase RFC 1123 name like `reviews`"),
        Some(n) if label_only && !is_dns_label(n) => ck.err(
            "metadata.name",
            format!("{n:?} is not a valid name: lowercase letters, digits and '-', at most 63 characters, starting and ending alphanumeric"),
        ),
        Some(n) if !is_dns_subdomain(n) => ck.err(
            "metadata.name",
            format!("{n:?} is not a valid name: lowercase letters, digits, '-' and '.', at most 253 characters"),
        ),
        Some(_) => {}
    }
    if let Some(ns) = m.namespace.as_deref()
        && !is_dns_label(ns)
    {
        ck.err("metadata.namespace", format!("{ns:?} is not a valid namespace name: lowercase letters, digits and '-', at most 63 characters"));
    }
}
