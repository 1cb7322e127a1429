//! `mesh-agent status`: what a running agent holds, from its admin API.

use std::process::ExitCode;

use clap::Args;

use super::{Output, format_table};
use crate::{
    admin::{
        FailingPod,
        client::{DEFAULT_ADMIN, get, get_json},
    },
    config::kube::Refusal,
    run::NodePodReport,
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
    // Cluster mode only: a file-mode agent answers 404 to these.
    let refused: Vec<Refusal> = optional(&args.admin, "/refused").await?;
    let node_pods: Vec<NodePodReport> = optional(&args.admin, "/node_pods").await?;
    // An older agent answers 404.
    let failing: Vec<FailingPod> = optional(&args.admin, "/enrolment_failures").await?;
    match args.output {
        Output::Json => {
            let v = serde_json::json!({
                "ready": ready, "generation": generation, "workloads": workloads,
                "refused": refused, "nodePods": node_pods, "enrolmentFailures": failing,
            });
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Output::Table => {
            print!("{}", format_status(ready, generation, &workloads));
            print!("{}", format_failing(&failing));
            print!("{}", format_cluster(&refused, &node_pods));
        }
    }
    Ok(())
}

async fn optional<T: serde::de::DeserializeOwned + Default>(
    admin: &str,
    path: &str,
) -> anyhow::Result<T> {
    if get(admin, path).await?.status == 404 {
        return Ok(T::default());
    }
    Ok(get_json(admin, path).await?.0)
}

/// The pods of this node the agent cannot enrol: not meshed-ready, with why.
pub fn format_failing(failing: &[FailingPod]) -> String {
    let mut out = String::new();
    for p in failing {
        let held = if p.closed {
            "held closed: its connections are refused"
        } else {
            "NOT held closed: the kernel refused that too"
        };
        out.push_str(&format!(
            "warning: {}/{} is meshed but its enrolment fails ({held}; attempt {}, next in {:.0} s): {}\n",
            p.namespace, p.name, p.attempts, p.next_retry_secs, p.reason
        ));
    }
    out
}

/// Refused objects and warnings about uncaptured processes (cluster mode).
pub fn format_cluster(refused: &[Refusal], node_pods: &[NodePodReport]) -> String {
    let mut out = String::new();
    if !node_pods.is_empty() {
        let enrolled = node_pods.iter().filter(|p| p.enrolled).count();
        let meshed = node_pods.iter().filter(|p| p.meshed).count();
        out.push_str(&format!(
            "\npods on this node: {} ({meshed} meshed, {enrolled} enrolled)\n",
            node_pods.len()
        ));
    }
    for pod in node_pods {
        if pod.meshed && !pod.enrolled && !pod.host_network {
            out.push_str(&format!(
                "warning: {}/{} is meshed but not enrolled yet: its connections are refused\n",
                pod.namespace, pod.name
            ));
        }
        for p in &pod.uncaptured {
            out.push_str(&format!(
                "warning: process {} ({}) uses the network of {}/{} from outside its cgroup ({}): its traffic is not captured\n",
                p.pid, p.comm, pod.namespace, pod.name, p.cgroup
            ));
        }
    }
    if !refused.is_empty() {
        out.push_str(&format!("\nrefused objects: {}\n", refused.len()));
        for r in refused {
            for e in &r.errors {
                out.push_str(&format!("  {}: {e}\n", r.resource()));
            }
            if r.previous_in_force {
                out.push_str(&format!(
                    "  {}: its last valid version stays in force\n",
                    r.resource()
                ));
            }
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_pod_is_shown_with_its_reason() {
        let pod = FailingPod {
            namespace: "payments".into(),
            name: "p-1".into(),
            reason: "listen on 0.0.0.0:15006: address in use".into(),
            attempts: 2,
            next_retry_secs: 1.6,
            closed: true,
        };
        assert_eq!(
            format_failing(&[pod]),
            "warning: payments/p-1 is meshed but its enrolment fails (held closed: its connections are refused; attempt 2, next in 2 s): listen on 0.0.0.0:15006: address in use\n"
        );
    }
}
