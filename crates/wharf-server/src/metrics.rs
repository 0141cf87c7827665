//! `/metrics`: the server's counters in the Prometheus text exposition
//! format (version 0.0.4), written by hand from [`wharf::Stats::snapshot`]
//! and the hub's gauges.

use std::fmt::Write as _;

use wharf::backplane::Link;
use wharf::{Hub, Snapshot};

/// The `Content-Type` of the exposition format.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders every metric.
pub(crate) fn render(s: &Snapshot, hub: &Hub) -> String {
    let mut out = String::with_capacity(2048);
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name} {value}");
    };
    metric(
        "wharf_connections_open",
        "gauge",
        "WebSocket connections open now.",
        hub.len() as u64,
    );
    metric(
        "wharf_fanouts_dropped_total",
        "counter",
        "Broadcasts one worker could not hand another (its inbox held 64 MiB).",
        hub.fanouts_dropped(),
    );
    metric(
        "wharf_connections_total",
        "counter",
        "WebSocket connections accepted since start.",
        s.connections_total,
    );
    metric(
        "wharf_messages_in_total",
        "counter",
        "Text and binary messages received.",
        s.messages_in,
    );
    metric(
        "wharf_messages_out_total",
        "counter",
        "Messages queued for sending (a broadcast counts once per receiver).",
        s.messages_out,
    );
    metric(
        "wharf_bytes_in_total",
        "counter",
        "Payload bytes of the messages received.",
        s.bytes_in,
    );
    metric(
        "wharf_bytes_out_total",
        "counter",
        "Payload bytes of the messages queued for sending.",
        s.bytes_out,
    );
    metric(
        "wharf_slow_client_closes_total",
        "counter",
        "Connections closed with 1008 because their write queue was full.",
        s.slow_client_closes,
    );
    metric(
        "wharf_slow_client_drops_total",
        "counter",
        "Messages dropped because a write queue was full (slow-client = drop).",
        s.slow_client_drops,
    );
    metric(
        "wharf_protocol_errors_total",
        "counter",
        "Connections failed for a protocol violation or an exceeded limit.",
        s.protocol_errors,
    );
    metric(
        "wharf_timeouts_total",
        "counter",
        "Connections dropped by a deadline: close timeout, keepalive or write timeout.",
        s.timeouts,
    );
    metric(
        "wharf_write_timeouts_total",
        "counter",
        "Connections dropped because their queued messages waited too long unwritten.",
        s.write_timeouts,
    );
    metric(
        "wharf_handler_panics_total",
        "counter",
        "Connection handlers that panicked (their connections were closed with 1011).",
        s.handler_panics,
    );
    metric(
        "wharf_rate_limited_total",
        "counter",
        "Messages received over the rate limit (chat: answered rate_limited; other modes: dropped).",
        s.rate_limited,
    );
    metric(
        "wharf_rate_limit_closes_total",
        "counter",
        "Connections closed with 1008 for exceeding the rate limit.",
        s.rate_limit_closes,
    );
    metric(
        "wharf_legacy_binary_skipped_total",
        "counter",
        "Binary messages not sent to hixie-75/76 connections, which carry text only.",
        s.legacy_binary_skipped,
    );
    metric(
        "wharf_rooms",
        "gauge",
        "Chat rooms with at least one member.",
        hub.rooms().len() as u64,
    );
    let name = "wharf_connections_by_version_total";
    let _ = writeln!(
        out,
        "# HELP {name} WebSocket connections accepted since start, by protocol version."
    );
    let _ = writeln!(out, "# TYPE {name} counter");
    let legacy = s.connections_hixie75 + s.connections_hixie76;
    for (version, n) in [
        ("rfc6455", s.connections_total.saturating_sub(legacy)),
        ("hixie-76", s.connections_hixie76),
        ("hixie-75", s.connections_hixie75),
    ] {
        let _ = writeln!(out, "{name}{{version=\"{version}\"}} {n}");
    }
    let name = "wharf_handshake_refusals_total";
    let _ = writeln!(
        out,
        "# HELP {name} Refused WebSocket upgrades, by HTTP status and reason."
    );
    let _ = writeln!(out, "# TYPE {name} counter");
    for ((status, reason), n) in &s.refusals {
        let _ = writeln!(
            out,
            "{name}{{status=\"{status}\",reason=\"{}\"}} {n}",
            escape(reason)
        );
    }
    backplane(&mut out, hub);
    out
}

/// The Redis backplane's link state and counters, when there is one.
fn backplane(out: &mut String, hub: &Hub) {
    let Some(backplane) = hub.backplane() else {
        return;
    };
    let status = backplane.status();
    let up = matches!(status.link, Some(Link::Up));
    for (name, kind, help, value) in [
        (
            "wharf_backplane_up",
            "gauge",
            "1 while the link to Redis is up and its probe comes back, else 0.",
            u64::from(up),
        ),
        (
            "wharf_backplane_published_total",
            "counter",
            "Messages sent to the other nodes through Redis.",
            status.published,
        ),
        (
            "wharf_backplane_received_total",
            "counter",
            "Messages received from other nodes and delivered here.",
            status.received,
        ),
        (
            "wharf_backplane_dropped_total",
            "counter",
            "Messages not sent to other nodes: Redis down or the queue to it full.",
            status.dropped,
        ),
        (
            "wharf_backplane_gaps_total",
            "counter",
            "Times messages of another node were seen missing (lost by the bus).",
            status.gaps,
        ),
        (
            "wharf_backplane_duplicates_total",
            "counter",
            "Messages received twice from the bus and delivered once.",
            status.duplicates,
        ),
        (
            "wharf_backplane_reconnects_total",
            "counter",
            "Reconnections to Redis after the link went down.",
            status.reconnects,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name} {value}");
    }
}

/// Escapes a label value: backslash, double quote and line feed.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a \"b\"\\\nc"), "a \\\"b\\\"\\\\\\nc");
    }

    #[test]
    fn every_metric_has_help_and_type() {
        let text = render(&Snapshot::default(), &Hub::new());
        for name in [
            "wharf_connections_open",
            "wharf_connections_total",
            "wharf_messages_in_total",
            "wharf_messages_out_total",
            "wharf_bytes_in_total",
            "wharf_bytes_out_total",
            "wharf_handshake_refusals_total",
            "wharf_slow_client_closes_total",
            "wharf_slow_client_drops_total",
            "wharf_rate_limited_total",
            "wharf_rate_limit_closes_total",
            "wharf_connections_by_version_total",
            "wharf_legacy_binary_skipped_total",
            "wharf_rooms",
        ] {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing");
            assert!(text.contains(&format!("# HELP {name} ")), "{name} missing");
        }
    }
}
