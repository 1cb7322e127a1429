//! ReferenceGrants, and the one question the mesh asks of them: may a route of
//! one namespace send traffic to a Service of another (docs/config.md,
//! "ReferenceGrant")? Pure, shared by routing, the route status the CA writes,
//! and `mesh-agent routes`, so that all three agree.

use serde::{Deserialize, Serialize};

use super::model::ResourceKey;
use crate::config::resources::reference_grant::ReferenceGrant as GrantResource;

/// The group of HTTPRoute and GRPCRoute.
pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// A ReferenceGrant: its `from` and `to` entries as written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferenceGrant {
    pub key: ResourceKey,
    pub from: Vec<GrantFrom>,
    pub to: Vec<GrantTo>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantFrom {
    pub group: String,
    pub kind: String,
    pub namespace: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantTo {
    pub group: String,
    pub kind: String,
    pub name: Option<String>,
}

impl ReferenceGrant {
    pub fn from_resource(g: &GrantResource) -> Self {
        ReferenceGrant {
            key: super::build::key_of(&g.metadata.namespace, &g.metadata.name),
            from: g
                .spec
                .from
                .iter()
                .map(|f| GrantFrom {
                    group: f.group.clone(),
                    kind: f.kind.clone(),
                    namespace: f.namespace.clone(),
                })
                .collect(),
            to: g
                .spec
                .to
                .iter()
                .map(|t| GrantTo {
                    group: t.group.clone(),
                    kind: t.kind.clone(),
                    name: t.name.clone(),
                })
                .collect(),
        }
    }

    /// Whether this grant lets a route of `route_kind` (`HTTPRoute`,
    /// `GRPCRoute`) in `from_namespace` use the Service `service` of the
    /// grant's own namespace. The caller checks the namespace.
    fn permits(&self, route_kind: &str, from_namespace: &str, service: &str) -> bool {
        let from = self.from.iter().any(|f| {
            f.group == GATEWAY_GROUP && f.kind == route_kind && f.namespace == from_namespace
        });
        // Gateway API names the core group ""; "core" is accepted as elsewhere.
        let to = self.to.iter().any(|t| {
            matches!(t.group.as_str(), "" | "core")
                && t.kind == "Service"
                && t.name.as_deref().is_none_or(|n| n == service)
        });
        from && to
    }
}

/// Whether a route of `route_kind` in `from_namespace` may refer to the
/// Service `to_namespace/service`: always within a namespace; across, only if
/// one of `grants` (any grants: those not in `to_namespace` never count)
/// permits it, as Gateway API says.
pub fn permitted<'a>(
    grants: impl IntoIterator<Item = &'a ReferenceGrant>,
    route_kind: &str,
    from_namespace: &str,
    to_namespace: &str,
    service: &str,
) -> bool {
    from_namespace == to_namespace
        || grants.into_iter().any(|g| {
            g.key.namespace == to_namespace && g.permits(route_kind, from_namespace, service)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(ns: &str, from: (&str, &str, &str), to: (&str, &str, Option<&str>)) -> ReferenceGrant {
        ReferenceGrant {
            key: ResourceKey::new(ns, "g"),
            from: vec![GrantFrom {
                group: from.0.into(),
                kind: from.1.into(),
                namespace: from.2.into(),
            }],
            to: vec![GrantTo {
                group: to.0.into(),
                kind: to.1.into(),
                name: to.2.map(Into::into),
            }],
        }
    }

    const ANY_SERVICE: (&str, &str, Option<&str>) = ("", "Service", None);

    #[test]
    fn the_same_namespace_needs_no_grant() {
        assert!(permitted([], "HTTPRoute", "shop", "shop", "reviews"));
        assert!(!permitted([], "HTTPRoute", "shop", "other", "reviews"));
    }

    #[test]
    fn a_grant_in_the_target_namespace_from_the_route_s_kind_and_namespace_permits() {
        let g = grant("other", (GATEWAY_GROUP, "HTTPRoute", "shop"), ANY_SERVICE);
        assert!(permitted([&g], "HTTPRoute", "shop", "other", "reviews"));
        // Another kind, another source namespace: not this grant's.
        assert!(!permitted([&g], "GRPCRoute", "shop", "other", "reviews"));
        assert!(!permitted([&g], "HTTPRoute", "front", "other", "reviews"));
    }

    #[test]
    fn a_grant_in_another_namespace_does_not_count() {
        // A grant says what may refer into *its* namespace: one written in the
        // route's own namespace grants nothing.
        let g = grant("shop", (GATEWAY_GROUP, "HTTPRoute", "shop"), ANY_SERVICE);
        assert!(!permitted([&g], "HTTPRoute", "shop", "other", "reviews"));
    }

    #[test]
    fn a_named_target_permits_that_service_only() {
        let g = grant(
            "other",
            (GATEWAY_GROUP, "HTTPRoute", "shop"),
            ("", "Service", Some("reviews")),
        );
        assert!(permitted([&g], "HTTPRoute", "shop", "other", "reviews"));
        assert!(!permitted([&g], "HTTPRoute", "shop", "other", "payments"));
    }

    #[test]
    fn groups_and_kinds_must_be_the_route_s_and_service_s() {
        let wrong_from_group = grant("other", ("", "HTTPRoute", "shop"), ANY_SERVICE);
        let wrong_to_kind = grant(
            "other",
            (GATEWAY_GROUP, "HTTPRoute", "shop"),
            ("", "Secret", None),
        );
        let wrong_to_group = grant(
            "other",
            (GATEWAY_GROUP, "HTTPRoute", "shop"),
            ("apps", "Service", None),
        );
        for g in [wrong_from_group, wrong_to_kind, wrong_to_group] {
            assert!(
                !permitted([&g], "HTTPRoute", "shop", "other", "reviews"),
                "{g:?}"
            );
        }
    }
}
