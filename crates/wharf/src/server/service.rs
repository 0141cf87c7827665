//! A tower `Service` as the request handler
//! ([`Server::on_request_service`](super::Server::on_request_service)).

use std::error::Error as StdError;
use std::future::poll_fn;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tower_service::Service;

use super::RequestHandler;
use crate::body::Body;

/// `service` as a request handler: a clone per request (as hyper's own
/// adapter does: `call` takes `&mut self`), readied, then called; its
/// error becomes a `500` with a one-line reason.
pub(super) fn handler<S, B>(service: S) -> RequestHandler
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    Arc::new(move |req| {
        let mut service = service.clone();
        Box::pin(async move {
            if let Err(e) = poll_fn(|cx| service.poll_ready(cx)).await {
                return failed(e.into());
            }
            match service.call(req).await {
                Ok(res) => res.map(Body::new),
                Err(e) => failed(e.into()),
            }
        })
    })
}

/// The response for a service that failed: `500`, a one-line reason.
fn failed(e: Box<dyn StdError + Send + Sync>) -> Response<Body> {
    tracing::warn!(error = %e, "request service failed");
    let mut res = Response::new(Body::from("the request service failed"));
    *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    res
}
