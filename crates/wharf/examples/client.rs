//! A command-line chat client for the `wharf` binary (`wharf.chat.v1`,
//! docs/PROTOCOL.md), on wharf's own client: joins a room, sends each line
//! read from stdin as a `say`, and prints what arrives.
//!
//! ```text
//! cargo run -p wharf-server -- --listen 127.0.0.1:3400 &
//! cargo run -p wharf --example client -- --url ws://127.0.0.1:3400/chat --room lobby --name Ada
//! ```
//!
//! A line `/join ROOM` changes room, `/leave` leaves it, `/quit` (or end of
//! input) closes the connection with 1000.

use anyhow::Context as _;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;
use wharf::{CloseCode, Connector, DeflateConfig, Message};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let arg = |name: &str| std::env::args().skip_while(|a| a != name).nth(1);
    let url = arg("--url").unwrap_or_else(|| "ws://127.0.0.1:3400/chat".into());
    let room = arg("--room").unwrap_or_else(|| "lobby".into());
    let name = arg("--name").unwrap_or_else(|| "guest".into());

    let (mut conn, _) = Connector::new()
        .protocols(["wharf.chat.v1"])
        .deflate(Some(DeflateConfig::shared()))
        .connect(&url)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let send = |conn: &wharf::Connection, v: Value| conn.try_send(v.to_string());
    send(
        &conn,
        json!({"v": 1, "type": "join", "room": room, "name": name}),
    )?;

    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut input_open = true;
    loop {
        tokio::select! {
            message = conn.recv() => match message {
                Some(Message::Text(text)) => print_event(&text),
                Some(other) => println!("? {other:?}"),
                None => break,
            },
            line = lines.next_line(), if input_open => {
                let line = line?.unwrap_or_else(|| "/quit".into());
                let line = line.trim_end();
                let command = match line.split_once(' ') {
                    Some(("/join", room)) => json!({"v": 1, "type": "join", "room": room, "name": name}),
                    _ if line == "/leave" => json!({"v": 1, "type": "leave"}),
                    _ if line == "/quit" => {
                        input_open = false;
                        conn.close(CloseCode::NORMAL, "bye")?;
                        continue;
                    }
                    _ if line.is_empty() => continue,
                    _ => json!({"v": 1, "type": "say", "text": line}),
                };
                send(&conn, command)?;
            }
        }
    }
    if let Some(why) = conn.disconnect() {
        eprintln!("disconnected: {why:?}");
    }
    Ok(())
}

/// Prints one server message for people.
fn print_event(text: &str) {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        println!("? {text}");
        return;
    };
    let s = |k: &str| v[k].as_str().unwrap_or("").to_owned();
    match v["type"].as_str() {
        Some("welcome") => println!("* connected as #{}", v["id"]),
        Some("joined") => println!(
            "* {} joined {} ({} online)",
            s("name"),
            s("room"),
            v["online"]
        ),
        Some("left") => println!(
            "* {} left {} ({} online)",
            s("name"),
            s("room"),
            v["online"]
        ),
        Some("message") => println!("<{}> {}", s("name"), s("text")),
        Some("error") => println!("! {}: {}", s("code"), s("reason")),
        _ => println!("? {text}"),
    }
}
