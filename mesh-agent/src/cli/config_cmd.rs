//! `mesh-agent config validate FILE...` and `mesh-agent config dump`.

use std::{path::PathBuf, process::ExitCode};

use clap::Subcommand;

use super::Output;
use crate::{
    admin::client::{DEFAULT_ADMIN, get_json},
    config::file::load_resources,
    state::Snapshot,
};

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check configuration files offline; errors go to stderr, exit 1 if any.
    Validate {
        /// YAML files, read as one set of resources.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the state of a running agent (its /config_dump).
    Dump {
        /// The agent's admin address.
        #[arg(long, default_value = DEFAULT_ADMIN)]
        admin: String,
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: Output,
    },
}

pub fn run(cmd: ConfigCommand) -> ExitCode {
    match cmd {
        ConfigCommand::Validate { files } => validate(&files),
        ConfigCommand::Dump { admin, output } => match super::block_on(dump(&admin, output)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn validate(files: &[PathBuf]) -> ExitCode {
    match load_resources(files) {
        Ok(set) => {
            println!(
                "valid: {} namespaces, {} pods, {} services, {} routes, {} authorization policies, {} traffic policies",
                set.namespaces.len(),
                set.pods.len(),
                set.services.len(),
                set.http_routes.len() + set.grpc_routes.len(),
                set.authorization_policies.len(),
                set.traffic_policies.len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::FAILURE
        }
    }
}

async fn dump(admin: &str, output: Output) -> anyhow::Result<()> {
    if output == Output::Json {
        let (v, _): (serde_json::Value, _) = get_json(admin, "/config_dump").await?;
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let (snap, _): (Snapshot, _) = get_json(admin, "/config_dump").await?;
    print!("{}", format_dump(&snap));
    Ok(())
}

/// The people-facing form of a config dump.
pub fn format_dump(snap: &Snapshot) -> String {
    let mut out = format!("generation: {}\n\nSERVICES\n", snap.generation);
    let rows: Vec<Vec<String>> = snap
        .services()
        .map(|s| {
            let ports: Vec<String> = s
                .ports
                .iter()
                .map(|p| format!("{}->{}", p.port, p.target_port))
                .collect();
            let endpoints: usize = s
                .ports
                .iter()
                .map(|p| snap.endpoints(&s.key, p.port).len())
                .sum();
            vec![
                s.key.namespace.clone(),
                s.key.name.clone(),
                join(s.cluster_ips.iter()),
                ports.join(","),
                endpoints.to_string(),
                snap.routes_for(&s.key).len().to_string(),
            ]
        })
        .collect();
    out.push_str(&super::format_table(
        &[
            "NAMESPACE",
            "NAME",
            "CLUSTER-IP",
            "PORTS",
            "ENDPOINTS",
            "ROUTES",
        ],
        &rows,
    ));
    let routes: Vec<Vec<String>> = snap
        .data()
        .routes
        .iter()
        .map(|r| {
            let parents: Vec<String> = r.parents.iter().map(|p| p.service.to_string()).collect();
            vec![
                r.key.namespace.clone(),
                r.key.name.clone(),
                format!("{:?}", r.kind),
                parents.join(","),
                r.rules.len().to_string(),
            ]
        })
        .collect();
    out.push_str("\nROUTES\n");
    out.push_str(&super::format_table(
        &["NAMESPACE", "NAME", "KIND", "PARENTS", "RULES"],
        &routes,
    ));
    let mut policies: Vec<Vec<String>> = snap
        .authorization_policies()
        .iter()
        .map(|p| {
            vec![
                p.key.namespace.clone(),
                p.key.name.clone(),
                "AuthorizationPolicy".into(),
                format!("{:?}", p.action).to_uppercase(),
            ]
        })
        .collect();
    policies.extend(snap.traffic_policies().iter().map(|p| {
        vec![
            p.key.namespace.clone(),
            p.key.name.clone(),
            "TrafficPolicy".into(),
            format!("target {}", p.target),
        ]
    }));
    out.push_str("\nPOLICIES\n");
    out.push_str(&super::format_table(
        &["NAMESPACE", "NAME", "KIND", "DETAIL"],
        &policies,
    ));
    out
}

fn join<T: std::fmt::Display>(it: impl Iterator<Item = T>) -> String {
    let v: Vec<String> = it.map(|x| x.to_string()).collect();
    if v.is_empty() {
        "-".into()
    } else {
        v.join(",")
    }
}
