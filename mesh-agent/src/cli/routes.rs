//! `mesh-agent routes`: the HTTPRoutes and GRPCRoutes a running agent holds and
//! their status (Accepted, ResolvedRefs), computed by the agent with the
//! functions the CA's status writer uses (admin `/routes`), plus the routes it
//! refused (admin `/refused`, cluster mode).

use std::process::ExitCode;

use clap::Args;

use super::{Output, format_table};
use crate::{
    admin::client::{DEFAULT_ADMIN, get, get_json},
    config::kube::Refusal,
    status::local::{ConditionReport, ParentReport, RouteReport, refused_route},
};

#[derive(Debug, Args)]
pub struct RoutesArgs {
    /// The agent's admin address.
    #[arg(long, default_value = DEFAULT_ADMIN)]
    pub admin: String,
    /// Only routes of this namespace.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: Output,
}

pub fn run(args: RoutesArgs) -> ExitCode {
    match super::block_on(routes(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn routes(args: &RoutesArgs) -> anyhow::Result<()> {
    let (mut list, generation): (Vec<RouteReport>, _) = get_json(&args.admin, "/routes").await?;
    // Cluster mode only: a file-mode agent answers 404 (a refused file
    // changes nothing, and its errors are in the agent's log).
    let refused: Vec<Refusal> = if get(&args.admin, "/refused").await?.status == 404 {
        Vec::new()
    } else {
        get_json(&args.admin, "/refused").await?.0
    };
    list.extend(refused.iter().filter_map(refused_route));
    if let Some(ns) = &args.namespace {
        list.retain(|r| &r.namespace == ns);
    }
    match args.output {
        Output::Json => {
            let v = serde_json::json!({ "generation": generation, "routes": list });
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Output::Table => print!("{}", format_routes(&list)),
    }
    Ok(())
}

const HEADER: [&str; 7] = [
    "KIND",
    "ROUTE",
    "PARENT",
    "ACCEPTED",
    "RESOLVED_REFS",
    "RULES",
    "MESSAGE",
];

/// One row per (route, parent Service); a refused route has one row.
pub fn format_routes(list: &[RouteReport]) -> String {
    if list.is_empty() {
        return "no routes\n".to_owned();
    }
    let mut rows = Vec::new();
    for r in list {
        let route = format!("{}/{}", r.namespace, r.name);
        let rules = r.rules.map_or_else(|| "-".to_owned(), |n| n.to_string());
        if let Some(c) = &r.refused {
            rows.push(vec![
                r.kind.clone(),
                route.clone(),
                "-".into(),
                cell(c),
                "-".into(),
                rules.clone(),
                format!("refused: {}", c.message),
            ]);
        }
        for p in &r.parents {
            rows.push(vec![
                r.kind.clone(),
                route.clone(),
                parent(p, &r.namespace),
                cell(&p.accepted),
                cell(&p.resolved_refs),
                rules.clone(),
                message(p),
            ]);
        }
    }
    format_table(&HEADER, &rows)
}

/// `namespace/name[:port]`, the namespace left out when it is the route's.
fn parent(p: &ParentReport, route_ns: &str) -> String {
    let r = &p.parent_ref;
    let mut s = match r.namespace.as_deref().filter(|ns| *ns != route_ns) {
        Some(ns) => format!("{ns}/{}", r.name),
        None => r.name.clone(),
    };
    if let Some(port) = r.port {
        s.push_str(&format!(":{port}"));
    }
    s
}

fn cell(c: &ConditionReport) -> String {
    if c.is_true() {
        "True".to_owned()
    } else {
        format!("False/{}", c.reason)
    }
}

/// The messages of the conditions that are not True.
fn message(p: &ParentReport) -> String {
    [&p.accepted, &p.resolved_refs]
        .into_iter()
        .filter(|c| !c.is_true())
        .map(|c| c.message.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::resources::gateway::ParentReference;

    fn yes(reason: &str) -> ConditionReport {
        ConditionReport {
            status: "True".into(),
            reason: reason.into(),
            message: "fine".into(),
        }
    }

    fn no(reason: &str, message: &str) -> ConditionReport {
        ConditionReport {
            status: "False".into(),
            reason: reason.into(),
            message: message.into(),
        }
    }

    #[test]
    fn one_row_per_parent_with_the_messages_of_what_is_not_true() {
        let parent = |ns: Option<&str>, port| ParentReport {
            parent_ref: ParentReference {
                group: Some(String::new()),
                kind: Some("Service".into()),
                namespace: ns.map(Into::into),
                name: "reviews".into(),
                port,
                ..Default::default()
            },
            accepted: yes("Accepted"),
            resolved_refs: no("RefNotPermitted", "no grant"),
        };
        let routes = [
            RouteReport {
                kind: "HTTPRoute".into(),
                namespace: "shop".into(),
                name: "r".into(),
                rules: Some(2),
                parents: vec![parent(None, Some(9080)), parent(Some("front"), None)],
                refused: None,
            },
            RouteReport {
                kind: "GRPCRoute".into(),
                namespace: "shop".into(),
                name: "bad".into(),
                rules: None,
                parents: Vec::new(),
                refused: Some(no("UnsupportedValue", "spec.rules: wrong")),
            },
        ];
        assert_eq!(
            format_routes(&routes),
            "\
KIND       ROUTE     PARENT         ACCEPTED                RESOLVED_REFS          RULES  MESSAGE
HTTPRoute  shop/r    reviews:9080   True                    False/RefNotPermitted  2      no grant
HTTPRoute  shop/r    front/reviews  True                    False/RefNotPermitted  2      no grant
GRPCRoute  shop/bad  -              False/UnsupportedValue  -                      -      refused: spec.rules: wrong
"
        );
        assert_eq!(format_routes(&[]), "no routes\n");
    }
}
