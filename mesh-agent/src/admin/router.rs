//! A minimal path router over hyper: each path maps to an async handler. New
//! endpoints (`/certs`, `/connections`, ...) are one `route` call each.

use std::{collections::BTreeMap, convert::Infallible, future::Future, pin::Pin, sync::Arc};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::{
    Method, Request, Response, StatusCode,
    body::Incoming,
    header::{ALLOW, CONTENT_TYPE, HeaderValue},
};

/// Response body of every admin endpoint: whole (JSON, text) or streamed (`/tap`).
pub type Body = UnsyncBoxBody<Bytes, Infallible>;
pub type HandlerFuture = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;
type Handler = Arc<dyn Fn(Request<Incoming>) -> HandlerFuture + Send + Sync>;

/// Routes requests by exact path.
#[derive(Clone, Default)]
pub struct Router {
    routes: BTreeMap<&'static str, Handler>,
}

impl Router {
    pub fn new() -> Self {
        Router::default()
    }

    /// Adds a handler for every method on `path`.
    pub fn route<F, Fut>(mut self, path: &'static str, handler: F) -> Self
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        self.routes
            .insert(path, Arc::new(move |req| Box::pin(handler(req))));
        self
    }

    /// Adds a handler for `GET` and `HEAD` on `path`; other methods get 405.
    pub fn get<F, Fut>(self, path: &'static str, handler: F) -> Self
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        self.route(path, move |req: Request<Incoming>| {
            let handler = handler.clone();
            async move {
                if req.method() != Method::GET && req.method() != Method::HEAD {
                    let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
                    r.headers_mut()
                        .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
                    return r;
                }
                handler(req).await
            }
        })
    }

    /// The registered paths.
    pub fn paths(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.routes.keys().copied()
    }

    pub async fn handle(&self, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
        match self.routes.get(req.uri().path()) {
            Some(h) => Ok(h(req).await),
            None => {
                let list: String = self.paths().map(|p| format!("  {p}\n")).collect();
                Ok(text(
                    StatusCode::NOT_FOUND,
                    &format!("not found; endpoints:\n{list}"),
                ))
            }
        }
    }
}

/// A plain-text response.
pub fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_owned())).boxed_unsync());
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// A JSON response (500 if the value cannot be serialized).
pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> Response<Body> {
    match serde_json::to_vec_pretty(value) {
        Ok(mut v) => {
            v.push(b'\n');
            let mut r = Response::new(Full::new(Bytes::from(v)).boxed_unsync());
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("serialization failed: {e}\n"),
        ),
    }
}
