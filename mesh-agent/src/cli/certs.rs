//! `mesh-agent certs` (the workload certificates a running agent holds),
//! `mesh-agent ca init` (a root CA: for the CA service's Secret, or a local CA
//! for the demo and tests) and `mesh-agent ca serve` (the CA service).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Args, Subcommand, ValueEnum};

use super::{Output, format_table};
use crate::admin::client::{DEFAULT_ADMIN, get_json};
use crate::config::resources::duration::GatewayDuration;
use crate::identity::ca_server::{ServeOptions, ServiceAccountRef};
use crate::identity::{CertStatus, LocalCa};
use crate::status::StatusOptions;

#[derive(Debug, Args)]
pub struct CertsArgs {
    /// The agent's admin address.
    #[arg(long, default_value = DEFAULT_ADMIN)]
    pub admin: String,
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: Output,
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create a root CA (ca.crt, ca.key) in DIR: for `ca serve --ca-dir DIR`, or
    /// `mesh-agent run --ca-dir DIR` in local mode (lab and demo only).
    Init { dir: PathBuf },
    /// Run the CA service: sign agents' certificate requests for the pods on
    /// their node, and publish the trust bundle.
    Serve(Box<ServeArgs>),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address of the HTTPS listener.
    #[arg(long, default_value = "0.0.0.0:15012")]
    pub listen: SocketAddr,
    /// The CA: `ca.crt` (the signing root) and `ca.key` (a mounted Secret).
    /// Re-read when they change.
    #[arg(long, default_value = "/etc/weft/ca")]
    pub ca_dir: PathBuf,
    /// A PEM file of more roots to publish (root rotation: the next root
    /// before the switch, the previous one after). May be missing
    /// [default: <ca-dir>/extra-roots.pem].
    #[arg(long)]
    pub extra_roots: Option<PathBuf>,
    /// The ConfigMap the trust bundle is published in (key `roots.pem`).
    #[arg(long, default_value = "weft-trust-bundle")]
    pub trust_bundle_configmap: String,
    /// Namespace of the trust-bundle ConfigMap and of the `weft-ca` Service.
    #[arg(long, default_value = "weft-system", env = "POD_NAMESPACE")]
    pub namespace: String,
    /// The audience agents' tokens must be for.
    #[arg(long, default_value = "weft-ca")]
    pub audience: String,
    /// The agents' ServiceAccount (namespace/name): only its tokens are served.
    #[arg(long, default_value = "weft-system/weft-agent")]
    pub agent_service_account: ServiceAccountRef,
    /// Trust domain of the SPIFFE ids this CA signs.
    #[arg(long, default_value = "cluster.local")]
    pub trust_domain: String,
    /// Longest lifetime of a workload certificate (Gateway API duration:
    /// `24h`, `90m`); also the lifetime when a request asks for none.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub max_cert_lifetime: Duration,
    /// An IP address for the serving certificate, besides the Service's DNS
    /// names (repeatable).
    #[arg(long = "serving-ip")]
    pub serving_ips: Vec<IpAddr>,
    /// A kubeconfig file [default: in-cluster service account, or $KUBECONFIG].
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// How often the CA files are checked for changes.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub poll_interval: Duration,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Take part in electing the replica that writes HTTPRoute, GRPCRoute and
    /// policy status (`--write-status=false`: never write).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub write_status: bool,
    /// This replica's name in the status Lease [default: <hostname>-<pid>].
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// The Lease (in --namespace) that elects the status writer.
    #[arg(long, default_value = crate::status::DEFAULT_LEASE)]
    pub status_lease: String,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = s.parse::<GatewayDuration>().map_err(|e| e.to_string())?.0;
    if d.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(d)
}

impl ServeArgs {
    pub fn options(&self) -> ServeOptions {
        ServeOptions {
            listen: self.listen,
            ca_dir: self.ca_dir.clone(),
            extra_roots: self.extra_roots.clone(),
            trust_bundle_configmap: self.trust_bundle_configmap.clone(),
            namespace: self.namespace.clone(),
            audience: self.audience.clone(),
            agent_service_account: self.agent_service_account.clone(),
            trust_domain: self.trust_domain.clone(),
            max_lifetime: self.max_cert_lifetime,
            serving_ips: self.serving_ips.clone(),
            kubeconfig: self.kubeconfig.clone(),
            poll_interval: self.poll_interval,
            status: self.write_status.then(|| StatusOptions {
                identity: self.pod_name.clone().unwrap_or_else(default_identity),
                namespace: self.namespace.clone(),
                lease: self.status_lease.clone(),
            }),
        }
    }
}

/// Outside a pod: unique on the host for the life of the process.
fn default_identity() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "weft-ca".to_owned());
    format!("{host}-{}", std::process::id())
}

/// `ca serve`: logging, a runtime, the service until SIGTERM or Ctrl-C.
fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false);
    let logging = match args.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    logging.map_err(|e| anyhow::anyhow!("start logging: {e}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("weft-ca")
        .build()?;
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: CA service stopping"),
                _ = tokio::signal::ctrl_c() => {}
            }
        };
        crate::identity::ca_server::serve(args.options(), shutdown).await
    })
}

pub fn run(args: CertsArgs) -> ExitCode {
    exit(super::block_on(async {
        let (certs, _): (Vec<CertStatus>, _) = get_json(&args.admin, "/certs").await?;
        match args.output {
            Output::Json => println!("{}", serde_json::to_string_pretty(&certs)?),
            Output::Table => print!("{}", format_certs(&certs, SystemTime::now())),
        }
        Ok(())
    }))
}

pub fn ca(command: CaCommand) -> ExitCode {
    match command {
        CaCommand::Init { dir } => exit(LocalCa::init(&dir).map(|(cert, key)| {
            println!(
                "CA certificate: {}\nCA key:         {} (keep it secret)",
                cert.display(),
                key.display()
            );
            println!(
                "start agents with: mesh-agent run --ca-dir {} ...",
                dir.display()
            );
        })),
        CaCommand::Serve(args) => exit(serve(&args)),
    }
}

fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The people-facing table.
pub fn format_certs(certs: &[CertStatus], now: SystemTime) -> String {
    let rows: Vec<Vec<String>> = certs
        .iter()
        .map(|c| {
            let expires_in = (SystemTime::UNIX_EPOCH + Duration::from_secs(c.not_after))
                .duration_since(now)
                .map(human)
                .unwrap_or_else(|_| "EXPIRED".into());
            vec![
                c.identity.clone(),
                c.serial.clone(),
                expires_in,
                if c.seconds_to_renewal >= 0 {
                    human(Duration::from_secs(c.seconds_to_renewal.unsigned_abs()))
                } else {
                    "overdue".into()
                },
                match &c.renewal_error {
                    None => "ok".into(),
                    Some(e) => format!("RENEWAL FAILING: {e}"),
                },
            ]
        })
        .collect();
    format_table(
        &["IDENTITY", "SERIAL", "EXPIRES IN", "RENEWS IN", "STATUS"],
        &rows,
    )
}

/// `1d2h`, `3h4m`, `5m6s`, `7s`.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, mins, secs) = (s / 86400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (days, hours, mins) {
        (0, 0, 0) => format!("{secs}s"),
        (0, 0, _) => format!("{mins}m{secs}s"),
        (0, _, _) => format!("{hours}h{mins}m"),
        _ => format!("{days}d{hours}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_shows_time_left_and_failures() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let certs = vec![CertStatus {
            identity: "spiffe://cluster.local/ns/shop/sa/frontend".into(),
            serial: "0abc".into(),
            not_before: 1_000_000 - 60,
            not_after: 1_000_000 + 86_400 - 60,
            renew_at: 1_000_000 + 43_140,
            seconds_to_renewal: 43_140,
            renewal_error: Some("CA unreachable".into()),
        }];
        let table = format_certs(&certs, now);
        assert!(table.starts_with("IDENTITY"), "{table}");
        assert!(table.contains("23h59m"), "{table}");
        assert!(table.contains("11h59m"), "{table}");
        assert!(table.contains("RENEWAL FAILING: CA unreachable"), "{table}");
    }
}
