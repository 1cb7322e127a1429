//! Body wrappers: streaming, never buffering. One counts the bytes of a
//! request body; the other counts a response body and reports the request
//! once, when the body ends, fails, or is dropped by a departing client.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::HeaderMap;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use super::BoxError;
use crate::telemetry::ResponseFlag;

/// How far a request body got: bytes passed on, and whether the client's
/// side failed (it went away mid-body).
#[derive(Debug, Default)]
pub struct Progress {
    pub bytes: AtomicU64,
    pub failed: AtomicBool,
}

/// Counts the data bytes of `inner` into a shared [`Progress`].
pub struct Counted<B> {
    inner: B,
    count: Arc<Progress>,
}

impl<B> Counted<B> {
    pub fn new(inner: B, count: Arc<Progress>) -> Self {
        Self { inner, count }
    }
}

impl<B> HttpBody for Counted<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                let n = f.data_ref().map_or(0, |d| d.len() as u64);
                self.count.bytes.fetch_add(n, Ordering::Relaxed);
            }
            Some(Err(_)) => self.count.failed.store(true, Ordering::Relaxed),
            None => {}
        }
        Poll::Ready(frame.map(|f| f.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Called once per request with (response body bytes, gRPC status, flag).
pub type Finish = Box<dyn FnOnce(u64, Option<u32>, ResponseFlag) + Send>;

/// A response body that reports its request when it ends.
pub struct Reporting<B> {
    inner: B,
    bytes: u64,
    grpc_status: Option<u32>,
    finish: Option<Finish>,
}

impl<B> Reporting<B> {
    /// `grpc_status`: from the response head, for trailers-only answers. A
    /// body that is already over (a `101`, `204`, `304` or `HEAD` answer,
    /// which hyper never polls) is reported at once.
    pub fn new(inner: B, grpc_status: Option<u32>, finish: Finish) -> Self
    where
        B: HttpBody,
    {
        let mut this = Self {
            inner,
            bytes: 0,
            grpc_status,
            finish: Some(finish),
        };
        if this.inner.is_end_stream() {
            this.report(ResponseFlag::None);
        }
        this
    }

    fn report(&mut self, flag: ResponseFlag) {
        if let Some(finish) = self.finish.take() {
            finish(self.bytes, self.grpc_status, flag);
        }
    }
}

/// The `grpc-status` of a head or trailers.
pub fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

impl<B> HttpBody for Reporting<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let Some(d) = f.data_ref() {
                    self.bytes += d.len() as u64;
                }
                let trailers = f.trailers_ref();
                if let Some(status) = trailers.and_then(grpc_status) {
                    self.grpc_status = Some(status);
                }
                // Trailers are the last frame; the server may not poll again.
                if trailers.is_some() || self.inner.is_end_stream() {
                    self.report(ResponseFlag::None);
                }
            }
            Some(Err(_)) => self.report(ResponseFlag::UpstreamRemoteReset),
            None => self.report(ResponseFlag::None),
        }
        Poll::Ready(frame.map(|f| f.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for Reporting<B> {
    fn drop(&mut self) {
        // Not ended: the client went away before the whole response.
        self.report(ResponseFlag::DownstreamConnectionTermination);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full, StreamBody};
    use std::sync::Mutex;

    type Seen = Arc<Mutex<Vec<(u64, Option<u32>, ResponseFlag)>>>;

    fn recorder() -> (Seen, Finish) {
        let seen: Seen = Arc::default();
        let s = Arc::clone(&seen);
        (
            seen,
            Box::new(move |b, g, f| s.lock().unwrap().push((b, g, f))),
        )
    }

    #[tokio::test]
    async fn a_whole_body_reports_once_with_its_size_and_trailer_status() {
        let (seen, finish) = recorder();
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "5".parse().unwrap());
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
            Ok(Frame::data(Bytes::from_static(b"hello"))),
            Ok(Frame::trailers(trailers)),
        ];
        let inner = StreamBody::new(futures_util::stream::iter(frames));
        let body = Reporting::new(inner, None, finish);
        let collected = body.collect().await.unwrap();
        assert_eq!(collected.to_bytes(), "hello");
        assert_eq!(*seen.lock().unwrap(), [(5, Some(5), ResponseFlag::None)]);
    }

    #[tokio::test]
    async fn trailers_and_empty_bodies_report_without_another_poll() {
        let (seen, finish) = recorder();
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![Ok(Frame::trailers(trailers))];
        let mut body = Reporting::new(
            StreamBody::new(futures_util::stream::iter(frames)),
            None,
            finish,
        );
        body.frame().await.unwrap().unwrap();
        drop(body);
        assert_eq!(*seen.lock().unwrap(), [(0, Some(0), ResponseFlag::None)]);

        let (seen, finish) = recorder();
        drop(Reporting::new(
            http_body_util::Empty::<Bytes>::new(),
            None,
            finish,
        ));
        assert_eq!(*seen.lock().unwrap(), [(0, None, ResponseFlag::None)]);
    }

    #[tokio::test]
    async fn a_dropped_body_reports_the_client_leaving() {
        let (seen, finish) = recorder();
        let body = Reporting::new(Full::new(Bytes::from_static(b"abc")), Some(0), finish);
        drop(body);
        assert_eq!(
            *seen.lock().unwrap(),
            [(0, Some(0), ResponseFlag::DownstreamConnectionTermination)]
        );
    }

    #[tokio::test]
    async fn request_bytes_are_counted() {
        let count = Arc::new(Progress::default());
        let body = Counted::new(Full::new(Bytes::from_static(b"12345")), Arc::clone(&count));
        body.collect().await.unwrap();
        assert_eq!(count.bytes.load(Ordering::Relaxed), 5);
        assert!(!count.failed.load(Ordering::Relaxed));
    }
}
