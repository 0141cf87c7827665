//! permessage-deflate from the client's side (RFC 7692 §5, §7.1): the offer
//! a [`DeflateConfig`] makes, and the server's answer checked against it.

use std::fmt::Write as _;

use http::HeaderValue;

use super::{DeflateConfig, DeflateParams, EXTENSION, Offer, window_bits};

/// The one offer a client makes under `config`, read from the client's
/// side: `context_takeover: false` asks both ends to reset their context
/// per message (the shared mode, nothing held by an idle connection);
/// `server_max_window_bits` below 15 asks the server for a smaller window;
/// `client_max_window_bits` below 15 caps our own, and at 15 the offer
/// lets the server choose any (8 included: see the module docs of
/// `deflate`).
pub(crate) fn offer(config: &DeflateConfig) -> String {
    let mut header = String::from(EXTENSION);
    if !config.context_takeover {
        header.push_str("; server_no_context_takeover; client_no_context_takeover");
    }
    let server = config.server_max_window_bits.clamp(8, 15);
    if server < 15 {
        let _ = write!(header, "; server_max_window_bits={server}");
    }
    let client = config.client_max_window_bits.clamp(8, 15);
    if client < 15 {
        let _ = write!(header, "; client_max_window_bits={client}");
    } else {
        header.push_str("; client_max_window_bits");
    }
    header
}

/// Checks the server's `permessage-deflate` answer (already parsed, in
/// `answers`) against the offer `config` made. `Ok(None)`: the server
/// declined. The error says which rule the answer broke.
pub(crate) fn agree(
    answers: &[Offer],
    config: &DeflateConfig,
) -> Result<Option<DeflateParams>, &'static str> {
    let answer = match answers {
        [] => return Ok(None),
        [one] => one,
        _ => return Err("more than one permessage-deflate"),
    };
    let offered_server = config.server_max_window_bits.clamp(8, 15);
    let offered_client = config.client_max_window_bits.clamp(8, 15);
    let mut server_nct = false;
    let mut client_nct = false;
    let mut server_bits = None;
    let mut client_bits = None;
    for (i, (key, val)) in answer.params.iter().enumerate() {
        if answer.params[..i].iter().any(|(k, _)| k == key) {
            return Err("a parameter is repeated");
        }
        match (key.as_str(), val.as_deref()) {
            ("server_no_context_takeover", None) => server_nct = true,
            ("client_no_context_takeover", None) => client_nct = true,
            ("server_max_window_bits", Some(v)) => {
                let bits = window_bits(v).ok_or("server_max_window_bits out of range")?;
                if bits > offered_server {
                    return Err("server_max_window_bits larger than offered");
                }
                server_bits = Some(bits);
            }
            ("client_max_window_bits", Some(v)) => {
                let bits = window_bits(v).ok_or("client_max_window_bits out of range")?;
                if bits > offered_client {
                    return Err("client_max_window_bits larger than offered");
                }
                client_bits = Some(bits);
            }
            ("server_no_context_takeover" | "client_no_context_takeover", Some(_)) => {
                return Err("a no_context_takeover parameter with a value");
            }
            ("server_max_window_bits" | "client_max_window_bits", None) => {
                return Err("a max_window_bits parameter without a value");
            }
            _ => return Err("an unknown parameter"),
        }
    }
    // An answer accepts the offer whole (§7.1.1.1, §7.1.2.1).
    if !config.context_takeover && !server_nct {
        return Err("server_no_context_takeover was asked for and not granted");
    }
    if offered_server < 15 && server_bits.is_none() {
        return Err("server_max_window_bits was asked for and not granted");
    }
    Ok(Some(DeflateParams {
        server_no_context_takeover: server_nct,
        client_no_context_takeover: client_nct || !config.context_takeover,
        server_max_window_bits: server_bits.unwrap_or(15),
        client_max_window_bits: client_bits.unwrap_or(offered_client),
        level: config.level.min(9),
        threshold: config.threshold,
    }))
}

/// The offer as a header value (it is always valid: tokens and digits).
pub(crate) fn offer_value(config: &DeflateConfig) -> HeaderValue {
    HeaderValue::try_from(offer(config)).unwrap_or(HeaderValue::from_static(EXTENSION))
}
