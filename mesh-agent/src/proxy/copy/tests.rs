use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};
use tokio::net::{TcpListener, TcpStream};

fn config(buffer_size: usize, idle: Option<Duration>) -> CopyConfig {
    CopyConfig {
        buffer_size,
        max_buffer_size: buffer_size,
        idle_timeout: idle,
        ..CopyConfig::default()
    }
}

/// `client ⇄ [a | copy | b] ⇄ server`, the copy running in a task.
fn proxied(
    pipe: usize,
    cfg: CopyConfig,
) -> (
    DuplexStream,
    DuplexStream,
    tokio::task::JoinHandle<(CopyResult, u64, u64)>,
) {
    let (client, mut a) = duplex(pipe);
    let (mut b, server) = duplex(pipe);
    let task = tokio::spawn(async move {
        let (mut seen_ab, mut seen_ba) = (0u64, 0u64);
        let mut obs = |d: Direction, n: u64| match d {
            Direction::AToB => seen_ab += n,
            Direction::BToA => seen_ba += n,
        };
        let r = copy_bidirectional(&mut a, &mut b, &cfg, &mut obs).await;
        (r, seen_ab, seen_ba)
    });
    (client, server, task)
}

async fn read_all(s: &mut (impl AsyncRead + Unpin)) -> Vec<u8> {
    let mut v = Vec::new();
    s.read_to_end(&mut v).await.unwrap();
    v
}

#[tokio::test]
async fn half_close_client_first_keeps_response_flowing() {
    let (mut client, mut server, task) = proxied(1024, config(4096, None));
    client.write_all(b"request").await.unwrap();
    client.shutdown().await.unwrap();
    // The server sees EOF after the request...
    assert_eq!(read_all(&mut server).await, b"request");
    // ...and can still answer on the other direction.
    server.write_all(b"response").await.unwrap();
    server.shutdown().await.unwrap();
    assert_eq!(read_all(&mut client).await, b"response");
    let (r, seen_ab, seen_ba) = task.await.unwrap();
    assert!(matches!(r.end, CopyEnd::Completed), "{:?}", r.end);
    assert_eq!((r.a_to_b, r.b_to_a), (7, 8));
    assert_eq!((seen_ab, seen_ba), (7, 8));
}

#[tokio::test]
async fn half_close_server_first_keeps_request_flowing() {
    let (mut client, mut server, task) = proxied(1024, config(4096, None));
    server.write_all(b"banner").await.unwrap();
    server.shutdown().await.unwrap();
    assert_eq!(read_all(&mut client).await, b"banner");
    client.write_all(b"late upload").await.unwrap();
    client.shutdown().await.unwrap();
    assert_eq!(read_all(&mut server).await, b"late upload");
    let (r, _, _) = task.await.unwrap();
    assert!(r.is_ok());
    assert_eq!((r.a_to_b, r.b_to_a), (11, 6));
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_closes_both_sides() {
    let idle = Duration::from_secs(30);
    let (mut client, mut server, task) = proxied(1024, config(4096, Some(idle)));
    // Activity keeps it alive past the timeout...
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(20)).await;
        client.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        server.read_exact(&mut one).await.unwrap();
    }
    assert!(!task.is_finished());
    // ...and silence ends it.
    let started = Instant::now();
    let (r, _, _) = task.await.unwrap();
    assert!(matches!(r.end, CopyEnd::IdleTimeout), "{:?}", r.end);
    assert!(started.elapsed() >= idle - Duration::from_secs(20));
    assert_eq!(r.a_to_b, 5);
    // The copy dropped its ends: both peers see EOF.
    assert!(read_all(&mut client).await.is_empty());
    assert!(read_all(&mut server).await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn slow_reader_blocks_writer_after_bounded_bytes() {
    const PIPE: usize = 4096;
    const BUF: usize = 16 * 1024;
    let (mut client, _server_never_reads, task) = proxied(PIPE, config(BUF, None));
    let chunk = [7u8; 1024];
    let mut accepted = 0usize;
    // With the clock paused, the timeout fires only once every task is stuck.
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            client.write_all(&chunk).await.unwrap();
            accepted += chunk.len();
            assert!(accepted < 10 * 1024 * 1024, "writer never blocked");
        }
    })
    .await;
    // Two pipes plus the copy's single buffer hold everything in flight.
    assert!(
        accepted <= PIPE + BUF + PIPE,
        "accepted {accepted} bytes with nobody reading"
    );
    // Reads from a pipe come in pipe-sized pieces, so at least the far pipe
    // filled up: bytes did cross the copy.
    assert!(accepted > 2 * PIPE, "accepted only {accepted}");
    assert!(!task.is_finished());
}

fn pattern(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

#[tokio::test]
async fn large_transfer_over_tcp_keeps_integrity() {
    // echo server <- copy -> client, all on loopback TCP.
    let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = echo.accept().await.unwrap();
        let (mut r, mut w) = s.split();
        tokio::io::copy(&mut r, &mut w).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front_addr = front.local_addr().unwrap();
    let proxy = tokio::spawn(async move {
        let (mut a, _) = front.accept().await.unwrap();
        let mut b = TcpStream::connect(echo_addr).await.unwrap();
        copy_bidirectional(&mut a, &mut b, &CopyConfig::default(), &mut ()).await
    });

    let data = pattern(8 * 1024 * 1024 + 13);
    let client = TcpStream::connect(front_addr).await.unwrap();
    let (mut r, mut w) = client.into_split();
    let to_send = data.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&to_send).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let got = read_all(&mut r).await;
    writer.await.unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data, "payload corrupted");
    let res = proxy.await.unwrap();
    assert!(res.is_ok(), "{:?}", res.end);
    assert_eq!(res.a_to_b, data.len() as u64);
    assert_eq!(res.b_to_a, data.len() as u64);
}

#[tokio::test]
async fn reset_peer_ends_with_error() {
    let up = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_addr = up.local_addr().unwrap();
    let (mut client, mut a) = duplex(1024);
    let mut b = TcpStream::connect(up_addr).await.unwrap();
    let (s, _) = up.accept().await.unwrap();
    let task = tokio::spawn(async move {
        copy_bidirectional(&mut a, &mut b, &CopyConfig::default(), &mut ()).await
    });
    s.set_zero_linger().unwrap();
    drop(s);
    // Whether the copy notices the reset on read or on this write, it fails.
    let _ = client.write_all(b"after reset").await;
    let r = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(r.end, CopyEnd::Error(..)), "{:?}", r.end);
}

/// Chunk sizes the copy wrote a → b while `feed` ran against it.
async fn chunk_sizes(cfg: CopyConfig, feed: impl AsyncFnOnce(&mut DuplexStream)) -> Vec<u64> {
    let (mut client, mut a) = duplex(1 << 20);
    let (mut b, mut server) = duplex(1 << 20);
    let copy = tokio::spawn(async move {
        let mut sizes = Vec::new();
        let mut obs = |d: Direction, n: u64| {
            if d == Direction::AToB {
                sizes.push(n)
            }
        };
        copy_bidirectional(&mut a, &mut b, &cfg, &mut obs).await;
        sizes
    });
    let drain = tokio::spawn(async move { read_all(&mut server).await.len() });
    feed(&mut client).await;
    client.shutdown().await.unwrap();
    drop(client);
    drain.await.unwrap();
    copy.await.unwrap()
}

#[tokio::test]
async fn buffer_grows_for_bulk_up_to_its_bound() {
    let cfg = CopyConfig {
        buffer_size: 1024,
        max_buffer_size: 8192,
        idle_timeout: None,
        ..CopyConfig::default()
    };
    let sizes = chunk_sizes(cfg, async |c| {
        for _ in 0..64 {
            c.write_all(&[7u8; 16 * 1024]).await.unwrap();
        }
    })
    .await;
    assert_eq!(sizes.iter().sum::<u64>(), 64 * 16 * 1024);
    assert_eq!(
        sizes.iter().max(),
        Some(&8192),
        "bulk reaches the bound, never more"
    );
}

#[tokio::test]
async fn buffers_grow_only_within_the_shared_budget() {
    // Room for one doubling (1 KiB to 2 KiB) and no more.
    let growth = Budget::new(1024);
    let cfg = CopyConfig {
        buffer_size: 1024,
        max_buffer_size: 8192,
        idle_timeout: None,
        growth: growth.clone(),
        ..CopyConfig::default()
    };
    let sizes = chunk_sizes(cfg, async |c| {
        for _ in 0..64 {
            c.write_all(&[7u8; 16 * 1024]).await.unwrap();
        }
    })
    .await;
    assert_eq!(sizes.iter().sum::<u64>(), 64 * 16 * 1024);
    assert_eq!(
        sizes.iter().max(),
        Some(&2048),
        "grew once, then the budget was spent"
    );
    assert_eq!(growth.used(), 0, "given back when the copy ended");
}

/// Bytes the copy's buffers hold once they settle (the copy task runs on).
async fn held_settles(held: &Budget, want: usize) -> usize {
    for _ in 0..100 {
        if held.used() == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    held.used()
}

#[tokio::test]
async fn a_direction_holds_its_buffer_only_while_bytes_flow() {
    let cfg = config(16 * 1024, None);
    let held = cfg.held.clone();
    let (mut client, mut server, task) = proxied(1024, cfg);
    // Before any byte: no buffer.
    assert_eq!(held_settles(&held, 0).await, 0);
    // Bytes both ways, then silence: an idle connection holds no buffer
    // (docs/architecture.md, "Limits").
    client.write_all(b"ping").await.unwrap();
    let mut four = [0u8; 4];
    server.read_exact(&mut four).await.unwrap();
    server.write_all(b"pong").await.unwrap();
    client.read_exact(&mut four).await.unwrap();
    assert_eq!(&four, b"pong");
    assert_eq!(held_settles(&held, 0).await, 0, "idle, yet buffers held");
    // A reader that does not keep up: the direction's buffer holds what it
    // could not write yet (each pipe takes 1 KiB: the second KiB waits in
    // the buffer).
    client.write_all(&[7u8; 2 * 1024]).await.unwrap();
    assert_eq!(held_settles(&held, 16 * 1024).await, 16 * 1024);
    let mut got = vec![0u8; 2 * 1024];
    server.read_exact(&mut got).await.unwrap();
    assert_eq!(got, vec![7u8; 2 * 1024]);
    assert_eq!(held_settles(&held, 0).await, 0, "written out, then freed");
    client.shutdown().await.unwrap();
    server.shutdown().await.unwrap();
    let (r, _, _) = task.await.unwrap();
    assert!(r.is_ok(), "{:?}", r.end);
    assert_eq!((r.a_to_b, r.b_to_a), (4 + 2 * 1024, 4));
    assert_eq!(held.used(), 0);
}
