//! Kernel-side `aya-log` records into the agent's own log.

use std::time::Duration;

use tracing::warn;

use super::load::KernelPrograms;

/// Starts a thread that drains the kernel log ring buffer into the `log` facade,
/// which `tracing-log` forwards to the agent's subscriber. Returns false when the
/// programs carry no log buffer.
pub fn forward_kernel_logs(programs: &mut KernelPrograms) -> bool {
    let Some(mut logger) = programs.take_logger() else {
        return false;
    };
    let spawned = std::thread::Builder::new()
        .name("kernel-logs".into())
        .spawn(move || {
            use std::os::fd::AsFd;
            loop {
                let mut fds = [nix::poll::PollFd::new(
                    logger.as_fd(),
                    nix::poll::PollFlags::POLLIN,
                )];
                // Poll with a timeout so a quiet buffer still gets flushed regularly.
                let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(500u16));
                logger.flush();
                std::thread::sleep(Duration::from_millis(10));
            }
        });
    if let Err(e) = spawned {
        warn!(error = %e, "cannot start the kernel log thread");
        return false;
    }
    true
}
