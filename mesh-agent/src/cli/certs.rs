//! `mesh-agent certs` (the workload certificates a running agent holds) and
//! `mesh-agent ca init` (a local CA for the demo, tests and small clusters).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Args, Subcommand};

use super::{Output, format_table};
use crate::admin::client::{DEFAULT_ADMIN, get_json};
use crate::identity::{CertStatus, LocalCa};

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
    /// Create a root CA (ca.crt, ca.key) in DIR for `mesh-agent run --ca-dir DIR`.
    Init { dir: PathBuf },
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
