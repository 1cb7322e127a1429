//! `mesh-agent tap`: live requests from a running agent's admin API (`/tap`),
//! like `linkerd viz tap`, one line per finished request until interrupted
//! (docs/architecture.md, "Request telemetry").

use std::process::ExitCode;

use anyhow::bail;
use clap::Args;
use http_body_util::BodyExt;

use super::Output;
use crate::admin::client::{DEFAULT_ADMIN, get_stream};
use crate::telemetry::TapEvent;

#[derive(Debug, Args)]
pub struct TapArgs {
    /// Only requests from or to workloads in this namespace.
    #[arg(long)]
    pub namespace: Option<String>,
    /// Only requests from or to this pod (its name, or its workload's `app` label).
    #[arg(long)]
    pub pod: Option<String>,
    /// The agent's admin address.
    #[arg(long, default_value = DEFAULT_ADMIN)]
    pub admin: String,
    /// `json`: the admin API's events, one JSON object per line.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: Output,
}

pub fn run(args: TapArgs) -> ExitCode {
    match super::block_on(tap(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn tap(args: &TapArgs) -> anyhow::Result<()> {
    let mut body = get_stream(&args.admin, &tap_path(args)).await?;
    if args.output == Output::Table {
        println!("{}", header());
    }
    let mut pending = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        pending.extend_from_slice(&data);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            if let Some(out) = render(&line[..end], args.output) {
                println!("{out}");
            }
        }
    }
    bail!("the agent ended the stream (stopped or restarted)")
}

fn tap_path(args: &TapArgs) -> String {
    let mut query = Vec::new();
    if let Some(n) = &args.namespace {
        query.push(format!("namespace={}", encode(n)));
    }
    if let Some(p) = &args.pod {
        query.push(format!("pod={}", encode(p)));
    }
    if query.is_empty() {
        "/tap".into()
    } else {
        format!("/tap?{}", query.join("&"))
    }
}

/// Percent-encodes all but unreserved characters.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

const WIDTHS: [usize; 8] = [11, 24, 21, 7, 4, 4, 9, 0];

fn header() -> String {
    columns(&[
        "REPORTER",
        "SOURCE",
        "DESTINATION",
        "METHOD",
        "CODE",
        "FLAG",
        "LATENCY",
        "AUTHORITY PATH",
    ])
}

fn columns(cells: &[&str]) -> String {
    let mut out = String::new();
    for (cell, w) in cells.iter().zip(WIDTHS) {
        out.push_str(&format!("{cell:<w$} "));
    }
    out.trim_end().to_owned()
}

/// One line of the stream as printed; `None` for a blank line.
/// Lost-event notices go to stderr.
pub fn render(line: &[u8], output: Output) -> Option<String> {
    let line = std::str::from_utf8(line).ok()?.trim();
    if line.is_empty() {
        return None;
    }
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(line)
        && let Some(n) = v.get("lost").and_then(|n| n.as_u64())
    {
        eprintln!("({n} requests not shown: this tap read too slowly)");
        return None;
    }
    if output == Output::Json {
        return Some(line.to_owned());
    }
    match serde_json::from_str::<TapEvent>(line) {
        Ok(e) => Some(format_event(&e)),
        Err(_) => Some(sanitize(line)),
    }
}

/// One request as a table row.
pub fn format_event(e: &TapEvent) -> String {
    let code = match e.grpc_status {
        Some(g) => format!("{}/{g}", e.status),
        None => e.status.to_string(),
    };
    let destination = if e.destination.is_empty() {
        "-"
    } else {
        &e.destination
    };
    columns(&[
        &e.reporter,
        &sanitize(&e.source),
        &sanitize(destination),
        &sanitize(&e.method),
        &code,
        &e.flag,
        &format!("{:.1}ms", e.latency_ms),
        &format!("{} {}", sanitize(&e.authority), sanitize(&e.path)),
    ])
}

/// Request data is a client's: no control characters reach the terminal.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() {
                format!("\\x{:02x}", c as u32)
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> TapEvent {
        TapEvent {
            reporter: "source".into(),
            protocol: "http".into(),
            method: "GET".into(),
            path: "/api/items?x=1".into(),
            authority: "reviews.shop:8080".into(),
            status: 200,
            flag: "-".into(),
            latency_ms: 2.345,
            source: "shop/frontend-7d9f-a".into(),
            destination: "10.1.0.5:8080".into(),
            ..TapEvent::default()
        }
    }

    #[test]
    fn rows_line_up_under_the_header() {
        let row = format_event(&event());
        assert_eq!(
            row,
            "source      shop/frontend-7d9f-a     10.1.0.5:8080         GET     200  -    2.3ms     \
             reviews.shop:8080 /api/items?x=1"
        );
        let h = header();
        assert_eq!(h.find("CODE"), row.find("200"));
        assert_eq!(h.find("AUTHORITY"), row.find("reviews"));
        let grpc = TapEvent {
            grpc_status: Some(14),
            status: 503,
            flag: "UF".into(),
            destination: String::new(),
            ..event()
        };
        let row = format_event(&grpc);
        assert!(
            row.contains(" -                     GET     503/14 UF"),
            "{row}"
        );
    }

    #[test]
    fn render_passes_json_skips_blanks_and_escapes_controls() {
        let json = serde_json::to_string(&event()).unwrap();
        assert_eq!(
            render(json.as_bytes(), Output::Json).as_deref(),
            Some(&*json)
        );
        assert!(
            render(json.as_bytes(), Output::Table)
                .unwrap()
                .contains("/api/items")
        );
        assert_eq!(render(b"", Output::Table), None);
        assert_eq!(render(b"{\"lost\":3}", Output::Table), None);
        let evil = TapEvent {
            path: "/\u{1b}[2J".into(),
            ..event()
        };
        let row = format_event(&evil);
        assert!(!row.contains('\u{1b}'), "{row}");
        assert!(row.contains("/\\x1b[2J"), "{row}");
    }

    #[test]
    fn filters_become_the_query() {
        let args = |namespace: Option<&str>, pod: Option<&str>| TapArgs {
            namespace: namespace.map(Into::into),
            pod: pod.map(Into::into),
            admin: DEFAULT_ADMIN.into(),
            output: Output::Table,
        };
        assert_eq!(tap_path(&args(None, None)), "/tap");
        assert_eq!(
            tap_path(&args(Some("shop"), Some("a b&c"))),
            "/tap?namespace=shop&pod=a%20b%26c"
        );
        let filter = crate::admin::tap_query(&tap_path(&args(Some("shop"), Some("a b&c")))[5..]);
        assert_eq!(filter.unwrap().pod.as_deref(), Some("a b&c"));
    }
}
