//! The chat protocol, `wharf.chat.v1` (docs/PROTOCOL.md): small JSON
//! messages over WebSocket, rooms from the hub.
//!
//! A connection is in at most one room. Client messages are `join`, `say`
//! and `leave`; the server answers with `welcome`, `joined`, `left`,
//! `message` and `error`. Everything sent to a room is encoded once and
//! published through [`Hub::publish`]. A bad client message gets an `error`
//! back and the connection stays open: nothing a client sends ends it
//! except the WebSocket protocol's own limits.
//!
//! A client that sends faster than the server's rate limit pays for it
//! alone: each message over the limit gets an `error` with the code
//! `rate_limited` and goes nowhere else, so a flood never reaches the
//! room's other members (whose queues it would fill until they were
//! closed as slow consumers).

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::broadcast::error::RecvError;
use wharf::{Connection, Departure, Hub, Message};

use crate::names;

/// The subprotocol name; the server also speaks the protocol to clients
/// that offer no subprotocol.
pub(crate) const PROTOCOL: &str = "wharf.chat.v1";
/// The protocol version, the `v` field of every server message.
pub(crate) const VERSION: u64 = 1;
/// The longest name, in characters.
pub(crate) const MAX_NAME: usize = 32;
/// The longest room name, in characters.
pub(crate) const MAX_ROOM: usize = 64;
/// The longest message text, in characters.
pub(crate) const MAX_TEXT: usize = 2000;

/// A server message; serialized with `"v": 1` and its `type`.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Out<'a> {
    Error {
        code: &'static str,
        reason: String,
    },
    Joined {
        room: &'a str,
        id: u64,
        name: &'a str,
        online: usize,
    },
    Left {
        room: &'a str,
        id: u64,
        name: &'a str,
        online: usize,
    },
    Message {
        room: &'a str,
        id: u64,
        name: &'a str,
        text: &'a str,
        ts: u64,
    },
    Welcome {
        id: u64,
        protocol: &'static str,
        limits: Limits,
    },
}

#[derive(Debug, Serialize)]
struct Limits {
    name: usize,
    room: usize,
    text: usize,
}

#[derive(Serialize)]
struct Envelope<'a> {
    v: u64,
    #[serde(flatten)]
    body: Out<'a>,
}

impl Out<'_> {
    fn encode(self) -> Message {
        let envelope = Envelope {
            v: VERSION,
            body: self,
        };
        // Serializing plain structs of strings and integers to a String
        // cannot fail.
        Message::from(serde_json::to_string(&envelope).unwrap_or_default())
    }
}

/// A client message, validated.
#[derive(Debug, Eq, PartialEq)]
pub(crate) enum Command {
    Join { room: String, name: String },
    Leave,
    Say { text: String },
}

/// Why a client message was refused: a stable code and a sentence.
#[derive(Debug, Eq, PartialEq)]
pub(crate) struct Refusal {
    pub(crate) code: &'static str,
    pub(crate) reason: String,
}

fn refuse(code: &'static str, reason: impl Into<String>) -> Refusal {
    Refusal {
        code,
        reason: reason.into(),
    }
}

/// Parses and validates one client message.
pub(crate) fn parse(text: &str) -> Result<Command, Refusal> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| refuse("bad_json", format!("not valid JSON: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(refuse("bad_message", "a message must be a JSON object"));
    };
    match obj.get("v") {
        None => {}
        Some(v) if v.as_u64() == Some(VERSION) => {}
        Some(_) => {
            return Err(refuse(
                "bad_version",
                "unsupported protocol version; this server speaks version 1",
            ));
        }
    }
    let kind = match obj.get("type") {
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(refuse("bad_message", "`type` must be a string")),
        None => return Err(refuse("missing_field", "missing field `type`")),
    };
    match kind {
        "join" => Ok(Command::Join {
            room: field(&obj, "room", MAX_ROOM, true)?,
            name: field(&obj, "name", MAX_NAME, true)?,
        }),
        "say" => Ok(Command::Say {
            text: field(&obj, "text", MAX_TEXT, false)?,
        }),
        "leave" => Ok(Command::Leave),
        other => {
            let shown: String = other.chars().take(32).collect();
            Err(refuse(
                "unknown_type",
                format!("unknown message type {shown:?}; expected join, say or leave"),
            ))
        }
    }
}

/// A string field of at most `max` characters, not blank. A `label` (name
/// or room) is trimmed of spaces and may hold only visible characters
/// (`names`); a text keeps its spacing and line breaks.
fn field(
    obj: &Map<String, Value>,
    key: &'static str,
    max: usize,
    label: bool,
) -> Result<String, Refusal> {
    let s = match obj.get(key) {
        Some(Value::String(s)) => s,
        Some(_) => return Err(refuse("bad_message", format!("`{key}` must be a string"))),
        None => return Err(refuse("missing_field", format!("missing field `{key}`"))),
    };
    let s = if label {
        s.trim_matches(' ')
    } else {
        s.as_str()
    };
    if s.trim().is_empty() {
        return Err(refuse("empty", format!("`{key}` is empty")));
    }
    if s.chars().count() > max {
        return Err(refuse(
            "too_long",
            format!("`{key}` is longer than {max} characters"),
        ));
    }
    if label && let Err(names::Refused { ch, rule }) = names::check(s) {
        return Err(refuse(
            "bad_message",
            format!(
                "`{key}` may not contain U+{:04X}: {rule}; names and rooms hold visible characters only",
                u32::from(ch)
            ),
        ));
    }
    Ok(s.to_owned())
}

/// One connection's place in the chat.
struct Session {
    id: u64,
    room: Option<(String, String)>,
}

/// Runs the chat protocol on `conn` until it closes. A message over the
/// server's rate limit gets the error `rate_limited` with
/// `rate_limit_reason`.
pub(crate) async fn serve(mut conn: Connection, hub: Hub, rate_limit_reason: &str) {
    let mut session = Session {
        id: conn.id(),
        room: None,
    };
    // Uncompressed: a dedicated compressor is allocated only for the
    // room's traffic, if any comes.
    let _ = conn.try_send_uncompressed(
        Out::Welcome {
            id: session.id,
            protocol: PROTOCOL,
            limits: Limits {
                name: MAX_NAME,
                room: MAX_ROOM,
                text: MAX_TEXT,
            },
        }
        .encode(),
    );
    while let Some(msg) = conn.recv().await {
        if conn.rate_limited() {
            // Not even parsed: the sender's flood costs the sender.
            let refusal = Out::Error {
                code: "rate_limited",
                reason: rate_limit_reason.to_owned(),
            };
            let _ = conn.try_send(refusal.encode());
            continue;
        }
        let outcome = match msg.as_text() {
            Some(text) => match parse(text) {
                Ok(cmd) => session.apply(cmd, &conn, &hub).await,
                Err(refusal) => Err(refusal),
            },
            None => Err(refuse(
                "bad_message",
                "binary messages are not part of wharf.chat.v1; send JSON text",
            )),
        };
        if let Err(Refusal { code, reason }) = outcome {
            tracing::debug!(id = session.id, code, %reason, "refused a chat message");
            let _ = conn.try_send(Out::Error { code, reason }.encode());
        }
    }
    session.leave(&conn, &hub, false).await;
}

impl Session {
    /// Carries out `cmd`. `online` counts are cluster-wide when the hub
    /// has a backplane ([`Hub::online`]).
    async fn apply(&mut self, cmd: Command, conn: &Connection, hub: &Hub) -> Result<(), Refusal> {
        match cmd {
            Command::Join { room, name } => {
                if matches!(&self.room, Some((r, n)) if *r == room && *n == name) {
                    // Already there under that name: only the joiner hears
                    // of it, so repeating a join costs the others nothing.
                    let again = Out::Joined {
                        room: &room,
                        id: self.id,
                        name: &name,
                        online: hub.online(&room).await,
                    };
                    let _ = conn.try_send(again.encode());
                    return Ok(());
                }
                self.leave(conn, hub, true).await;
                conn.join(&room);
                // Listed by name on every node (`Hub::presence`).
                hub.set_member_name(&room, self.id, &name);
                let online = hub.online(&room).await;
                hub.publish(
                    &room,
                    Out::Joined {
                        room: &room,
                        id: self.id,
                        name: &name,
                        online,
                    }
                    .encode(),
                );
                self.room = Some((room, name));
                Ok(())
            }
            Command::Say { text } => {
                let Some((room, name)) = &self.room else {
                    return Err(refuse("not_joined", "join a room first"));
                };
                hub.publish(
                    room,
                    Out::Message {
                        room,
                        id: self.id,
                        name,
                        text: &text,
                        ts: now_ms(),
                    }
                    .encode(),
                );
                Ok(())
            }
            Command::Leave => {
                if self.room.is_none() {
                    return Err(refuse("not_joined", "not in a room"));
                }
                self.leave(conn, hub, true).await;
                Ok(())
            }
        }
    }

    /// Leaves the current room, if any, telling its members (and, if
    /// `tell_self`, this connection) with a `left` message.
    async fn leave(&mut self, conn: &Connection, hub: &Hub, tell_self: bool) {
        let Some((room, name)) = self.room.take() else {
            return;
        };
        conn.leave(&room);
        let online = hub.online(&room).await;
        let msg = Out::Left {
            room: &room,
            id: self.id,
            name: &name,
            online,
        }
        .encode();
        hub.publish(&room, msg.clone());
        if tell_self {
            let _ = conn.try_send(msg);
        }
    }
}

/// Tells this node's members of a room, with a `left` each, of the
/// members of another node that died without leaving (its presence
/// expired): every node tells its own members, so each hears of each
/// departure once. Stops when dropped.
pub(crate) struct Departures(tokio::task::JoinHandle<()>);

impl Departures {
    /// Starts listening to `hub`'s departures.
    pub(crate) fn start(hub: &Hub) -> Self {
        let mut departures = hub.departures();
        let hub = hub.clone();
        Self(tokio::spawn(async move {
            loop {
                match departures.recv().await {
                    Ok(departure) => tell_departure(&hub, departure).await,
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "departures not told: too many at once");
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        }))
    }
}

impl Drop for Departures {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn tell_departure(hub: &Hub, departure: Departure) {
    let room = departure.room.as_str();
    // The dead node's members are out of the count already.
    let online = hub.online(room).await;
    for member in &departure.members {
        let left = Out::Left {
            room,
            id: member.id,
            name: &member.name,
            online,
        };
        hub.publish_local(room, left.encode());
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> &'static str {
        parse(text).unwrap_err().code
    }

    #[test]
    fn parses_the_three_commands() {
        assert_eq!(
            parse(r#"{"v":1,"type":"join","room":" lobby ","name":"ann"}"#),
            Ok(Command::Join {
                room: "lobby".into(),
                name: "ann".into()
            })
        );
        assert_eq!(
            parse(r#"{"type":"say","text":" hi\nthere "}"#),
            Ok(Command::Say {
                text: " hi\nthere ".into()
            })
        );
        assert_eq!(parse(r#"{"type":"leave"}"#), Ok(Command::Leave));
    }

    #[test]
    fn refuses_bad_messages_with_a_code() {
        assert_eq!(code("{nope"), "bad_json");
        assert_eq!(code("[1,2]"), "bad_message");
        assert_eq!(code(r#"{"v":2,"type":"leave"}"#), "bad_version");
        assert_eq!(code(r#"{"room":"a"}"#), "missing_field");
        assert_eq!(code(r#"{"type":7}"#), "bad_message");
        assert_eq!(code(r#"{"type":"dance"}"#), "unknown_type");
        assert_eq!(code(r#"{"type":"join","room":"a"}"#), "missing_field");
        assert_eq!(
            code(r#"{"type":"join","room":"a","name":5}"#),
            "bad_message"
        );
        assert_eq!(code(r#"{"type":"join","room":"  ","name":"b"}"#), "empty");
        assert_eq!(
            code(r#"{"type":"join","room":"a\u0007","name":"b"}"#),
            "bad_message"
        );
        let long = "x".repeat(MAX_NAME + 1);
        assert_eq!(
            code(&format!(r#"{{"type":"join","room":"a","name":"{long}"}}"#)),
            "too_long"
        );
        let long = "é".repeat(MAX_TEXT + 1);
        assert_eq!(
            code(&format!(r#"{{"type":"say","text":"{long}"}}"#)),
            "too_long"
        );
        let nested = "[".repeat(10_000);
        assert_eq!(code(&nested), "bad_json");
    }

    #[test]
    fn server_messages_carry_the_version() {
        let m = Out::Joined {
            room: "r",
            id: 3,
            name: "n",
            online: 2,
        }
        .encode();
        assert_eq!(
            m.as_text(),
            Some(r#"{"v":1,"type":"joined","room":"r","id":3,"name":"n","online":2}"#)
        );
    }
}
