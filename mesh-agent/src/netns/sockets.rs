//! Sockets made inside a pod's netns, all carrying the agent mark so the kernel
//! programs never capture the agent's own traffic.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;

use mesh_common::AGENT_MARK;
use socket2::{Domain, Protocol, Socket, Type};

use super::Netns;

fn marked_tcp_socket(addr: &SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(
        Domain::for_address(*addr),
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )?;
    socket.set_mark(AGENT_MARK)?;
    Ok(socket)
}

/// A listening socket bound to `addr` inside `netns`.
pub fn bind_listener(
    netns: &Netns,
    addr: SocketAddr,
    backlog: i32,
) -> io::Result<std::net::TcpListener> {
    let socket = netns.run(|| -> io::Result<Socket> {
        let socket = marked_tcp_socket(&addr)?;
        socket.set_reuse_address(true)?;
        if addr.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        socket.bind(&addr.into())?;
        socket.listen(backlog)?;
        Ok(socket)
    })??;
    Ok(socket.into())
}

/// Connects to `addr` from a socket created inside `netns`.
pub async fn connect_marked(netns: &Netns, addr: SocketAddr) -> io::Result<tokio::net::TcpStream> {
    let socket = netns.run(|| marked_tcp_socket(&addr))??;
    socket.set_tcp_nodelay(true)?;
    let std_stream: std::net::TcpStream = socket.into();
    let socket = tokio::net::TcpSocket::from_std_stream(std_stream);
    socket.connect(addr).await
}

/// The kernel's cookie for a netns (what `bpf_get_netns_cookie` returns), read
/// from a socket created inside it (`SO_NETNS_COOKIE`, Linux ≥ 5.14).
pub fn netns_cookie(netns: &Netns) -> io::Result<u64> {
    let socket = netns.run(|| Socket::new(Domain::IPV4, Type::DGRAM.cloexec(), None))??;
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    use std::os::fd::AsRawFd;
    // SAFETY: getsockopt writes at most `len` bytes into `cookie`.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cookie)
}
