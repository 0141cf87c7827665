//! The pre-standard drafts the seed speaks (hixie-75 and hixie-76), on the
//! server: opt-in with [`Server::legacy_drafts`](crate::Server::legacy_drafts).
//!
//! An upgrade request with neither `Sec-WebSocket-Key` nor
//! `Sec-WebSocket-Version` is a legacy one ([`wharf_proto::legacy::detect`]).
//! With the option off it is refused with `426` and a one-line reason;
//! with it on, it is validated by [`LegacyHandshake`] and then goes through
//! the same host and origin policy, caps and upgrade hook as any upgrade,
//! and becomes an ordinary connection whose core runs in the draft's
//! framing (`wharf_proto::Connection::with_legacy`).
//!
//! A -76 request carries 8 bytes (`key3`) after its head, with no
//! `Content-Length`, and the `101` ends with the MD5 answer to them. On
//! the direct path (`head`) they are read after the head, before the `101`
//! is written; on hyper's path (a later request of a keep-alive
//! connection) hyper writes the `101` head, and the answer follows once
//! the socket is taken back, as the first bytes after it. Both wait for
//! `key3` within the handshake timeout.

use std::time::Duration;

use bytes::BytesMut;
use http::{HeaderMap, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use wharf_proto::Handshake;
use wharf_proto::legacy::{self, Draft, KEY3_LEN, LegacyHandshake};

use crate::upgrade::{Refuse, check_bounds, is_addable, validate_parts};

/// A validated opening handshake, in RFC 6455 or a legacy draft.
#[derive(Debug)]
pub(crate) enum Opening {
    Rfc6455(Handshake),
    Legacy(LegacyHandshake),
}

impl Opening {
    /// Validates an upgrade request: as RFC 6455, or (if `legacy_on`) as
    /// the draft it speaks; a legacy request with the option off is
    /// refused with `426`.
    pub(crate) fn validate(parts: &http::request::Parts, legacy_on: bool) -> Result<Self, Refuse> {
        let Some(draft) = legacy::detect(&parts.headers) else {
            return validate_parts(parts).map(Self::Rfc6455);
        };
        if !legacy_on {
            return Err(Refuse::new(
                StatusCode::UPGRADE_REQUIRED,
                refused_reason(draft),
            ));
        }
        let hs = LegacyHandshake::validate(
            draft,
            &parts.method,
            parts.version,
            &parts.uri,
            &parts.headers,
        )?;
        // What wharf asks of every upgrade: no body, a target it can keep.
        check_bounds(&parts.uri, &parts.headers)?;
        Ok(Self::Legacy(hs))
    }

    /// The subprotocols the client offered (a legacy client offers one).
    pub(crate) fn offered(&self) -> Vec<String> {
        match self {
            Self::Rfc6455(hs) => hs.protocols().to_vec(),
            Self::Legacy(hs) => hs.protocol().map(str::to_owned).into_iter().collect(),
        }
    }

    /// The legacy draft, if any.
    pub(crate) fn draft(&self) -> Option<Draft> {
        match self {
            Self::Rfc6455(_) => None,
            Self::Legacy(hs) => Some(hs.draft()),
        }
    }
}

/// The refusal reason of a legacy handshake when the drafts are off.
fn refused_reason(draft: Draft) -> &'static str {
    match draft {
        Draft::Hixie75 => {
            "hixie-75 handshake refused: this server speaks only RFC 6455 (version 13)"
        }
        Draft::Hixie76 => {
            "hixie-76 handshake refused: this server speaks only RFC 6455 (version 13)"
        }
    }
}

/// Reads until `rest` (the bytes already read past the request head)
/// holds `key3`, by `deadline`; takes it off the front. `None` if the peer
/// closed, failed or was too slow.
///
/// # Cancel safety
/// Not cancel safe; the caller drops the connection instead.
pub(crate) async fn read_key3<S: AsyncRead + Unpin>(
    io: &mut S,
    rest: &mut BytesMut,
    deadline: Instant,
) -> Option<[u8; KEY3_LEN]> {
    let reading = async {
        while rest.len() < KEY3_LEN {
            rest.reserve(KEY3_LEN);
            match io.read_buf(rest).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
        let key3 = rest.split_to(KEY3_LEN);
        <[u8; KEY3_LEN]>::try_from(&key3[..]).ok()
    };
    tokio::time::timeout_at(deadline, reading)
        .await
        .ok()
        .flatten()
}

/// The `101` hyper writes for a legacy handshake: the draft's reason
/// phrase and headers (hyper writes header names in lower case unless the
/// server writes title case, which it does with the drafts on).
pub(crate) fn hyper_response(
    hs: &LegacyHandshake,
    secure: bool,
    protocol: Option<&str>,
) -> Response<()> {
    let mut res = hs.response(secure, protocol);
    res.extensions_mut()
        .insert(hyper::ext::ReasonPhrase::from_static(
            hs.reason().as_bytes(),
        ));
    res
}

/// A -76 answer still owed on hyper's path: written once the socket is
/// taken back from hyper and `key3` has arrived.
#[derive(Debug)]
pub(crate) struct Challenge {
    pub(crate) hs: LegacyHandshake,
    pub(crate) deadline: Instant,
}

impl Challenge {
    /// For a validated -76 handshake, the answer owed; `None` for -75.
    pub(crate) fn owed(opening: &Opening, timeout: Duration) -> Option<Box<Self>> {
        match opening {
            Opening::Legacy(hs) if hs.body_len() > 0 => Some(Box::new(Self {
                hs: hs.clone(),
                deadline: Instant::now() + timeout,
            })),
            _ => None,
        }
    }
}

/// The upgrade hook's headers that may go into a `101`.
pub(crate) fn addable(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in headers.iter().filter(|(n, _)| is_addable(n)) {
        out.append(name.clone(), value.clone());
    }
    out
}

/// Pays a -76 answer owed on hyper's path: reads the rest of `key3` after
/// `read` (what hyper had read past the head), writes the answer, and
/// hands back the socket and what was read past `key3`. `None` drops the
/// connection (no `key3` by the deadline, or the socket failed).
pub(crate) async fn answer<I: AsyncRead + AsyncWrite + Unpin>(
    mut io: I,
    mut read: BytesMut,
    owed: &Challenge,
) -> Option<(I, BytesMut)> {
    let Some(key3) = read_key3(&mut io, &mut read, owed.deadline).await else {
        tracing::debug!("hixie-76 handshake: no key3 in time; closing");
        return None;
    };
    let write = async {
        io.write_all(&owed.hs.challenge(&key3)).await?;
        io.flush().await
    };
    tokio::time::timeout_at(owed.deadline, write)
        .await
        .ok()?
        .ok()?;
    Some((io, read))
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use tokio::io::ReadBuf;

    use super::*;
    use crate::head::{self, Head};

    /// The -76 example request of the draft (§1.3), with its `key3`.
    const EXAMPLE_76: &[u8] = b"GET /demo HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Key2: 12998 5 Y3 1  .P00\r\nSec-WebSocket-Protocol: sample\r\n\
        Upgrade: WebSocket\r\nSec-WebSocket-Key1: 4 @1  46546xW%0l 1 5\r\n\
        Origin: http://example.com\r\n\r\n^n:ds[4U";

    /// Gives `input` in two reads, split at `at`, then the end.
    struct Split<'a> {
        parts: [&'a [u8]; 2],
        next: usize,
    }

    impl AsyncRead for Split<'_> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            while self.next < 2 && self.parts[self.next].is_empty() {
                self.next += 1;
            }
            if self.next < 2 {
                let part = self.parts[self.next];
                let n = part.len().min(buf.remaining());
                buf.put_slice(&part[..n]);
                let next = self.next;
                self.parts[next] = &part[n..];
            }
            Poll::Ready(Ok(()))
        }
    }

    /// The example read through the direct path split at every byte: the
    /// head, then `key3`, then the draft's answer.
    #[tokio::test]
    async fn hixie76_example_answer_in_every_split() {
        for at in 0..=EXAMPLE_76.len() {
            let mut io = Split {
                parts: [&EXAMPLE_76[..at], &EXAMPLE_76[at..]],
                next: 0,
            };
            let Some(Head::Upgrade(req, mut rest)) = head::read(&mut io, |_| true).await else {
                panic!("split at {at}: an upgrade");
            };
            let (parts, ()) = req.into_parts();
            let Ok(Opening::Legacy(hs)) = Opening::validate(&parts, true) else {
                panic!("split at {at}: a valid -76 handshake");
            };
            let deadline = Instant::now() + Duration::from_secs(1);
            let key3 = read_key3(&mut io, &mut rest, deadline).await;
            let key3 = key3.unwrap_or_else(|| panic!("split at {at}: key3"));
            assert_eq!(&hs.challenge(&key3), b"8jKS'y:G*Co,Wxa-", "split at {at}");
            assert!(rest.is_empty());
        }
    }

    #[tokio::test]
    async fn truncated_key3_times_out_or_ends() {
        let head_end = EXAMPLE_76.len() - KEY3_LEN;
        let (mut client, mut server) = tokio::io::duplex(4096);
        client.write_all(&EXAMPLE_76[..head_end + 3]).await.unwrap();
        let Some(Head::Upgrade(_, mut rest)) = head::read(&mut server, |_| true).await else {
            panic!("an upgrade");
        };
        let deadline = Instant::now() + Duration::from_millis(50);
        assert_eq!(read_key3(&mut server, &mut rest, deadline).await, None);
        drop(client);
        let deadline = Instant::now() + Duration::from_secs(5);
        assert_eq!(read_key3(&mut server, &mut rest, deadline).await, None);
    }

    #[test]
    fn off_by_default_refuses_with_426_and_a_reason() {
        let req = http::Request::get("/")
            .header("host", "x")
            .header("upgrade", "WebSocket")
            .header("connection", "Upgrade")
            .header("origin", "http://x")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let refuse = Opening::validate(&parts, false).unwrap_err();
        assert_eq!(refuse.status, StatusCode::UPGRADE_REQUIRED);
        assert!(refuse.reason.starts_with("hixie-75 handshake refused"));
        assert!(matches!(
            Opening::validate(&parts, true),
            Ok(Opening::Legacy(_))
        ));
    }
}
