//! `idle ADDR --conns N`: opens N connections to an echo server, proves each
//! carries bytes (one 1-byte echo, so every hop of the path is set up), prints
//! `{"open":N}` and keeps them open and silent until stdin closes; then closes
//! them and prints `{"closed":N}`. The bench reads what the idle connections
//! cost the agents while this waits (xtask/src/bench/idle_conns.rs).

use std::io::{BufRead, Read, Write};
use std::net::TcpStream;

use super::{Result, connect, flag, positional};

pub fn idle(args: &[String]) -> Result<()> {
    let addr = positional(args)?;
    let conns = flag(args, "--conns", 10_000)?;
    raise_open_files(conns + 64)?;
    let mut open = Vec::with_capacity(conns as usize);
    // In batches: every connection's byte in flight at once, then the echoes,
    // so opening 10,000 takes seconds, not one round trip each.
    let batch = 500usize;
    for start in (0..conns as usize).step_by(batch) {
        let end = (start + batch).min(conns as usize);
        for i in start..end {
            let mut stream: TcpStream =
                connect(addr).map_err(|e| format!("connection {i}: {e}"))?;
            stream
                .write_all(b"x")
                .map_err(|e| format!("connection {i}: {e}"))?;
            open.push(stream);
        }
        for (i, stream) in open[start..end].iter_mut().enumerate() {
            let mut one = [0u8; 1];
            stream
                .read_exact(&mut one)
                .map_err(|e| format!("echo on connection {}: {e}", start + i))?;
        }
    }
    println!("{{\"open\":{}}}", open.len());
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    // Wait for the bench to have measured: stdin reaches EOF.
    let mut line = String::new();
    while std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| e.to_string())?
        > 0
    {
        line.clear();
    }
    let closed = open.len();
    drop(open);
    println!("{{\"closed\":{closed}}}");
    Ok(())
}

/// Lifts the soft open-file limit to at least `want` (within the hard limit).
fn raise_open_files(want: u64) -> Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write and read only the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(format!("getrlimit: {}", std::io::Error::last_os_error()));
    }
    if lim.rlim_cur >= want {
        return Ok(());
    }
    if lim.rlim_max < want {
        return Err(format!(
            "{want} descriptors wanted, the hard limit is {}",
            lim.rlim_max
        ));
    }
    lim.rlim_cur = want;
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(format!("setrlimit: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}
