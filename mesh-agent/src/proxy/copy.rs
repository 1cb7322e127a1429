//! Bidirectional byte copying between two streams, as the data path needs it:
//! half-close is propagated (EOF on one side shuts down writing on the other while
//! the opposite direction keeps flowing), an idle timeout closes both sides, each
//! direction owns one buffer that starts small and grows only while reads keep
//! filling it, up to a fixed bound (a slow peer stalls the reader instead of
//! growing memory; a bulk stream moves large chunks with few system calls); a
//! direction holds its buffer only while bytes flow: once everything read is
//! written and the reader has nothing more, the buffer is freed, so an idle
//! connection holds none (docs/architecture.md, "Limits"); and every write is
//! reported to an observer so counters move while a long connection is still
//! open.

use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::limits::{Budget, BudgetPermit};

/// Default starting size of each direction's buffer: enough for most
/// request/response exchanges in one read.
pub const DEFAULT_BUFFER_SIZE: usize = 16 * 1024;

/// Default bound on each direction's buffer, reached only by bulk transfers.
pub const DEFAULT_MAX_BUFFER_SIZE: usize = 256 * 1024;

/// Consecutive reads that fill the whole buffer before it doubles.
const FULL_READS_TO_GROW: u32 = 2;

/// Buffers moved per direction before yielding to the scheduler.
const MAX_ROUNDS_PER_POLL: usize = 32;

/// How a copy behaves.
#[derive(Clone, Debug)]
pub struct CopyConfig {
    /// Starting size of each direction's buffer.
    pub buffer_size: usize,
    /// Bound on each direction's buffer: with `buffer_size`, the only memory a
    /// copy holds.
    pub max_buffer_size: usize,
    /// Close both sides when no byte moved in either direction for this long.
    pub idle_timeout: Option<Duration>,
    /// Bytes by which buffers may grow past `buffer_size`, shared by every
    /// copy made with this config (node-wide in the agent): once spent, copies
    /// keep their starting buffers (docs/security.md, memory).
    pub growth: Budget,
    /// Bytes the buffers of every copy made with this config hold now: a
    /// gauge (it never refuses), read by tests and metrics.
    pub held: Budget,
}

impl Default for CopyConfig {
    fn default() -> Self {
        Self {
            buffer_size: DEFAULT_BUFFER_SIZE,
            max_buffer_size: DEFAULT_MAX_BUFFER_SIZE,
            idle_timeout: Some(Duration::from_secs(60 * 60)),
            growth: Budget::new(usize::MAX),
            held: Budget::new(usize::MAX),
        }
    }
}

/// Which way bytes were travelling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    AToB,
    BToA,
}

/// How a copy ended.
#[derive(Debug)]
pub enum CopyEnd {
    /// Both sides sent EOF and both shutdowns went through.
    Completed,
    /// Nothing moved for the configured idle timeout.
    IdleTimeout,
    /// An I/O error, in the direction where it happened.
    Error(Direction, io::Error),
}

/// Bytes moved each way and how the copy ended.
#[derive(Debug)]
pub struct CopyResult {
    pub a_to_b: u64,
    pub b_to_a: u64,
    pub end: CopyEnd,
}

impl CopyResult {
    pub fn is_ok(&self) -> bool {
        matches!(self.end, CopyEnd::Completed)
    }
}

/// Told about every chunk written, as it is written, and about the end.
pub trait CopyObserver {
    fn on_bytes(&mut self, direction: Direction, n: u64);
    fn on_end(&mut self, _result: &CopyResult) {}
}

impl CopyObserver for () {
    fn on_bytes(&mut self, _: Direction, _: u64) {}
}

impl<F: FnMut(Direction, u64)> CopyObserver for F {
    fn on_bytes(&mut self, direction: Direction, n: u64) {
        self(direction, n)
    }
}

/// Copies `a → b` and `b → a` until both directions are done, the idle timeout
/// fires, or either side fails. Neither stream is closed here beyond the
/// write-shutdowns that propagate EOF; the caller drops them.
pub async fn copy_bidirectional<A, B, O>(
    a: &mut A,
    b: &mut B,
    config: &CopyConfig,
    observer: &mut O,
) -> CopyResult
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
    O: CopyObserver + ?Sized,
{
    let size = config.buffer_size.max(1024);
    let max = config.max_buffer_size.max(size);
    let mut ab = Half::new(size, max, &config.growth, &config.held);
    let mut ba = Half::new(size, max, &config.growth, &config.held);
    let mut idle = config
        .idle_timeout
        .map(|d| (d, Box::pin(tokio::time::sleep(d))));
    let mut last_activity = Instant::now();

    let end = poll_fn(|cx| {
        let before = (ab.progress, ba.progress);
        let ab_done = match ab.poll_copy(cx, &mut *a, &mut *b, Direction::AToB, observer) {
            Poll::Ready(Err(e)) => return Poll::Ready(CopyEnd::Error(Direction::AToB, e)),
            Poll::Ready(Ok(())) => true,
            Poll::Pending => false,
        };
        let ba_done = match ba.poll_copy(cx, &mut *b, &mut *a, Direction::BToA, observer) {
            Poll::Ready(Err(e)) => return Poll::Ready(CopyEnd::Error(Direction::BToA, e)),
            Poll::Ready(Ok(())) => true,
            Poll::Pending => false,
        };
        if ab_done && ba_done {
            return Poll::Ready(CopyEnd::Completed);
        }
        if let Some((timeout, sleep)) = idle.as_mut() {
            if (ab.progress, ba.progress) != before {
                last_activity = Instant::now();
            }
            poll_idle(cx, sleep.as_mut(), last_activity, *timeout)
        } else {
            Poll::Pending
        }
    })
    .await;

    let result = CopyResult {
        a_to_b: ab.amount,
        b_to_a: ba.amount,
        end,
    };
    observer.on_end(&result);
    result
}

/// Ready once nothing has moved for `timeout`; re-arms the timer lazily, only
/// when it fires, so busy connections do not touch the timer wheel per chunk.
fn poll_idle(
    cx: &mut Context<'_>,
    mut sleep: Pin<&mut Sleep>,
    last_activity: Instant,
    timeout: Duration,
) -> Poll<CopyEnd> {
    loop {
        ready!(sleep.as_mut().poll(cx));
        let deadline = last_activity + timeout;
        if deadline <= Instant::now() {
            return Poll::Ready(CopyEnd::IdleTimeout);
        }
        sleep.as_mut().reset(deadline);
    }
}

/// One direction: a buffer while bytes flow, what part of it still has to be
/// written, and whether the reader is done and the writer shut down.
struct Half<'a> {
    /// No capacity while idle; `len` is what the last read filled.
    buf: Vec<u8>,
    /// The size the next buffer is allocated with.
    size: usize,
    /// What `buf` takes from the `held` gauge.
    holding: Option<BudgetPermit>,
    held: &'a Budget,
    max_size: usize,
    /// Where growth past the starting size is paid from, and what was paid.
    growth: &'a Budget,
    grown: Option<BudgetPermit>,
    /// Reads in a row that filled the whole buffer.
    full_reads: u32,
    pos: usize,
    filled: usize,
    read_eof: bool,
    shut_down: bool,
    need_flush: bool,
    amount: u64,
    /// Bumped whenever bytes are read or written; the idle timer watches it.
    progress: u64,
}

impl<'a> Half<'a> {
    fn new(size: usize, max_size: usize, growth: &'a Budget, held: &'a Budget) -> Self {
        Self {
            buf: Vec::new(),
            size,
            holding: None,
            held,
            max_size,
            growth,
            grown: None,
            full_reads: 0,
            pos: 0,
            filled: 0,
            read_eof: false,
            shut_down: false,
            need_flush: false,
            amount: 0,
            progress: 0,
        }
    }

    /// Doubles the (empty) buffer, up to the bound, once reads keep filling
    /// it: more data is waiting than one read takes.
    fn grow_if_busy(&mut self) {
        if self.full_reads >= FULL_READS_TO_GROW && self.size < self.max_size {
            self.full_reads = 0;
            let size = (self.size * 2).min(self.max_size);
            let extra = size - self.size;
            let paid = match &mut self.grown {
                Some(permit) => permit.grow(extra),
                None => {
                    self.grown = self.growth.try_take(extra);
                    self.grown.is_some()
                }
            };
            if paid {
                self.size = size;
                self.release(); // the next read allocates the larger one
            }
        }
    }

    /// Frees the buffer (it is empty: everything read was written).
    fn release(&mut self) {
        self.buf = Vec::new();
        self.holding = None;
    }

    /// The buffer to read into, allocated if the direction was idle; not
    /// zeroed (the reader fills what it reports).
    fn read_space(&mut self) -> &mut [std::mem::MaybeUninit<u8>] {
        if self.buf.capacity() == 0 {
            self.buf = Vec::with_capacity(self.size);
            self.holding = self.held.try_take(self.size);
        }
        self.buf.clear();
        let size = self.size;
        let spare = self.buf.spare_capacity_mut();
        let len = size.min(spare.len());
        &mut spare[..len]
    }

    fn poll_copy<R, W, O>(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut R,
        writer: &mut W,
        direction: Direction,
        observer: &mut O,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin + ?Sized,
        W: AsyncWrite + Unpin + ?Sized,
        O: CopyObserver + ?Sized,
    {
        // Yield after a few buffers so a always-ready pair cannot starve the
        // other direction or the runtime.
        for _ in 0..MAX_ROUNDS_PER_POLL {
            if self.shut_down {
                return Poll::Ready(Ok(()));
            }
            // Refill only once the buffer is fully written: the buffer is the bound.
            if self.pos == self.filled && !self.read_eof {
                self.grow_if_busy();
                let polled = {
                    let space = self.read_space();
                    let (start, capacity) = (space.as_ptr().cast::<u8>(), space.len());
                    let mut rb = ReadBuf::uninit(space);
                    match Pin::new(&mut *reader).poll_read(cx, &mut rb) {
                        // A reader may only fill the buffer it was given (as
                        // tokio's own `read_buf` checks).
                        Poll::Ready(Ok(()))
                            if !rb.filled().is_empty() && rb.filled().as_ptr() != start =>
                        {
                            Poll::Ready(Err(io::Error::other("the reader swapped the read buffer")))
                        }
                        Poll::Ready(Ok(())) => {
                            Poll::Ready(Ok((rb.filled().len().min(capacity), capacity)))
                        }
                        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                        Poll::Pending => Poll::Pending,
                    }
                };
                match polled {
                    Poll::Ready(Ok((n, capacity))) => {
                        // SAFETY: `ReadBuf` guarantees its filled part is
                        // initialized, and it is the start of `buf`'s spare
                        // capacity (checked above), at most `capacity` long.
                        unsafe { self.buf.set_len(n) };
                        if n == capacity {
                            self.full_reads += 1;
                        } else {
                            self.full_reads = 0;
                        }
                        self.pos = 0;
                        self.filled = n;
                        if n == 0 {
                            self.read_eof = true;
                            self.release();
                        } else {
                            self.progress += 1;
                        }
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        // Nothing more to read right now: the direction is
                        // idle, so it holds no buffer; push out what was written.
                        self.release();
                        if self.need_flush {
                            ready!(Pin::new(&mut *writer).poll_flush(cx))?;
                            self.need_flush = false;
                        }
                        return Poll::Pending;
                    }
                }
            }
            while self.pos < self.filled {
                let chunk = &self.buf[self.pos..self.filled];
                let n = ready!(Pin::new(&mut *writer).poll_write(cx, chunk))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.pos += n;
                self.amount += n as u64;
                self.progress += 1;
                self.need_flush = true;
                observer.on_bytes(direction, n as u64);
            }
            if self.read_eof {
                // EOF from the reader: flush and half-close the writer.
                ready!(Pin::new(&mut *writer).poll_shutdown(cx))?;
                self.shut_down = true;
                return Poll::Ready(Ok(()));
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests;
