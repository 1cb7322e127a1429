//! HTTP from lab pods with real `curl`, and the answers of the lab's echo
//! servers (`weft-load echo`: JSON naming the pod and describing the request).

use anyhow::{Context, Result, bail};

use crate::pod::Pod;

/// One HTTP answer as curl received it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as the echo server's JSON.
    pub fn echo(&self) -> Result<serde_json::Value> {
        serde_json::from_str(&self.body)
            .with_context(|| format!("not an echo answer ({}): {}", self.status, self.body))
    }

    /// The pod the echo server that answered runs in.
    pub fn pod(&self) -> Result<String> {
        Ok(self.echo()?["pod"].as_str().unwrap_or_default().to_owned())
    }
}

/// `curl -s -i ARGS` in `pod`: the last response's status, headers and body
/// (interim `100 Continue` heads are skipped).
pub fn curl(pod: &Pod, args: &[&str]) -> Result<Reply> {
    let out = pod
        .command("curl")
        .args(["-s", "-i", "--max-time", "20"])
        .args(args)
        .output()?;
    if !out.status.success() {
        bail!(
            "curl {args:?} from {} failed ({}): {}",
            pod.name,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    parse(&String::from_utf8_lossy(&out.stdout))
}

fn parse(text: &str) -> Result<Reply> {
    let mut rest = text;
    loop {
        let (head, body) = rest
            .split_once("\r\n\r\n")
            .with_context(|| format!("no HTTP head in {text:?}"))?;
        let mut lines = head.lines();
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {status_line:?}"))?;
        if (100..200).contains(&status) && status != 101 {
            rest = body;
            continue;
        }
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        return Ok(Reply {
            status,
            headers,
            body: body.to_owned(),
        });
    }
}

/// `n` requests for `url` on one kept-alive connection (one curl, the URL
/// repeated), with `args` before; each answer's body, in order.
pub fn curl_many(pod: &Pod, url: &str, n: usize, args: &[&str]) -> Result<Vec<String>> {
    let mut cmd = pod.command("curl");
    cmd.args(["-s", "--max-time", "120", "-w", "\\n"])
        .args(args);
    for _ in 0..n {
        cmd.arg(url);
    }
    let out = cmd.output()?;
    if !out.status.success() {
        bail!(
            "curl x{n} {url} from {} failed ({}): {}",
            pod.name,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect())
}

/// The `pod` field of each echo answer (`""` for a body that is not one).
pub fn pods_of(bodies: &[String]) -> Vec<String> {
    bodies
        .iter()
        .map(|b| {
            serde_json::from_str::<serde_json::Value>(b)
                .ok()
                .and_then(|v| v["pod"].as_str().map(str::to_owned))
                .unwrap_or_default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interim_heads_are_skipped() {
        let r = parse("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\nX-A: b\r\n\r\nnope")
            .unwrap();
        assert_eq!(r.status, 404);
        assert_eq!(r.header("x-a"), Some("b"));
        assert_eq!(r.body, "nope");
    }
}
