//! Checked transfers both ways, for the fast path's tests (`tests/tests/fast_path.rs`).
//!
//! - `xfer-server PORT`: per connection, reads the line `UP DOWN RESET`, then
//!   sends DOWN bytes of pattern 2 and half-closes (or, RESET = 1, resets the
//!   connection with SO_LINGER 0 instead of half-closing) while it reads the
//!   client's bytes to the end, checking them against pattern 1. Prints one JSON
//!   line per connection: `{"up_received", "up_ok", "error", "would_block"}`.
//! - `xfer ADDR --up N --down M [--reset-server] [--reset-client]`: sends the
//!   line, then N bytes of pattern 1 and half-closes (or resets after them,
//!   `--reset-client`), while it reads to the end, checking pattern 2. Prints
//!   `{"peer", "down_received", "down_ok", "error", "would_block"}`.
//!
//! The patterns are deterministic, so each side checks every byte it gets, in
//! order, without the other side's help.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};

use super::{Result, flag, positional};

/// Bytes of a xorshift64 stream: the same seed gives the same bytes.
struct Pattern {
    state: u64,
    word: [u8; 8],
    used: usize,
}

impl Pattern {
    fn new(seed: u64) -> Self {
        Pattern {
            state: seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
            word: [0; 8],
            used: 8,
        }
    }

    fn fill(&mut self, out: &mut [u8]) {
        for b in out {
            if self.used == 8 {
                let mut x = self.state;
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                self.state = x;
                self.word = x.to_le_bytes();
                self.used = 0;
            }
            *b = self.word[self.used];
            self.used += 1;
        }
    }
}

const CHUNK: usize = 64 * 1024;

fn send_pattern(stream: &mut TcpStream, seed: u64, mut n: u64) -> std::io::Result<()> {
    let mut pattern = Pattern::new(seed);
    let mut buf = vec![0u8; CHUNK];
    while n > 0 {
        let len = n.min(CHUNK as u64) as usize;
        pattern.fill(&mut buf[..len]);
        stream.write_all(&buf[..len])?;
        n -= len as u64;
    }
    Ok(())
}

/// What a read to the end found.
struct Checked {
    bytes: u64,
    /// Every byte matched the pattern, in order.
    ok: bool,
    /// The error that ended it (none: end of stream).
    error: Option<String>,
    /// EAGAIN on this blocking socket, read through: the kernel's sockmap
    /// receive path (tcp_bpf_recvmsg, Linux 6.18) gives it to blocking readers
    /// woken without data, e.g. by their own half-close.
    would_block: u64,
}

impl Checked {
    fn json(&self, side: &str) -> String {
        let error = self
            .error
            .as_ref()
            .map_or("null".into(), |e| format!("{:?}", e.replace('"', "'")));
        format!(
            "\"{side}_received\":{},\"{side}_ok\":{},\"error\":{error},\"would_block\":{}",
            self.bytes, self.ok, self.would_block
        )
    }
}

/// Reads to the end, checking every byte against the pattern.
fn check_pattern(stream: &mut impl Read, seed: u64) -> Checked {
    let mut pattern = Pattern::new(seed);
    let (mut buf, mut want) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    let mut c = Checked {
        bytes: 0,
        ok: true,
        error: None,
        would_block: 0,
    };
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return c,
            Ok(n) => {
                pattern.fill(&mut want[..n]);
                c.ok &= buf[..n] == want[..n];
                c.bytes += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                c.would_block += 1;
                if c.would_block > 1_000_000 {
                    c.error = Some(e.to_string());
                    return c;
                }
            }
            Err(e) => {
                c.error = Some(e.to_string());
                return c;
            }
        }
    }
}

/// SO_LINGER 0: closing the last descriptor sends a reset, not a FIN.
fn reset(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket, and the option's value with its size.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
}

pub fn server(args: &[String]) -> Result<()> {
    let port = positional(args)?;
    let listener =
        TcpListener::bind(format!("0.0.0.0:{port}")).map_err(|e| format!("bind {port}: {e}"))?;
    println!("listening on {port}");
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || serve_one(stream));
    }
    Ok(())
}

fn serve_one(stream: TcpStream) {
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let fields: Vec<u64> = line
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    let [_up, down, reset_after] = fields[..] else {
        println!("{{\"error\":\"bad header {line:?}\"}}");
        return;
    };
    let mut writer = stream;
    if reset_after == 1 {
        let sent = send_pattern(&mut writer, 2, down);
        reset(&writer);
        drop((writer, reader));
        println!("{{\"reset_sent\":{}}}", sent.is_ok());
        return;
    }
    let sending = std::thread::spawn(move || {
        if send_pattern(&mut writer, 2, down).is_ok() {
            let _ = writer.shutdown(Shutdown::Write);
        }
    });
    let checked = check_pattern(&mut reader, 1);
    let _ = sending.join();
    println!("{{{}}}", checked.json("up"));
}

pub fn client(args: &[String]) -> Result<()> {
    let addr = positional(args)?;
    let (up, down) = (flag(args, "--up", 0)?, flag(args, "--down", 0)?);
    let reset_server = args.iter().any(|a| a == "--reset-server");
    let reset_client = args.iter().any(|a| a == "--reset-client");
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    let peer = stream.peer_addr().map_err(|e| e.to_string())?;
    writeln!(stream, "{up} {down} {}", u8::from(reset_server)).map_err(|e| e.to_string())?;
    if reset_client {
        let sent = send_pattern(&mut stream, 1, up);
        reset(&stream);
        drop(stream);
        println!("{{\"peer\":\"{peer}\",\"reset_sent\":{}}}", sent.is_ok());
        return Ok(());
    }
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let sending = std::thread::spawn(move || {
        if send_pattern(&mut writer, 1, up).is_ok() {
            let _ = writer.shutdown(Shutdown::Write);
        }
    });
    let checked = check_pattern(&mut stream, 2);
    let _ = sending.join();
    println!("{{\"peer\":\"{peer}\",{}}}", checked.json("down"));
    Ok(())
}
