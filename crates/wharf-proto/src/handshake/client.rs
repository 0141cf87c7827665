//! The opening handshake from the client's side (RFC 6455 §4.1): the
//! upgrade request made from a key the caller draws (the core draws no
//! randomness), and the server's response checked rule by rule.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use super::{
    SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_EXTENSIONS, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL,
    SEC_WEBSOCKET_VERSION, accept_key, has_token, tokens,
};
use crate::deflate::{self, DeflateConfig, DeflateParams};

/// A client's opening handshake: the request to send, and the check of the
/// server's answer.
///
/// ```
/// use http::{HeaderMap, StatusCode};
/// use wharf_proto::handshake::{ClientHandshake, SEC_WEBSOCKET_ACCEPT};
///
/// // RFC 6455 §1.3's example key (use 16 unpredictable bytes).
/// let hs = ClientHandshake::new(*b"the sample nonce").protocols(["chat"]);
/// let mut request = Vec::new();
/// hs.write_request("server.example.com", "/chat", &HeaderMap::new(), &mut request);
/// assert!(request.starts_with(b"GET /chat HTTP/1.1\r\n"));
///
/// let mut headers = HeaderMap::new();
/// headers.insert("upgrade", "websocket".parse().unwrap());
/// headers.insert("connection", "Upgrade".parse().unwrap());
/// headers.insert(SEC_WEBSOCKET_ACCEPT, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".parse().unwrap());
/// headers.insert("sec-websocket-protocol", "chat".parse().unwrap());
/// let accepted = hs.validate(StatusCode::SWITCHING_PROTOCOLS, &headers).unwrap();
/// assert_eq!(accepted.protocol(), Some("chat"));
/// ```
#[derive(Clone, Debug)]
pub struct ClientHandshake {
    key: HeaderValue,
    protocols: Vec<String>,
    deflate: Option<DeflateConfig>,
}

/// What the server agreed to in a valid `101` response.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Accepted {
    protocol: Option<String>,
    deflate: Option<DeflateParams>,
}

impl Accepted {
    /// The subprotocol the server chose (one of those offered), if any.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// The permessage-deflate parameters agreed, as the server sees them
    /// (`server_*` is the server's compressor): give them to
    /// [`Connection::with_deflate`](crate::Connection::with_deflate) of a
    /// client connection, which mirrors them.
    pub fn deflate(&self) -> Option<DeflateParams> {
        self.deflate
    }
}

/// A response that does not complete the handshake, and the rule it broke.
#[derive(Clone, Debug, Eq, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ResponseError {
    /// `Sec-WebSocket-Accept` is missing, repeated, or not the value of
    /// our key (§4.1, item 4 of the response checks).
    #[error("Sec-WebSocket-Accept is missing or does not match the key")]
    Accept,
    /// The `Connection` header does not name `upgrade` (§4.1, item 3).
    #[error("the response's Connection header does not name upgrade")]
    Connection,
    /// The permessage-deflate answer breaks RFC 7692 §7.1 or does not
    /// match the offer; the reason names the rule.
    #[error("invalid permessage-deflate response: {0}")]
    Deflate(&'static str),
    /// The server accepted an extension that was not offered (§4.1, item
    /// 5), or its `Sec-WebSocket-Extensions` does not parse.
    #[error("the server accepted an extension that was not offered")]
    Extension,
    /// The server chose a subprotocol that was not offered, or several
    /// (§4.1, item 6).
    #[error("the server chose a subprotocol that was not offered")]
    Protocol,
    /// The status is not `101 Switching Protocols`: the server refused
    /// (or redirected) the upgrade.
    #[error("the server answered {0}, not 101")]
    Status(StatusCode),
    /// The `Upgrade` header does not name `websocket` (§4.1, item 2).
    #[error("the response's Upgrade header does not name websocket")]
    Upgrade,
}

/// Headers the handshake sets itself: a caller's extra headers of these
/// names are left out of the request.
const OWN: [HeaderName; 7] = [
    header::HOST,
    header::UPGRADE,
    header::CONNECTION,
    SEC_WEBSOCKET_KEY,
    SEC_WEBSOCKET_VERSION,
    SEC_WEBSOCKET_PROTOCOL,
    SEC_WEBSOCKET_EXTENSIONS,
];

impl ClientHandshake {
    /// A handshake with `key`, 16 bytes that must be unpredictable and
    /// fresh for every connection (§4.1; the caller draws them).
    pub fn new(key: [u8; 16]) -> Self {
        let key = HeaderValue::try_from(STANDARD.encode(key))
            .unwrap_or(HeaderValue::from_static("AAAAAAAAAAAAAAAAAAAAAA=="));
        Self {
            key,
            protocols: Vec::new(),
            deflate: None,
        }
    }

    /// Offers these subprotocols, most preferred first. Names that are not
    /// valid header values are left out.
    #[must_use]
    pub fn protocols<S: Into<String>>(mut self, protocols: impl IntoIterator<Item = S>) -> Self {
        self.protocols = protocols
            .into_iter()
            .map(Into::into)
            .filter(|p| !p.is_empty() && !p.contains(',') && HeaderValue::from_str(p).is_ok())
            .collect();
        self
    }

    /// Offers permessage-deflate under `config`, read from the client's
    /// side: `context_takeover: false` asks both ends to reset per message;
    /// `server_max_window_bits` below 15 asks the server for that window at
    /// most; `client_max_window_bits` below 15 caps ours, and 15 lets the
    /// server choose any, 8 included (see [`crate::deflate`]).
    #[must_use]
    pub fn deflate(mut self, config: DeflateConfig) -> Self {
        self.deflate = Some(config);
        self
    }

    /// The `Sec-WebSocket-Key` value.
    pub fn key(&self) -> &HeaderValue {
        &self.key
    }

    /// The `Sec-WebSocket-Extensions` value offered, if any.
    pub fn extensions(&self) -> Option<HeaderValue> {
        self.deflate.as_ref().map(deflate::client::offer_value)
    }

    /// Appends the request head to `out`: `GET target HTTP/1.1`, `Host`,
    /// the handshake's own headers, then `extra` (except headers of the
    /// same names as the handshake's own, which it sets itself).
    pub fn write_request(&self, host: &str, target: &str, extra: &HeaderMap, out: &mut Vec<u8>) {
        let target = if target.is_empty() { "/" } else { target };
        out.extend_from_slice(b"GET ");
        out.extend_from_slice(target.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        out.extend_from_slice(host.as_bytes());
        out.extend_from_slice(
            b"\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
              sec-websocket-version: 13\r\nsec-websocket-key: ",
        );
        out.extend_from_slice(self.key.as_bytes());
        out.extend_from_slice(b"\r\n");
        if !self.protocols.is_empty() {
            out.extend_from_slice(b"sec-websocket-protocol: ");
            out.extend_from_slice(self.protocols.join(", ").as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if let Some(offer) = self.extensions() {
            out.extend_from_slice(b"sec-websocket-extensions: ");
            out.extend_from_slice(offer.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        for (name, value) in extra {
            if OWN.contains(name) {
                continue;
            }
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }

    /// Checks a response (§4.1, the client's checks; RFC 7692 §7.1).
    ///
    /// # Errors
    /// The first rule the response broke: a status other than 101, an
    /// `Upgrade` or `Connection` header that does not name the upgrade, a
    /// missing or wrong `Sec-WebSocket-Accept`, a subprotocol or extension
    /// that was not offered, or a permessage-deflate answer that does not
    /// match the offer.
    pub fn validate(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
    ) -> Result<Accepted, ResponseError> {
        if status != StatusCode::SWITCHING_PROTOCOLS {
            return Err(ResponseError::Status(status));
        }
        if !has_token(headers, &header::UPGRADE, "websocket") {
            return Err(ResponseError::Upgrade);
        }
        if !has_token(headers, &header::CONNECTION, "upgrade") {
            return Err(ResponseError::Connection);
        }
        let mut accepts = headers.get_all(SEC_WEBSOCKET_ACCEPT).iter();
        match (accepts.next(), accepts.next()) {
            (Some(v), None)
                if v.as_bytes().trim_ascii() == accept_key(self.key.as_bytes()).as_bytes() => {}
            _ => return Err(ResponseError::Accept),
        }
        let protocol = {
            let name = SEC_WEBSOCKET_PROTOCOL;
            let mut chosen = tokens(headers, &name);
            match (chosen.next(), chosen.next()) {
                (None, _) => {
                    if headers.contains_key(SEC_WEBSOCKET_PROTOCOL) {
                        return Err(ResponseError::Protocol);
                    }
                    None
                }
                (Some(p), None) if self.protocols.iter().any(|o| o == p) => Some(p.to_owned()),
                _ => return Err(ResponseError::Protocol),
            }
        };
        let deflate = self.agree_extensions(headers)?;
        Ok(Accepted { protocol, deflate })
    }

    /// Checks a whole response; see [`ClientHandshake::validate`].
    ///
    /// # Errors
    /// As for [`ClientHandshake::validate`].
    pub fn from_response<B>(&self, res: &Response<B>) -> Result<Accepted, ResponseError> {
        self.validate(res.status(), res.headers())
    }

    fn agree_extensions(
        &self,
        headers: &HeaderMap,
    ) -> Result<Option<DeflateParams>, ResponseError> {
        let values = headers.get_all(SEC_WEBSOCKET_EXTENSIONS);
        if values.iter().next().is_none() {
            return Ok(None);
        }
        let (answers, others) =
            deflate::parse_answers(values.iter()).map_err(|_| ResponseError::Extension)?;
        if others > 0 {
            return Err(ResponseError::Extension);
        }
        match &self.deflate {
            None if answers.is_empty() => Ok(None),
            None => Err(ResponseError::Extension),
            Some(config) => {
                deflate::client::agree(&answers, config).map_err(ResponseError::Deflate)
            }
        }
    }
}

#[cfg(test)]
mod tests;
