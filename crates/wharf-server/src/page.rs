//! The chat web page, embedded in the binary: plain HTML, CSS and
//! JavaScript from `assets/`, with no build step.
//!
//! The page is served at `/` (unless `--static DIR` has an `index.html`)
//! and always at `/_wharf/chat`; its script and style live under the
//! reserved prefix `/_wharf/`, which static files never shadow. Each asset
//! has an `ETag` (a hash of its bytes), so browsers revalidate cheaply.

use std::sync::LazyLock;

use http::{HeaderValue, Response, StatusCode, header};
use wharf::Body;

/// One embedded file.
pub(crate) struct Asset {
    body: &'static str,
    content_type: &'static str,
    etag: LazyLock<String>,
}

macro_rules! asset {
    ($file:literal, $type:literal) => {{
        const BODY: &str = include_str!(concat!("../assets/", $file));
        Asset {
            body: BODY,
            content_type: $type,
            etag: LazyLock::new(|| format!("\"{:016x}\"", fnv1a(BODY.as_bytes()))),
        }
    }};
}

static INDEX: Asset = asset!("index.html", "text/html; charset=utf-8");
static SCRIPT: Asset = asset!("chat.js", "text/javascript; charset=utf-8");
static STYLE: Asset = asset!("chat.css", "text/css; charset=utf-8");

/// The page's content security policy: nothing but its own script, style
/// and WebSocket.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
frame-ancestors 'none'";

/// The chat page itself.
pub(crate) fn index() -> &'static Asset {
    &INDEX
}

/// The asset at a `/_wharf/` path, if there is one.
pub(crate) fn reserved(path: &str) -> Option<&'static Asset> {
    match path {
        "/_wharf/chat" => Some(&INDEX),
        "/_wharf/chat.js" => Some(&SCRIPT),
        "/_wharf/chat.css" => Some(&STYLE),
        _ => None,
    }
}

impl Asset {
    /// The response for a `GET` or `HEAD` with these request headers:
    /// `304` when `If-None-Match` has the asset's ETag.
    pub(crate) fn response(&self, headers: &http::HeaderMap, head: bool) -> Response<Body> {
        let etag: &str = &self.etag;
        let fresh = headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
        let mut res = if fresh {
            let mut res = Response::new(Body::empty());
            *res.status_mut() = StatusCode::NOT_MODIFIED;
            res
        } else if head {
            let mut res = Response::new(Body::empty());
            res.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(self.body.len()));
            res
        } else {
            Response::new(Body::from(self.body))
        };
        let h = res.headers_mut();
        if !fresh {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(self.content_type),
            );
        }
        if let Ok(v) = HeaderValue::from_str(etag) {
            h.insert(header::ETAG, v);
        }
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        res
    }
}

/// FNV-1a, 64 bits: a content hash for ETags, not for security.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}
