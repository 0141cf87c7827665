//! The opening handshake (RFC 6455 §4.2) as pure functions over `http` types:
//! validate a request, compute `Sec-WebSocket-Accept`, pick a subprotocol,
//! build the `101` response, or say why not with a status and one line; and
//! the client's side ([`ClientHandshake`]): the request, and the checks of
//! the server's response (§4.1).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use sha1::{Digest, Sha1};

use crate::deflate::{self, DeflateConfig, DeflateParams, Offer};

mod client;

pub use client::{Accepted, ClientHandshake, ResponseError};

/// The GUID of RFC 6455 §1.3.
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Key`.
pub const SEC_WEBSOCKET_KEY: HeaderName = HeaderName::from_static("sec-websocket-key");
/// `Sec-WebSocket-Accept`.
pub const SEC_WEBSOCKET_ACCEPT: HeaderName = HeaderName::from_static("sec-websocket-accept");
/// `Sec-WebSocket-Version`.
pub const SEC_WEBSOCKET_VERSION: HeaderName = HeaderName::from_static("sec-websocket-version");
/// `Sec-WebSocket-Protocol`.
pub const SEC_WEBSOCKET_PROTOCOL: HeaderName = HeaderName::from_static("sec-websocket-protocol");
/// `Sec-WebSocket-Extensions`.
pub const SEC_WEBSOCKET_EXTENSIONS: HeaderName =
    HeaderName::from_static("sec-websocket-extensions");

/// The `Sec-WebSocket-Accept` value for a `Sec-WebSocket-Key` (§4.2.2).
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(GUID);
    STANDARD.encode(sha.finalize())
}

/// Whether a request asks for a WebSocket upgrade at all (its `Upgrade`
/// header names `websocket`). Such requests go to [`Handshake::validate`];
/// the rest are plain HTTP.
pub fn is_upgrade_request<B>(req: &Request<B>) -> bool {
    has_token(req.headers(), &header::UPGRADE, "websocket")
}

/// A valid opening handshake request, ready to be answered.
#[derive(Clone, Debug)]
pub struct Handshake {
    accept: HeaderValue,
    protocols: Vec<String>,
    deflate_offers: Vec<Offer>,
}

/// A refused handshake: the HTTP status and a one-line reason for the body.
#[derive(Clone, Copy, Debug, Eq, PartialEq, thiserror::Error)]
#[error("{status}: {reason}")]
pub struct Reject {
    /// The response status.
    pub status: StatusCode,
    /// One line saying why, sent as the body.
    pub reason: &'static str,
}

impl Reject {
    const fn new(status: StatusCode, reason: &'static str) -> Self {
        Self { status, reason }
    }

    /// The response to send: the status, the reason as a `text/plain` body,
    /// and `Sec-WebSocket-Version: 13` on a 426 (§4.2.2) or `Allow: GET` on a
    /// 405.
    pub fn to_response(&self) -> Response<&'static str> {
        refusal(self.status, self.reason)
    }
}

/// A refusal response: `status`, `body` (one line saying why) as
/// `text/plain`, and the header the status calls for:
/// `Sec-WebSocket-Version: 13` on a 426 (§4.2.2), `Allow: GET` on a 405.
pub fn refusal<B>(status: StatusCode, body: B) -> Response<B> {
    let mut res = Response::new(body);
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    match status {
        StatusCode::UPGRADE_REQUIRED => {
            h.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        }
        StatusCode::METHOD_NOT_ALLOWED => {
            h.insert(header::ALLOW, HeaderValue::from_static("GET"));
        }
        _ => {}
    }
    res
}

impl Handshake {
    /// Validates a request's method, version and headers (§4.2.1).
    ///
    /// # Errors
    /// A [`Reject`] naming the first requirement that failed: 405 for a
    /// method other than GET, 505 for HTTP/1.0, 426 for a missing or
    /// unsupported `Sec-WebSocket-Version`, 400 for everything else,
    /// including a `Sec-WebSocket-Extensions` header that does not parse.
    pub fn validate(
        method: &Method,
        version: Version,
        headers: &HeaderMap,
    ) -> Result<Self, Reject> {
        if method != Method::GET {
            return Err(Reject::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "websocket upgrade requires GET",
            ));
        }
        if version < Version::HTTP_11 {
            return Err(Reject::new(
                StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                "websocket upgrade requires HTTP/1.1",
            ));
        }
        if !headers.contains_key(header::HOST) {
            return Err(Reject::new(StatusCode::BAD_REQUEST, "missing Host header"));
        }
        if !has_token(headers, &header::UPGRADE, "websocket") {
            return Err(Reject::new(
                StatusCode::BAD_REQUEST,
                "Upgrade header must name websocket",
            ));
        }
        if !has_token(headers, &header::CONNECTION, "upgrade") {
            return Err(Reject::new(
                StatusCode::BAD_REQUEST,
                "Connection header must name upgrade",
            ));
        }
        let mut versions = headers.get_all(SEC_WEBSOCKET_VERSION).iter();
        match (versions.next(), versions.next()) {
            (Some(v), None) if v.as_bytes().trim_ascii() == b"13" => {}
            _ => {
                return Err(Reject::new(
                    StatusCode::UPGRADE_REQUIRED,
                    "unsupported Sec-WebSocket-Version: only 13 is supported",
                ));
            }
        }
        let mut keys = headers.get_all(SEC_WEBSOCKET_KEY).iter();
        let key = match (keys.next(), keys.next()) {
            (Some(k), None) => k.as_bytes().trim_ascii(),
            (None, _) => {
                return Err(Reject::new(
                    StatusCode::BAD_REQUEST,
                    "missing Sec-WebSocket-Key",
                ));
            }
            (Some(_), Some(_)) => {
                return Err(Reject::new(
                    StatusCode::BAD_REQUEST,
                    "more than one Sec-WebSocket-Key",
                ));
            }
        };
        let mut raw = [0u8; 24];
        if !matches!(STANDARD.decode_slice(key, &mut raw), Ok(16)) {
            return Err(Reject::new(
                StatusCode::BAD_REQUEST,
                "Sec-WebSocket-Key must be 16 bytes in base64",
            ));
        }
        let accept = HeaderValue::try_from(accept_key(key)).map_err(|_| {
            Reject::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot encode accept key",
            )
        })?;
        let protocols = tokens(headers, &SEC_WEBSOCKET_PROTOCOL)
            .map(str::to_owned)
            .collect();
        let deflate_offers = deflate::parse_offers(
            headers.get_all(SEC_WEBSOCKET_EXTENSIONS).iter(),
        )
        .map_err(|_| {
            Reject::new(
                StatusCode::BAD_REQUEST,
                "malformed Sec-WebSocket-Extensions header",
            )
        })?;
        Ok(Self {
            accept,
            protocols,
            deflate_offers,
        })
    }

    /// Validates a whole request; see [`Handshake::validate`].
    ///
    /// # Errors
    /// As for [`Handshake::validate`].
    pub fn from_request<B>(req: &Request<B>) -> Result<Self, Reject> {
        Self::validate(req.method(), req.version(), req.headers())
    }

    /// The subprotocols the client offered, in its order of preference.
    pub fn protocols(&self) -> &[String] {
        &self.protocols
    }

    /// The first protocol the client offered that `supported` contains.
    pub fn select_protocol(&self, supported: &[&str]) -> Option<&str> {
        self.protocols
            .iter()
            .map(String::as_str)
            .find(|p| supported.contains(p))
    }

    /// Accepts the first acceptable `permessage-deflate` offer under `config`
    /// (RFC 7692 §5.1): the agreed parameters, and the
    /// `Sec-WebSocket-Extensions` value for [`Handshake::response`]. `None`
    /// if the client offered nothing acceptable.
    pub fn negotiate_deflate(
        &self,
        config: &DeflateConfig,
    ) -> Option<(DeflateParams, HeaderValue)> {
        deflate::negotiate(&self.deflate_offers, config)
    }

    /// The `Sec-WebSocket-Accept` value.
    pub fn accept(&self) -> &HeaderValue {
        &self.accept
    }

    /// The `101 Switching Protocols` response head of
    /// [`Handshake::response`], as bytes appended to `out`, for a server
    /// that writes it to the socket itself.
    pub fn write_response(
        &self,
        protocol: Option<&str>,
        extensions: Option<&HeaderValue>,
        out: &mut Vec<u8>,
    ) {
        out.extend_from_slice(
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\
              connection: Upgrade\r\nsec-websocket-accept: ",
        );
        out.extend_from_slice(self.accept.as_bytes());
        out.extend_from_slice(b"\r\n");
        if let Some(p) = protocol.filter(|p| HeaderValue::from_str(p).is_ok()) {
            out.extend_from_slice(b"sec-websocket-protocol: ");
            out.extend_from_slice(p.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if let Some(e) = extensions {
            out.extend_from_slice(b"sec-websocket-extensions: ");
            out.extend_from_slice(e.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }

    /// The `101 Switching Protocols` response, naming `protocol` if one was
    /// chosen (it should be one the client offered) and the agreed
    /// `extensions` (from [`Handshake::negotiate_deflate`]).
    pub fn response(
        &self,
        protocol: Option<&str>,
        extensions: Option<&HeaderValue>,
    ) -> Response<()> {
        let mut res = Response::new(());
        *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = res.headers_mut();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(SEC_WEBSOCKET_ACCEPT, self.accept.clone());
        if let Some(p) = protocol.and_then(|p| HeaderValue::from_str(p).ok()) {
            h.insert(SEC_WEBSOCKET_PROTOCOL, p);
        }
        if let Some(e) = extensions {
            h.insert(SEC_WEBSOCKET_EXTENSIONS, e.clone());
        }
        res
    }
}

/// The comma-separated tokens of every `name` header, trimmed, empty ones
/// skipped.
fn tokens<'a>(headers: &'a HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Whether a comma-separated header value (`Upgrade`, `Connection`) lists
/// `token`, compared without regard to ASCII case.
pub fn lists_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .any(|v| lists_token(v.as_bytes(), token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(f: impl FnOnce(http::request::Builder) -> http::request::Builder) -> Request<()> {
        let b = Request::get("/chat")
            .header("host", "server.example.com")
            .header("upgrade", "websocket")
            .header("connection", "keep-alive, Upgrade")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("sec-websocket-version", "13");
        f(b).body(()).unwrap()
    }

    fn reject(req: &Request<()>) -> (StatusCode, &'static str) {
        let r = Handshake::from_request(req).unwrap_err();
        (r.status, r.reason)
    }

    #[test]
    fn finds_tokens_in_comma_separated_values() {
        assert!(lists_token(b"keep-alive, Upgrade", "upgrade"));
        assert!(lists_token(b" WebSocket ", "websocket"));
        assert!(!lists_token(b"websockets, h2c", "websocket"));
        assert!(!lists_token(b"", "websocket"));
    }

    #[test]
    fn rfc6455_1_3_accept_key() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn accepts_valid_request_with_101() {
        let req = request(|b| b.header("sec-websocket-protocol", "chat, superchat"));
        let hs = Handshake::from_request(&req).unwrap();
        assert_eq!(hs.protocols(), ["chat", "superchat"]);
        assert_eq!(hs.select_protocol(&["superchat"]), Some("superchat"));
        let res = hs.response(Some("superchat"), None);
        assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(
            res.headers()["sec-websocket-accept"],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(res.headers()["sec-websocket-protocol"], "superchat");
        // The same head as bytes: every header of `response`, nothing else.
        let ext = HeaderValue::from_static("permessage-deflate");
        let mut out = Vec::new();
        hs.write_response(Some("superchat"), Some(&ext), &mut out);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\
             connection: Upgrade\r\nsec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
             sec-websocket-protocol: superchat\r\n\
             sec-websocket-extensions: permessage-deflate\r\n\r\n"
        );
        let res = hs.response(Some("superchat"), Some(&ext));
        for (name, value) in res.headers() {
            let line = format!("{name}: {}\r\n", value.to_str().unwrap());
            assert!(
                text.contains(&line.to_ascii_lowercase()) || text.contains(&line),
                "{line}"
            );
        }
    }

    #[test]
    fn upgrade_and_connection_tokens_are_case_insensitive() {
        let req = request(|b| {
            b.header("upgrade", "WebSocket")
                .header("connection", "UPGRADE")
        });
        assert!(Handshake::from_request(&req).is_ok());
    }

    #[test]
    fn rejects_non_get_with_405() {
        let mut req = request(|b| b);
        *req.method_mut() = Method::POST;
        assert_eq!(reject(&req).0, StatusCode::METHOD_NOT_ALLOWED);
    }

    #[test]
    fn rejects_http_10() {
        let mut req = request(|b| b);
        *req.version_mut() = Version::HTTP_10;
        assert_eq!(reject(&req).0, StatusCode::HTTP_VERSION_NOT_SUPPORTED);
    }

    #[test]
    fn rejects_wrong_version_with_426_and_supported_version() {
        let mut req = request(|b| b);
        req.headers_mut()
            .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
        let r = Handshake::from_request(&req).unwrap_err();
        assert_eq!(r.status, StatusCode::UPGRADE_REQUIRED);
        assert_eq!(r.to_response().headers()["sec-websocket-version"], "13");
    }

    #[test]
    fn rejects_bad_keys() {
        let mut req = request(|b| b);
        req.headers_mut().remove(SEC_WEBSOCKET_KEY);
        assert_eq!(
            reject(&req),
            (StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key")
        );
        req.headers_mut()
            .insert(SEC_WEBSOCKET_KEY, HeaderValue::from_static("c2hvcnQ="));
        assert_eq!(reject(&req).0, StatusCode::BAD_REQUEST);
        let req = request(|b| b.header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="));
        assert_eq!(
            reject(&req),
            (StatusCode::BAD_REQUEST, "more than one Sec-WebSocket-Key")
        );
    }

    #[test]
    fn rejects_missing_host_upgrade_and_connection() {
        let mut req = request(|b| b);
        req.headers_mut().remove(header::HOST);
        assert_eq!(
            reject(&req),
            (StatusCode::BAD_REQUEST, "missing Host header")
        );
        let mut req = request(|b| b);
        req.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        assert_eq!(reject(&req).0, StatusCode::BAD_REQUEST);
        let mut req = request(|b| b);
        req.headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        assert!(!is_upgrade_request(&req));
        assert_eq!(reject(&req).0, StatusCode::BAD_REQUEST);
    }
}
