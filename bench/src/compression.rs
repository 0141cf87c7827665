//! permessage-deflate on chat-like JSON, measured with wharf-proto's public
//! API: the parameters come from `Handshake::negotiate_deflate` on a
//! synthetic upgrade request, the frames from `Connection::poll_transmit`.
//! Shared mode compresses each message alone (no context takeover);
//! dedicated mode keeps a window per connection (context takeover).

use http::{HeaderMap, HeaderValue, Method, Version, header};
use wharf_proto::handshake::{SEC_WEBSOCKET_EXTENSIONS, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION};
use wharf_proto::{Connection, DeflateConfig, DeflateParams, Handshake, Limits, Message};

use crate::client::Rng;
use crate::report::Sample;

/// Messages in the corpus.
const MESSAGES: usize = 2000;

const NAMES: &[&str] = &[
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory",
    "niaj", "olivia", "peggy", "rupert", "sybil", "trent", "victor", "walter", "yuki",
];
const ROOMS: &[&str] = &[
    "lobby", "general", "random", "dev", "support", "music", "games",
];
const WORDS: &[&str] = &[
    "hey",
    "hi",
    "hello",
    "thanks",
    "ok",
    "sure",
    "yes",
    "no",
    "maybe",
    "later",
    "today",
    "tomorrow",
    "tonight",
    "meeting",
    "deploy",
    "release",
    "build",
    "test",
    "bug",
    "fix",
    "server",
    "client",
    "latency",
    "coffee",
    "lunch",
    "weekend",
    "really",
    "think",
    "know",
    "sounds",
    "good",
    "great",
    "awesome",
    "weird",
    "broken",
    "working",
    "again",
    "still",
    "just",
    "pushed",
    "merged",
    "review",
    "please",
    "could",
    "would",
    "should",
    "anyone",
    "someone",
    "where",
    "when",
    "what",
    "why",
    "how",
    "the",
    "a",
    "an",
    "is",
    "are",
    "was",
    "it",
    "this",
    "that",
    "we",
    "you",
    "they",
    "I",
    "me",
    "my",
    "your",
    "our",
    "to",
    "for",
    "on",
    "in",
    "at",
    "with",
    "about",
    "from",
    "of",
    "and",
    "but",
    "or",
    "so",
    "then",
    "now",
    "link",
    "docs",
    "page",
    "chart",
    "numbers",
    "benchmark",
    "faster",
    "slower",
    "memory",
    "websocket",
    "connection",
    "room",
    "message",
    "ticket",
    "issue",
    "branch",
    "main",
    "ship",
    "it",
    "lgtm",
    "nice",
    "wow",
    "lol",
    "brb",
    "afk",
    "np",
    "ty",
    "👍",
    "🎉",
    "café",
];

/// A reproducible corpus of chat messages, 100 to 300 bytes each, like
/// `{"type":"message","room":"lobby","id":123,"name":"alice","text":"...","ts":1732480000}`.
pub(crate) fn corpus(n: usize, seed: u64) -> Vec<String> {
    let mut rng = Rng::new(seed);
    let mut ts = 1_732_480_000u64;
    (0..n)
        .map(|i| {
            ts += rng.below(90) as u64;
            let room = ROOMS[rng.below(ROOMS.len())];
            let name = NAMES[rng.below(NAMES.len())];
            let head = format!(
                r#"{{"type":"message","room":"{room}","id":{},"name":"{name}","text":""#,
                100_000 + i
            );
            let tail = format!(r#"","ts":{ts}}}"#);
            let target = 100 + rng.below(201);
            let mut text = String::new();
            loop {
                let len = head.len() + text.len() + tail.len();
                if len >= target {
                    break;
                }
                let mut word = WORDS[rng.below(WORDS.len())].to_owned();
                if rng.below(12) == 0 {
                    word.push(['.', '?', '!', ','][rng.below(4)]);
                }
                if len + word.len() + 1 > 300 {
                    break;
                }
                if !text.is_empty() {
                    text.push(' ');
                }
                text.push_str(&word);
            }
            head + &text + &tail
        })
        .collect()
}

/// The parameters a wharf server with `config` agrees to for a client
/// offering `permessage-deflate; client_max_window_bits`.
///
/// # Errors
/// If the synthetic request is refused or no offer is accepted.
pub(crate) fn negotiate(config: &DeflateConfig) -> anyhow::Result<DeflateParams> {
    let mut h = HeaderMap::new();
    h.insert(header::HOST, HeaderValue::from_static("127.0.0.1"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
    h.insert(
        SEC_WEBSOCKET_KEY,
        HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
    );
    h.insert(
        SEC_WEBSOCKET_EXTENSIONS,
        HeaderValue::from_static("permessage-deflate; client_max_window_bits"),
    );
    let hs = Handshake::validate(&Method::GET, Version::HTTP_11, &h)?;
    let (params, _) = hs
        .negotiate_deflate(config)
        .ok_or_else(|| anyhow::anyhow!("offer not accepted"))?;
    Ok(params)
}

/// One masked, compressed client frame carrying a chat message: what the
/// memory scenario sends once per connection to make a dedicated-mode
/// server allocate its inflate and deflate state.
///
/// # Errors
/// If negotiation fails.
pub(crate) fn client_frame() -> anyhow::Result<Vec<u8>> {
    let params = negotiate(&DeflateConfig::dedicated(15))?;
    let mut client =
        Connection::client(Limits::default(), || [0x11, 0x22, 0x33, 0x44]).with_deflate(params);
    let text = corpus(1, 3).remove(0);
    client.send(Message::from(text))?;
    let frame = client
        .poll_transmit()
        .ok_or_else(|| anyhow::anyhow!("nothing to send"))?;
    Ok(frame.to_vec())
}

/// Mean payload, frame and compressed sizes for `messages` sent through one
/// server connection with `params`.
fn measure(params: DeflateParams, messages: &[String]) -> anyhow::Result<(f64, f64, f64)> {
    let mut conn = Connection::server(Limits::default()).with_deflate(params);
    let (mut payload, mut wire, mut deflated) = (0usize, 0usize, 0usize);
    for m in messages {
        conn.send(Message::from(m.clone()))?;
        let t = conn
            .poll_transmit()
            .ok_or_else(|| anyhow::anyhow!("nothing to send"))?;
        payload += m.len();
        wire += t.len();
        deflated += t.payload().len();
    }
    let n = messages.len() as f64;
    Ok((payload as f64 / n, wire as f64 / n, deflated as f64 / n))
}

/// The compression samples: shared (no context takeover) and dedicated
/// (context takeover), plus uncompressed for reference.
pub(crate) fn samples() -> Vec<Sample> {
    let messages = corpus(MESSAGES, 42);
    let mut out = Vec::new();
    let modes = [
        ("wharf deflate-shared", DeflateConfig::shared()),
        ("wharf deflate-dedicated", DeflateConfig::dedicated(15)),
    ];
    let plain = messages.iter().map(|m| m.len() as f64).sum::<f64>() / messages.len() as f64;
    let header = messages
        .iter()
        .map(|m| if m.len() < 126 { 2.0 } else { 4.0 })
        .sum::<f64>()
        / messages.len() as f64;
    out.push(Sample::new(
        "compression",
        "wharf deflate-off",
        1,
        vec![
            ("payload_bytes", plain),
            ("wire_bytes", plain + header),
            ("wire_ratio", (plain + header) / plain),
            ("deflate_ratio", 1.0),
        ],
    ));
    for (label, config) in modes {
        match negotiate(&config).and_then(|p| measure(p, &messages)) {
            Ok((payload, wire, deflated)) => out.push(Sample::new(
                "compression",
                label,
                1,
                vec![
                    ("payload_bytes", payload),
                    ("wire_bytes", wire),
                    ("wire_ratio", wire / payload),
                    ("deflate_ratio", deflated / payload),
                ],
            )),
            Err(e) => eprintln!("compression {label}: {e:#}"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use wharf_proto::Event;

    use super::*;

    #[test]
    fn corpus_is_valid_sized_json_like_text() {
        for m in corpus(500, 1) {
            assert!((100..=300).contains(&m.len()), "{} bytes: {m}", m.len());
            assert!(m.starts_with(r#"{"type":"message""#) && m.ends_with('}'));
        }
    }

    #[test]
    fn negotiates_both_modes() {
        let shared = negotiate(&DeflateConfig::shared()).unwrap();
        assert!(shared.server_no_context_takeover && shared.client_no_context_takeover);
        let dedicated = negotiate(&DeflateConfig::dedicated(15)).unwrap();
        assert!(!dedicated.server_no_context_takeover);
    }

    #[test]
    fn dedicated_compresses_better_than_shared() {
        let messages = corpus(300, 9);
        let (_, shared, _) =
            measure(negotiate(&DeflateConfig::shared()).unwrap(), &messages).unwrap();
        let (_, dedicated, _) =
            measure(negotiate(&DeflateConfig::dedicated(15)).unwrap(), &messages).unwrap();
        assert!(dedicated < shared, "{dedicated} vs {shared}");
    }

    #[test]
    fn client_frame_is_a_compressed_message() {
        let frame = client_frame().unwrap();
        assert_eq!(frame[0] & 0x40, 0x40, "RSV1 marks a compressed message");
        let params = negotiate(&DeflateConfig::dedicated(15)).unwrap();
        let mut server = Connection::server(Limits::default()).with_deflate(params);
        server.receive(&mut BytesMut::from(&frame[..])).unwrap();
        let Some(Event::Message(Message::Text(t))) = server.poll_event() else {
            panic!("no message");
        };
        assert!(t.starts_with(r#"{"type":"message""#));
    }
}
