//! Bytes → the client side of one tunnel connection (HTTP/2 `CONNECT`), served
//! by `serve_connection` over an in-memory pipe. Even ports of the target are
//! accepted with an in-memory echo upstream, odd ones refused. Time is paused:
//! every timeout of the server fires as soon as nothing else can run, so a hang
//! shows as a libFuzzer timeout and a slow peer costs no real time.
#![no_main]

use std::{net::SocketAddr, sync::Arc, time::Duration};

use libfuzzer_sys::fuzz_target;
use mesh_agent::proxy::{
    Refusal, TunnelConfig,
    copy::CopyConfig,
    tunnel::{StreamHandler, serve_connection},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_util::sync::CancellationToken;

struct Echo;

impl StreamHandler<()> for Echo {
    type Upstream = DuplexStream;
    type Session = ();

    async fn open(&self, target: SocketAddr, _peer: &()) -> Result<(DuplexStream, ()), Refusal> {
        if target.port() % 2 == 1 {
            return Err(Refusal::forbidden("odd port"));
        }
        let (upstream, mut app) = tokio::io::duplex(4096);
        tokio::spawn(async move {
            let (mut r, mut w) = tokio::io::split(&mut app);
            let _ = tokio::io::copy(&mut r, &mut w).await;
        });
        Ok((upstream, ()))
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
    else {
        return;
    };
    rt.block_on(async {
        let config = TunnelConfig {
            connect_timeout: Duration::from_secs(1),
            keepalive_interval: None,
            ..TunnelConfig::default()
        };
        let copy = CopyConfig {
            idle_timeout: Some(Duration::from_secs(1)),
            ..CopyConfig::default()
        };
        let (client, server) = tokio::io::duplex(64 * 1024);
        let cancel = CancellationToken::new();
        let serve = serve_connection(server, (), Arc::new(Echo), &config, &copy, cancel.clone());
        let (mut rx, mut tx) = tokio::io::split(client);
        let peer = async move {
            let _ = tx.write_all(data).await;
            // Let the server act on everything before the peer closes.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let _ = tx.shutdown().await;
        };
        let drain = async move {
            let mut buf = [0u8; 16 * 1024];
            while matches!(rx.read(&mut buf).await, Ok(n) if n > 0) {}
        };
        // Virtual time: a bound on the server's own timeouts, not on real time.
        let _ = tokio::time::timeout(Duration::from_secs(30), async {
            tokio::join!(serve, peer, drain)
        })
        .await;
        cancel.cancel();
    });
});
