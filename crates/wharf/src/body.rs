//! The HTTP response body type for plain (non-upgrade) requests.

use std::error::Error as StdError;
use std::fmt;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::{Frame, SizeHint};

/// The error type of a [`Body`]: any error, boxed.
type BoxError = Box<dyn StdError + Send + Sync>;

/// A response body: a whole payload in one `Bytes`, or any
/// `http_body::Body` with `Bytes` data, boxed.
///
/// Build one from a string, `Bytes` or `Vec<u8>` with `From` (no boxing),
/// or wrap a streaming body with [`Body::new`]: it must be `Send`, not
/// `Sync` (axum's body, a stream adapter), and a `Body` is `Send` and
/// `Sync` all the same.
///
/// ```
/// use http_body_util::Full;
///
/// let whole = wharf::Body::from("okay");
/// let wrapped = wharf::Body::new(Full::new(bytes::Bytes::from_static(b"okay")));
/// # let _ = (whole, wrapped);
/// ```
pub struct Body(Kind);

enum Kind {
    /// The whole payload, until it is taken; `None` for an empty body.
    Full(Option<Bytes>),
    Boxed(Boxed),
}

/// A body that need not be `Sync`. The mutex is never locked: the body is
/// reached only through `&mut` (`Mutex::get_mut`), and what `&self` asks
/// (`is_end_stream`, `size_hint`) is answered from a copy taken when it was
/// wrapped and after each poll. So `Body` is `Sync` at no cost per frame
/// but two calls.
struct Boxed {
    body: Mutex<UnsyncBoxBody<Bytes, BoxError>>,
    end: bool,
    hint: SizeHint,
}

impl Body {
    /// Wraps any body whose data is `Bytes` and whose error converts into a
    /// boxed error: hyper's `Incoming`, an `http_body_util` adapter,
    /// axum's `Body`.
    pub fn new<B>(body: B) -> Self
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let (end, hint) = (body.is_end_stream(), body.size_hint());
        Self(Kind::Boxed(Boxed {
            body: Mutex::new(body.map_err(Into::into).boxed_unsync()),
            end,
            hint,
        }))
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self(Kind::Full(None))
    }
}

impl Default for Body {
    fn default() -> Self {
        Self::empty()
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match &mut self.0 {
            Kind::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Kind::Boxed(boxed) => {
                let body = boxed.body.get_mut().unwrap_or_else(PoisonError::into_inner);
                let frame = Pin::new(&mut *body).poll_frame(cx);
                boxed.end = body.is_end_stream();
                boxed.hint = body.size_hint();
                frame
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Full(data) => data.is_none(),
            Kind::Boxed(boxed) => boxed.end,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Full(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Kind::Boxed(boxed) => boxed.hint,
        }
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Self {
        Self(Kind::Full((!b.is_empty()).then_some(b)))
    }
}

impl From<&'static str> for Body {
    fn from(s: &'static str) -> Self {
        Bytes::from_static(s.as_bytes()).into()
    }
}

impl From<String> for Body {
    fn from(s: String) -> Self {
        Bytes::from(s).into()
    }
}

impl From<Vec<u8>> for Body {
    fn from(v: Vec<u8>) -> Self {
        Bytes::from(v).into()
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Body");
        if let Kind::Full(data) = &self.0 {
            d.field("len", &data.as_ref().map_or(0, Bytes::len));
        }
        d.finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use http_body_util::{BodyExt, Full, StreamBody};

    use super::*;

    const fn assert_send_sync<T: Send + Sync>() {}
    const _: () = assert_send_sync::<Body>();

    /// A body that is `Send` but not `Sync`, as axum's is.
    struct NotSync(Option<Bytes>, Cell<u8>);

    impl hyper::body::Body for NotSync {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.1.set(self.1.get() + 1);
            Poll::Ready(self.0.take().map(|d| Ok(Frame::data(d))))
        }

        fn is_end_stream(&self) -> bool {
            self.0.is_none()
        }

        fn size_hint(&self) -> SizeHint {
            SizeHint::with_exact(self.0.as_ref().map_or(0, |d| d.len() as u64))
        }
    }

    #[tokio::test]
    async fn a_body_that_is_not_sync_is_wrapped_and_its_hints_follow_it() {
        let mut body = Body::new(NotSync(Some(Bytes::from_static(b"hello")), Cell::new(0)));
        assert_eq!(hyper::body::Body::size_hint(&body).exact(), Some(5));
        assert!(!hyper::body::Body::is_end_stream(&body));
        let frame = body.frame().await.expect("a frame").expect("no error");
        assert_eq!(frame.into_data().expect("data"), "hello");
        assert!(hyper::body::Body::is_end_stream(&body));
        assert_eq!(hyper::body::Body::size_hint(&body).exact(), Some(0));
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn whole_and_wrapped_bodies_collect_the_same() {
        for body in [
            Body::from("abc"),
            Body::from(String::from("abc")),
            Body::from(b"abc".to_vec()),
            Body::new(Full::new(Bytes::from_static(b"abc"))),
            Body::new(StreamBody::new(futures_util::stream::iter([
                Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"a"))),
                Ok(Frame::data(Bytes::from_static(b"bc"))),
            ]))),
        ] {
            assert_eq!(body.collect().await.expect("collect").to_bytes(), "abc");
        }
        let empty = Body::from("");
        assert!(hyper::body::Body::is_end_stream(&empty));
        assert_eq!(hyper::body::Body::size_hint(&empty).exact(), Some(0));
        assert!(hyper::body::Body::is_end_stream(&Body::empty()));
    }
}
