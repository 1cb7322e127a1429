//! Validation of typed resources: per resource ([`core`], [`routes`], [`grants`], [`policies`])
//! and across resources ([`cross`]). Every check reports the field path and says
//! what would be valid.

mod core;
mod cross;
mod fields;
mod grants;
mod policies;
mod routes;

use super::{errors::ConfigError, parse::Origin, resources::Resource};

/// Collects the errors of one resource.
pub(crate) struct Ck<'a> {
    pub origin: &'a Origin,
    pub errors: &'a mut Vec<ConfigError>,
}

impl Ck<'_> {
    pub fn err(&mut self, field: impl AsRef<str>, reason: impl Into<String>) {
        self.errors
            .push(self.origin.error(Some(field.as_ref()), reason));
    }

    /// `field` must be a port number 1–65535.
    pub fn port(&mut self, field: impl AsRef<str>, port: i64) {
        if !(1..=65535).contains(&port) {
            self.err(
                field,
                format!("port must be between 1 and 65535 (got {port})"),
            );
        }
    }
}

/// Checks every resource and their references to each other: the file source's
/// whole-file semantics (one error refuses the file).
pub fn validate(items: &[(Resource, Origin)]) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    for (r, origin) in items {
        check_one(r, origin, &mut errors);
    }
    cross::check(items, &mut errors);
    errors
}

/// Checks one resource on its own: the cluster source's per-object verdict. What
/// only a file can get wrong across objects (duplicates, undeclared namespaces)
/// cannot happen in a cluster, and a reference to a missing Service is a route
/// status (`ResolvedRefs`), not a reason to refuse the object.
pub fn validate_object(r: &Resource, origin: &Origin) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    check_one(r, origin, &mut errors);
    errors
}

fn check_one(r: &Resource, origin: &Origin, errors: &mut Vec<ConfigError>) {
    let mut ck = Ck { origin, errors };
    match r {
        Resource::Namespace(x) => core::namespace(&mut ck, x),
        Resource::Pod(x) => core::pod(&mut ck, x),
        Resource::Service(x) => core::service(&mut ck, x),
        Resource::HttpRoute(x) => routes::http_route(&mut ck, x),
        Resource::GrpcRoute(x) => routes::grpc_route(&mut ck, x),
        Resource::ReferenceGrant(x) => grants::reference_grant(&mut ck, x),
        Resource::AuthorizationPolicy(x) => policies::authorization(&mut ck, x),
        Resource::TrafficPolicy(x) => policies::traffic(&mut ck, x),
    }
}
