//! `weft-load`: the lab's traffic tool, run as a real process inside lab pods.
//!
//! Servers: `echo PORT [--name POD]` (echoes everything; a connection that
//! opens with an HTTP request is served as HTTP/1.1 or h2c instead, answering
//! JSON that describes the request and names POD: see `http_echo.rs`), `sink PORT` (reads and discards,
//! then reports the byte count back when the client half-closes), `http PORT`
//! (a minimal HTTP/1.1 server for the bench's wrk workload: every request, read
//! up to its blank line, gets `200` with a 1 KiB body on a kept-alive connection;
//! request bodies are not supported).
//! Clients, each printing one JSON line:
//! - `rr ADDR --conns N --secs S --size B`: N connections, each sending B bytes
//!   and waiting for the B-byte echo, back to back; latency percentiles.
//! - `connect ADDR --secs S --conns N`: new connection + one 1-byte echo each;
//!   rate and latency percentiles. With `--rate R`: paced at R per second,
//!   errors counted instead of ending the run (`paced.rs`).
//! - `bulk ADDR --mib M`: one connection streaming M MiB to a sink.
//! - `ping ADDR`: one connection; prints the peer our socket reports
//!   (getpeername) and the address the echo server saw us come from.
//! - `hold ADDR --conns N --secs S`: opens N connections, all at once open, each
//!   echoing once, keeps them S seconds, echoes once more on each and prints how
//!   many still work, then closes them.
//! - `say ADDR TEXT`: one connection; sends TEXT and checks the echo matches.
//! - `stream ADDR --secs S`: one connection echoing a line every 100 ms until
//!   it is closed under us (`closed`), an echo stalls 10 s (`stalled`) or S seconds pass (`timeout`); prints how it ended.
//! - `idle ADDR --conns N`: N connections kept open and silent until stdin
//!   closes (`idle.rs`).
//! - `xfer-server PORT`, `xfer ADDR --up N --down M`: checked transfers both
//!   ways with half-close or reset (`transfer.rs`).
//! - `flood ADDR --rate R --secs S --hold-ms H`: R connection attempts per second
//!   that never speak (as an unauthenticated client stuck before its TLS
//!   handshake), each kept open H ms unless the server closes it first; prints
//!   how many connected and how many failed to.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

mod http_echo;
mod idle;
mod paced;
mod transfer;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("echo") => {
            let name = args
                .iter()
                .position(|a| a == "--name")
                .and_then(|i| args.get(i + 1))
                .cloned()
                .unwrap_or_else(|| "unnamed".into());
            let _ = POD_NAME.set(name.leak());
            serve(&args, echo)
        }
        Some("sink") => serve(&args, sink),
        Some("http") => serve(&args, http),
        Some("rr") => request_response(&args),
        Some("connect") => connect_rate(&args),
        Some("bulk") => bulk(&args),
        Some("ping") => ping(&args),
        Some("hold") => hold(&args),
        Some("say") => say(&args),
        Some("stream") => stream(&args),
        Some("flood") => flood(&args),
        Some("idle") => idle::idle(&args),
        Some("xfer-server") => transfer::server(&args),
        Some("xfer") => transfer::client(&args),
        _ => Err("usage: weft-load echo|sink|http PORT | rr|connect|bulk ADDR [options]".into()),
    };
    if let Err(e) = result {
        eprintln!("weft-load: {e}");
        std::process::exit(1);
    }
}

type Result<T> = std::result::Result<T, String>;

fn flag(args: &[String], name: &str, default: u64) -> Result<u64> {
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .ok_or(format!("{name} needs a number")),
        None => Ok(default),
    }
}

fn positional(args: &[String]) -> Result<&str> {
    args.get(1)
        .map(String::as_str)
        .ok_or_else(|| "missing address or port".into())
}

fn serve(args: &[String], handler: fn(TcpStream)) -> Result<()> {
    let port = positional(args)?;
    let listener =
        TcpListener::bind(format!("0.0.0.0:{port}")).map_err(|e| format!("bind {port}: {e}"))?;
    println!("listening on {port}");
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || handler(stream));
    }
    Ok(())
}

const WHOAMI: &[u8] = b"whoami\n";

/// The pod this echo server runs in, as HTTP answers name it.
static POD_NAME: OnceLock<&'static str> = OnceLock::new();

fn echo(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    if opens_with_http(&stream) {
        return http_echo::serve(stream, POD_NAME.get().copied().unwrap_or("unnamed"));
    }
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = stream.read(&mut buf) {
        // `ping` asks who we think it is.
        let reply = if &buf[..n] == WHOAMI {
            stream
                .peer_addr()
                .map(|p| format!("{p}\n").into_bytes())
                .unwrap_or_default()
        } else {
            buf[..n].to_vec()
        };
        if n == 0 || stream.write_all(&reply).is_err() {
            break;
        }
    }
}

/// Peeks at the first bytes (blocking, as `read` would) until they tell
/// whether the client speaks HTTP.
fn opens_with_http(stream: &TcpStream) -> bool {
    let mut first = [0u8; 8];
    for _ in 0..100 {
        match stream.peek(&mut first) {
            Ok(0) | Err(_) => return false,
            Ok(n) => match http_echo::looks_like_http(&first[..n]) {
                Some(http) => return http,
                None => std::thread::sleep(Duration::from_millis(10)),
            },
        }
    }
    false
}

/// The body every `http` request gets.
const HTTP_BODY_LEN: usize = 1024;

fn http(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {HTTP_BODY_LEN}\r\n\r\n"
    )
    .into_bytes();
    response.resize(response.len() + HTTP_BODY_LEN, b'x');
    let mut buf = vec![0u8; 16 * 1024];
    let mut have = 0;
    loop {
        // Answer every complete request read so far (a client may pipeline).
        while let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
            if stream.write_all(&response).is_err() {
                return;
            }
            buf.copy_within(end + 4..have, 0);
            have -= end + 4;
        }
        if have == buf.len() {
            return; // a header larger than the buffer: not a client of ours
        }
        match stream.read(&mut buf[have..]) {
            Ok(0) | Err(_) => return,
            Ok(n) => have += n,
        }
    }
}

fn ping(args: &[String]) -> Result<()> {
    let mut stream = connect(positional(args)?)?;
    let peer = stream
        .peer_addr()
        .map_err(|e| format!("getpeername: {e}"))?;
    stream.write_all(WHOAMI).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 128];
    let n = stream
        .read(&mut buf)
        .map_err(|e| format!("read the echo: {e}"))?;
    let seen_as = String::from_utf8_lossy(&buf[..n]).trim().to_string();
    println!("{{\"peer\":\"{peer}\",\"seen_as\":\"{seen_as}\"}}");
    Ok(())
}

fn say(args: &[String]) -> Result<()> {
    let mut stream = connect(positional(args)?)?;
    let text = args.get(2).ok_or("missing TEXT")?;
    stream
        .write_all(text.as_bytes())
        .map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut echo = vec![0u8; text.len()];
    stream
        .read_exact(&mut echo)
        .map_err(|e| format!("read the echo: {e}"))?;
    if echo != text.as_bytes() {
        return Err(format!(
            "echo differs: {:?}",
            String::from_utf8_lossy(&echo)
        ));
    }
    println!("{{\"echoed\":{}}}", text.len());
    Ok(())
}

fn stream(args: &[String]) -> Result<()> {
    let mut stream = connect(positional(args)?)?;
    let secs = flag(args, "--secs", 30)?;
    // An echo that takes this long is a stall, told apart from a close: a
    // loaded machine may pause a proxy for a second or two, which is not
    // the connection being ended.
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let start = Instant::now();
    let mut echoes = 0u64;
    let ended = loop {
        if start.elapsed() >= Duration::from_secs(secs) {
            break "timeout";
        }
        let mut line = [0u8; 5];
        if stream.write_all(b"tick\n").is_err() {
            break "closed";
        }
        match stream.read_exact(&mut line) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break "stalled";
            }
            Err(_) => break "closed",
        }
        echoes += 1;
        // Announced once, so a test knows the connection is up.
        if echoes == 1 {
            println!("{{\"up\":true}}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    println!(
        "{{\"ended\":\"{ended}\",\"echoes\":{echoes},\"after_ms\":{}}}",
        start.elapsed().as_millis()
    );
    Ok(())
}

fn hold(args: &[String]) -> Result<()> {
    let addr = positional(args)?;
    let (conns, secs) = (flag(args, "--conns", 1000)?, flag(args, "--secs", 2)?);
    let mut open = Vec::with_capacity(conns as usize);
    for i in 0..conns {
        let mut stream = connect(addr).map_err(|e| format!("connection {i}: {e}"))?;
        stream
            .write_all(b"x")
            .map_err(|e| format!("connection {i}: {e}"))?;
        open.push(stream);
    }
    for (i, stream) in open.iter_mut().enumerate() {
        let mut one = [0u8; 1];
        stream
            .read_exact(&mut one)
            .map_err(|e| format!("echo on connection {i}: {e}"))?;
    }
    println!("{{\"open\":{}}}", open.len());
    std::thread::sleep(Duration::from_secs(secs));
    // Which connections still carry data after the wait?
    let mut survived = 0;
    for stream in open.iter_mut() {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let mut one = [0u8; 1];
        if stream.write_all(b"y").is_ok() && stream.read_exact(&mut one).is_ok() {
            survived += 1;
        }
    }
    println!("{{\"survived\":{survived}}}");
    Ok(())
}

fn flood(args: &[String]) -> Result<()> {
    let addr: std::net::SocketAddr = positional(args)?
        .parse()
        .map_err(|e| format!("address: {e}"))?;
    let (rate, secs) = (flag(args, "--rate", 500)?, flag(args, "--secs", 10)?);
    let hold = Duration::from_millis(flag(args, "--hold-ms", 1000)?);
    let interval = Duration::from_secs(1) / rate.max(1) as u32;
    let start = Instant::now();
    let mut open: std::collections::VecDeque<(Instant, TcpStream)> = Default::default();
    let (mut attempts, mut connected, mut failed) = (0u64, 0u64, 0u64);
    while start.elapsed() < Duration::from_secs(secs) {
        let due = start + interval * attempts as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        attempts += 1;
        match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
            Ok(s) => {
                connected += 1;
                open.push_back((Instant::now() + hold, s));
            }
            Err(_) => failed += 1,
        }
        while open
            .front()
            .is_some_and(|(until, _)| *until <= Instant::now())
        {
            open.pop_front();
        }
    }
    println!("{{\"attempts\":{attempts},\"connected\":{connected},\"failed\":{failed}}}");
    Ok(())
}

fn sink(mut stream: TcpStream) {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total: u64 = 0;
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    let _ = stream.write_all(&total.to_be_bytes());
}

fn connect(addr: &str) -> Result<TcpStream> {
    let stream = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    Ok(stream)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn request_response(args: &[String]) -> Result<()> {
    let addr = positional(args)?.to_string();
    let (conns, secs, size) = (
        flag(args, "--conns", 8)?,
        flag(args, "--secs", 3)?,
        flag(args, "--size", 1024)? as usize,
    );
    let deadline = Instant::now() + Duration::from_secs(secs);
    let workers: Vec<_> = (0..conns)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || -> Result<Vec<u64>> {
                let mut stream = connect(&addr)?;
                let request = vec![7u8; size];
                let mut reply = vec![0u8; size];
                let mut samples = Vec::new();
                while Instant::now() < deadline {
                    let start = Instant::now();
                    stream.write_all(&request).map_err(|e| e.to_string())?;
                    stream.read_exact(&mut reply).map_err(|e| e.to_string())?;
                    samples.push(start.elapsed().as_micros() as u64);
                }
                Ok(samples)
            })
        })
        .collect();
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.join().map_err(|_| "worker panicked")??);
    }
    all.sort_unstable();
    println!(
        "{{\"requests\":{},\"rps\":{:.0},\"p50_us\":{},\"p99_us\":{}}}",
        all.len(),
        all.len() as f64 / secs as f64,
        percentile(&all, 0.50),
        percentile(&all, 0.99)
    );
    Ok(())
}

fn connect_rate(args: &[String]) -> Result<()> {
    if args.iter().any(|a| a == "--rate") {
        return paced::run(args);
    }
    let addr = positional(args)?.to_string();
    let (conns, secs) = (flag(args, "--conns", 4)?, flag(args, "--secs", 3)?);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let workers: Vec<_> = (0..conns)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || -> Result<Vec<u64>> {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let start = Instant::now();
                    let mut stream = connect(&addr)?;
                    stream.write_all(b"x").map_err(|e| e.to_string())?;
                    let mut one = [0u8; 1];
                    stream.read_exact(&mut one).map_err(|e| e.to_string())?;
                    latencies.push(start.elapsed().as_micros() as u64);
                }
                Ok(latencies)
            })
        })
        .collect();
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.join().map_err(|_| "worker panicked")??);
    }
    all.sort_unstable();
    // Latency: connect plus one 1-byte echo, per connection.
    println!(
        "{{\"connections\":{},\"per_sec\":{:.0},\"p50_us\":{},\"p99_us\":{}}}",
        all.len(),
        all.len() as f64 / secs as f64,
        percentile(&all, 0.50),
        percentile(&all, 0.99)
    );
    Ok(())
}

fn bulk(args: &[String]) -> Result<()> {
    let addr = positional(args)?;
    let mib = flag(args, "--mib", 512)?;
    let mut stream = connect(addr)?;
    let chunk = vec![1u8; 256 * 1024];
    let start = Instant::now();
    for _ in 0..mib * 4 {
        stream.write_all(&chunk).map_err(|e| e.to_string())?;
    }
    stream
        .shutdown(Shutdown::Write)
        .map_err(|e| e.to_string())?;
    let mut received = [0u8; 8];
    stream
        .read_exact(&mut received)
        .map_err(|e| format!("sink's byte count: {e}"))?;
    let secs = start.elapsed().as_secs_f64();
    let bytes = u64::from_be_bytes(received);
    if bytes != mib * 1024 * 1024 {
        return Err(format!(
            "sink received {bytes} bytes of {}",
            mib * 1024 * 1024
        ));
    }
    println!(
        "{{\"bytes\":{bytes},\"secs\":{secs:.3},\"mib_per_sec\":{:.1}}}",
        bytes as f64 / secs / 1048576.0
    );
    Ok(())
}
