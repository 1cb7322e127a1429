//! The access log (`mesh-agent run --access-log text|json`, off by default):
//! one line per request on stdout, Envoy-like (docs/architecture.md, "Request
//! telemetry"). The data path only formats the line and offers it to a
//! bounded queue; a thread of its own writes it, so a slow or blocked stdout
//! never stalls a request: when the queue is full the line is dropped and
//! counted (`weft_access_log_dropped_total`).

use std::io::Write;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use prometheus::IntCounter;
use time::OffsetDateTime;

use super::requests::RequestRecord;

/// Lines waiting for stdout; past this they are dropped.
pub const QUEUE_LINES: usize = 1024;

/// `--access-log`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AccessLogFormat {
    /// `[time] "METHOD path PROTO" code flags req_bytes resp_bytes duration_ms "authority" src -> dst reporter`
    Text,
    /// One JSON object per line with the same fields.
    Json,
}

/// The sending half: formats and queues, never waits.
pub struct AccessLog {
    format: AccessLogFormat,
    queue: SyncSender<String>,
    dropped: IntCounter,
}

impl AccessLog {
    /// Starts the writer thread over `sink` (stdout in the agent).
    pub fn start(
        format: AccessLogFormat,
        capacity: usize,
        sink: Box<dyn Write + Send>,
        dropped: IntCounter,
    ) -> std::io::Result<Self> {
        let (queue, lines) = sync_channel(capacity);
        std::thread::Builder::new()
            .name("weft-access-log".into())
            .spawn(move || write_lines(lines, sink))?;
        Ok(Self {
            format,
            queue,
            dropped,
        })
    }

    pub fn format(&self) -> AccessLogFormat {
        self.format
    }

    pub fn log(&self, r: &RequestRecord<'_>) {
        // Envoy logs the request's start time.
        let start = OffsetDateTime::now_utc() - r.duration;
        let line = format_line(self.format, r, start);
        match self.queue.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => self.dropped.inc(),
        }
    }
}

/// Writes queued lines, in batches when they pile up, until the sender goes.
fn write_lines(lines: Receiver<String>, mut sink: Box<dyn Write + Send>) {
    let mut batch = String::new();
    while let Ok(line) = lines.recv() {
        batch.push_str(&line);
        while batch.len() < 64 * 1024 {
            match lines.try_recv() {
                Ok(more) => batch.push_str(&more),
                Err(_) => break,
            }
        }
        // Errors (stdout closed) lose the lines; nothing else to do with them.
        let _ = sink.write_all(batch.as_bytes()).and_then(|()| sink.flush());
        batch.clear();
    }
}

/// One line, newline included; `at` is the request's start.
pub fn format_line(format: AccessLogFormat, r: &RequestRecord<'_>, at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    // Envoy's `%START_TIME%` shape: UTC, milliseconds.
    let time = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.millisecond()
    );
    let ms = r.duration.as_millis();
    let protocol = match r.protocol {
        super::RequestProtocol::Http => "HTTP",
        super::RequestProtocol::Grpc => "gRPC",
    };
    let mut line = match format {
        AccessLogFormat::Text => format!(
            "[{time}] \"{} {} {protocol}\" {} {} {} {} {ms} \"{}\" {} -> {} {}",
            escape(r.method),
            escape(r.path),
            r.response_code,
            r.flag.as_str(),
            r.request_bytes,
            r.response_bytes,
            escape(r.authority),
            dash(&escape(r.source_pod)),
            dash(&escape(r.destination)),
            r.labels.reporter.as_str(),
        ),
        AccessLogFormat::Json => serde_json::json!({
            "time": time,
            "method": r.method,
            "path": r.path,
            "protocol": r.protocol.as_str(),
            "response_code": r.response_code,
            "grpc_status": r.grpc_status,
            "response_flags": r.flag.as_str(),
            "request_bytes": r.request_bytes,
            "response_bytes": r.response_bytes,
            "duration_ms": ms as u64,
            "authority": r.authority,
            "source": r.source_pod,
            "destination": r.destination,
            "reporter": r.labels.reporter.as_str(),
            "destination_service": r.labels.destination_service,
        })
        .to_string(),
    };
    line.push('\n');
    line
}

fn dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

/// Request data is a client's: quotes, backslashes, spaces and anything not
/// printable ASCII are escaped, so a request cannot forge or split log lines
/// (docs/security.md).
fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    let plain = |b: u8| b.is_ascii_graphic() && b != b'"' && b != b'\\';
    if s.bytes().all(plain) {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for b in s.bytes() {
        if plain(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out.into()
}
