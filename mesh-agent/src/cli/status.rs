//! `mesh-agent status`: what a running agent holds, from its admin API.

use std::process::ExitCode;

use clap::Args;

use super::{Output, format_table};
use crate::{
    admin::client::{DEFAULT_ADMIN, get, get_json},
    state::Workload,
};

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The agent's admin address.
    #[arg(long, default_value = DEFAULT_ADMIN)]
    pub admin: String,
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: Output,
}

pub fn run(args: StatusArgs) -> ExitCode {
    match super::block_on(status(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn status(args: &StatusArgs) -> anyhow::Result<()> {
    let ready = get(&args.admin, "/ready").await?.status == 200;
    let (workloads, generation): (Vec<Workload>, _) = get_json(&args.admin, "/workloads").await?;
    match args.output {
        Output::Json => {
            let v = serde_json::json!({ "ready": ready, "generation": generation, "workloads": workloads });
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Output::Table => print!("{}", format_status(ready, generation, &workloads)),
    }
    Ok(())
}

/// The people-facing form of the status.
pub fn format_status(ready: bool, generation: Option<u64>, workloads: &[Workload]) -> String {
    let meshed = workloads.iter().filter(|w| w.meshed).count();
    let mut out = format!(
        "ready: {}\ngeneration: {}\nworkloads: {} ({} meshed)\n\n",
        if ready { "yes" } else { "no" },
        generation.map_or_else(|| "?".into(), |g| g.to_string()),
        workloads.len(),
        meshed
    );
    let rows: Vec<Vec<String>> = workloads
        .iter()
        .map(|w| {
            let ips: Vec<String> = w.ips.iter().map(|i| i.to_string()).collect();
            vec![
                w.key.namespace.clone(),
                w.key.name.clone(),
                w.node.clone(),
                if ips.is_empty() {
                    "-".into()
                } else {
                    ips.join(",")
                },
                if w.meshed { "yes" } else { "no" }.into(),
                w.mtls.to_string(),
                if w.ready { "yes" } else { "no" }.into(),
            ]
        })
        .collect();
    out.push_str(&format_table(
        &[
            "NAMESPACE",
            "NAME",
            "NODE",
            "IPS",
            "MESHED",
            "MTLS",
            "READY",
        ],
        &rows,
    ));
    out
}
