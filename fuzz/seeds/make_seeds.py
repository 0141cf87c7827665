#!/usr/bin/env python3
"""Writes the committed seeds of the `connection_client`, `connection_deflate`,
`handshake`, `extensions` and `frame` fuzz targets (`connection_server`'s
come from make_connection_server.py).

A seed's name says what must happen to it; the stable test
crates/wharf-proto/tests/fuzz_seeds.rs checks exactly that:
- connection targets: `ok_*` stays open, `closing_*` waits for the peer's
  close, `close_*` closes cleanly, `err_*` fails the connection; a seed named
  `*hello*` delivers one or more messages, each "Hello";
- `handshake`: `ok_*` is accepted, `rej<status>_*` refused with that status;
- `extensions`: `ok_*` agrees to permessage-deflate, `none_*` parses but
  agrees to nothing, `bad_*` is refused as malformed;
- `frame`: `ok_*` decodes, `more_*` needs more bytes, `err_*` is refused.

The input formats are described in fuzz/common/*.rs.

    python3 fuzz/seeds/make_seeds.py
"""

import pathlib
import shutil
import struct
import zlib

DIR = pathlib.Path(__file__).resolve().parent
KEY = bytes([0x37, 0xFA, 0x21, 0x3D])  # RFC 6455 §5.7

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def header(opcode, n, fin=True, rsv=0, masked=False):
    out = bytearray([(0x80 if fin else 0) | (rsv << 4) | opcode])
    bit = 0x80 if masked else 0
    if n <= 125:
        out.append(bit | n)
    elif n <= 0xFFFF:
        out += bytes([bit | 126]) + struct.pack(">H", n)
    else:
        out += bytes([bit | 127]) + struct.pack(">Q", n)
    return bytes(out)


def frame(opcode, payload=b"", fin=True, rsv=0, masked=False, length=None):
    n = len(payload) if length is None else length
    out = header(opcode, n, fin, rsv, masked)
    if masked:
        out += KEY
        payload = bytes(b ^ KEY[i % 4] for i, b in enumerate(payload))
    return out + payload


def close(code, reason=b""):
    return frame(CLOSE, struct.pack(">H", code) + reason)


# RFC 7692 §7.2.3: "Hello" compressed, as message payloads (RSV1 on the
# first frame), and the second message of §7.2.3.2 (shared window).
HELLO = bytes.fromhex("f248cdc9c90700")
HELLO_AGAIN = bytes.fromhex("f200110000")  # §7.2.3.2, needs context
HELLO_STORED = bytes.fromhex("000500faff48656c6c6f00")  # §7.2.3.3
HELLO_BFINAL = bytes.fromhex("f348cdc9c9070000")  # §7.2.3.4
HELLO_TWO_BLOCKS = bytes.fromhex("f24805000000ffffcac9c90700")  # §7.2.3.5

CONNECTION_CLIENT = {
    # RFC 6455 §5.7, from the server's side (unmasked).
    "ok_text_hello": (0, frame(TEXT, b"Hello")),
    "ok_fragmented_hello": (1, frame(TEXT, b"Hel", fin=False) + frame(CONT, b"lo")),
    "ok_ping_hello_then_text_hello": (2, frame(PING, b"Hello") + frame(TEXT, b"Hello")),
    "ok_binary_256_len16": (9, frame(BINARY, bytes(range(256)))),
    "ok_binary_64k_len64": (0, frame(BINARY, bytes(64 << 10))),
    "ok_unsolicited_pong_and_empty_text": (3, frame(PONG, b"x") + frame(TEXT)),
    "close_normal": (0, close(1000)),
    "close_going_away_with_reason": (4, close(1001, b"restart")),
    "err_masked_frame": (0, frame(TEXT, b"Hello", masked=True)),
    "err_control_too_long": (0, frame(PING, bytes(126))),
    "err_frame_too_big_len64": (5, frame(BINARY, length=(64 << 10) + 1)),
    "err_bad_close_code_1005": (0, close(1005)),
    "err_close_payload_of_one_byte": (0, frame(CLOSE, b"\x03")),
    "err_rsv1_without_extension": (0, frame(TEXT, HELLO, rsv=0b100)),
    "err_text_not_utf8": (1, frame(TEXT, b"caf\xe9")),
    "err_new_message_inside_fragmented": (
        0,
        frame(TEXT, b"a", fin=False) + frame(BINARY, b"b"),
    ),
}


# connection_deflate: four setup bytes, then operations.
def setup(client=False, offer_snct=False, offer_cnct=False, dedicated=False,
          reads=0, server_bits=0, client_bits=0, cfg_server=15, cfg_client=15,
          message=3, frame_limit=3, threshold=0, level=2, deferred=False):
    b0 = int(client) | offer_snct << 1 | offer_cnct << 2 | dedicated << 3 | reads << 4
    b1 = server_bits | client_bits << 4
    b2 = (cfg_server - 8) | (cfg_client - 8) << 4 | deferred << 7
    b3 = message | frame_limit << 2 | threshold << 4 | level << 6
    return bytes([b0, b1, b2, b3])


def peer(opcode, payload=b"", fin=True, rsv1=False, compress=False, repeat=None):
    """A frame from the peer; `repeat` is the count byte: 64 (repeat + 1) bytes."""
    h = opcode | fin << 7 | rsv1 << 6 | compress << 5 | (repeat is not None) << 4
    out = bytes([h, len(payload)]) + payload
    if repeat is not None:
        out += bytes([repeat])
    return out


def raw(data):
    out = b""
    for i in range(0, len(data), 255):
        part = data[i:i + 255]
        out += bytes([0xF, len(part)]) + part
    return out


def send(payload, text=True, compress=True, repeat=None, broadcast=False):
    h = (0x4 if text else 0x5) | broadcast << 6 | compress << 5 | (repeat is not None) << 4
    out = bytes([h, len(payload)]) + payload
    if repeat is not None:
        out += bytes([repeat])
    return out


def local_close(code_offset=0, reason=b""):
    return bytes([0x6, code_offset, len(reason)]) + reason


def local_ping(payload=b""):
    return bytes([0x7, len(payload)]) + payload


def masked_raw(rsv_opcode, payload):
    """A client frame for a server, byte for byte (RFC examples)."""
    return raw(bytes([rsv_opcode]) + bytes([0x80 | len(payload)]) + KEY
               + bytes(b ^ KEY[i % 4] for i, b in enumerate(payload)))


CONNECTION_DEFLATE = {
    # RFC 7692 §7.2.3.1 as the server sends it, to a client.
    "ok_hello_rfc7692_client": setup(client=True) + raw(frame(TEXT, HELLO, rsv=4)),
    # ... and masked, to a server.
    "ok_hello_rfc7692_server": setup() + masked_raw(0xC1, HELLO),
    # §7.2.3.1 fragmented.
    "ok_hello_rfc7692_fragmented": setup(client=True, reads=1)
    + raw(frame(TEXT, HELLO[:3], fin=False, rsv=4) + frame(CONT, HELLO[3:])),
    # §7.2.3.2: the second message uses the first one's window.
    "ok_hello_rfc7692_shared_window": setup(client=True, dedicated=True)
    + raw(frame(TEXT, HELLO, rsv=4) + frame(TEXT, HELLO_AGAIN, rsv=4)),
    "ok_hello_rfc7692_stored_block": setup(client=True) + raw(frame(TEXT, HELLO_STORED, rsv=4)),
    "ok_hello_rfc7692_bfinal": setup(client=True, dedicated=True)
    + raw(frame(TEXT, HELLO_BFINAL, rsv=4) + frame(TEXT, HELLO, rsv=4)),
    "ok_hello_rfc7692_two_blocks": setup(client=True, reads=2)
    + raw(frame(TEXT, HELLO_TWO_BLOCKS, rsv=4)),
    # Messages built by the driver's own deflate stream.
    "ok_compressed_both_ways_shared": setup(reads=3)
    + peer(TEXT, b"Hello", rsv1=True, compress=True)
    + send(b"Hello, Hello, Hello, Hello")
    + peer(BINARY, b"\x00\x01\x02", rsv1=True, compress=True, repeat=3)
    + send(b"abc", text=False, repeat=7),
    "ok_compressed_both_ways_dedicated": setup(dedicated=True, reads=2, threshold=2)
    + peer(TEXT, b"Hello", rsv1=True, compress=True)
    + peer(TEXT, b"Hello", rsv1=True, compress=True)
    + send(b"Hello, Hello, Hello, Hello")
    + send(b"Hello, Hello, Hello, Hello")
    + peer(PING, b"ping")
    + send(b"Hello, Hello, Hello, Hello", compress=False),
    "ok_client_dedicated_window_9": setup(client=True, dedicated=True, server_bits=2,
                                          client_bits=3, reads=5)
    + peer(BINARY, bytes(range(200)), rsv1=True, compress=True, repeat=63)
    + send(bytes(range(251)), text=False, repeat=63)
    + send(bytes(range(251)), text=False, repeat=63),
    "ok_server_window_9_no_context": setup(offer_snct=True, offer_cnct=True, server_bits=2,
                                           client_bits=3, dedicated=True)
    + send(bytes(range(251)), text=False, repeat=63)
    + send(bytes(range(251)), text=False, repeat=63)
    + peer(BINARY, bytes(range(200)), rsv1=True, compress=True, repeat=63),
    "ok_broadcast_frames_shared": setup(reads=2)
    + send(b"Hello, everyone in the room", broadcast=True)
    + peer(TEXT, b"Hello", rsv1=True, compress=True)
    + send(b"hi", broadcast=True)
    + send(bytes(range(100)), text=False, repeat=40, broadcast=True),
    "ok_broadcast_frames_dedicated": setup(dedicated=True)
    + send(b"Hello, everyone in the room", broadcast=True)
    + send(b"Hello, everyone in the room")
    + send(b"Hello, everyone in the room", broadcast=True),
    "ok_hello_deferred_inflation_after_many_messages": setup(deferred=True)
    + b"".join(peer(TEXT, b"Hello") for _ in range(70))
    + peer(TEXT, b"Hello", rsv1=True, compress=True)
    + b"".join(peer(PING, b"Hello") for _ in range(20))
    + peer(TEXT, b"Hel", fin=False, rsv1=True, compress=True)
    + peer(CONT, b"lo", compress=True),
    "ok_hello_many_messages_in_one_read": setup(client=True)
    + b"".join(peer(TEXT, b"Hello", rsv1=True, compress=True) for _ in range(100)),
    "err_deferred_inflation_past_limit": setup(deferred=True, message=1)
    + peer(TEXT, b"Hello") + peer(BINARY, b"", rsv1=True, compress=True, repeat=255),
    "ok_fragmented_compressed_with_ping": setup(reads=4)
    + peer(TEXT, b"Hel", fin=False, rsv1=True, compress=True)
    + peer(PING, b"mid")
    + peer(CONT, b"lo", compress=True)
    + local_ping(b"ours"),
    "ok_uncompressed_message_on_deflate_connection": setup()
    + peer(TEXT, b"Hello") + send(b"Hi", compress=False),
    "closing_after_local_close": setup(reads=1)
    + local_close(0, b"bye") + peer(TEXT, b"Hello", rsv1=True, compress=True),
    "close_local_then_peer": setup(client=True)
    + local_close(1) + raw(close(1001)),
    "close_peer_close_after_compressed": setup()
    + peer(TEXT, b"Hello", rsv1=True, compress=True) + peer(CLOSE, struct.pack(">H", 1000)),
    "err_inflates_past_message_limit": setup(message=1, reads=6)
    + peer(BINARY, b"", rsv1=True, compress=True, repeat=255),
    "err_compressed_frame_too_big": setup(frame_limit=0)
    + peer(BINARY, bytes(200), rsv1=True),
    "err_bad_deflate_data": setup() + peer(BINARY, b"\xff\xff\xff", rsv1=True),
    "err_rsv1_on_continuation": setup()
    + peer(TEXT, b"Hel", fin=False, rsv1=True, compress=True)
    + peer(CONT, b"lo", rsv1=True, compress=True),
    "err_rsv1_on_ping": setup() + peer(PING, b"", rsv1=True),
    # server_max_window_bits=8 is declined: no deflate, so RSV1 is reserved.
    "err_rsv1_when_offer_declined": setup(server_bits=1)
    + peer(TEXT, b"Hello", rsv1=True, compress=True),
    "err_compressed_text_not_utf8": setup()
    + peer(TEXT, b"caf\xe9", rsv1=True, compress=True),
}


# handshake: one byte (method bits 0-2, version bits 3-5, valid headers first
# bit 6), then header lines.
def request(lines, method=0, version=2, base=False):
    return bytes([method | version << 3 | base << 6]) + b"\r\n".join(lines)


RFC6455_REQUEST = [
    b"Host: server.example.com",
    b"Upgrade: websocket",
    b"Connection: Upgrade",
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    b"Origin: http://example.com",
    b"Sec-WebSocket-Protocol: chat, superchat",
    b"Sec-WebSocket-Version: 13",
]
BROWSER_REQUEST = [
    b"Host: localhost:8080",
    b"Connection: keep-alive, Upgrade",
    b"Pragma: no-cache",
    b"Upgrade: websocket",
    b"Sec-WebSocket-Version: 13",
    b"Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==",
    b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
    b"Sec-WebSocket-Protocol: wharf.chat.v1",
]


def without(lines, prefix):
    return [l for l in lines if not l.lower().startswith(prefix.lower().encode() + b":")]


HANDSHAKE = {
    "ok_rfc6455_sample": request(RFC6455_REQUEST),
    "ok_browser_with_deflate": request(BROWSER_REQUEST),
    "ok_http2_version_and_mixed_case": request(
        [l.upper() if l.startswith(b"Upgrade") else l for l in RFC6455_REQUEST], version=3),
    "ok_valid_base_with_protocols_and_extensions": request(
        [b"Sec-WebSocket-Protocol: , superchat,chat ,",
         b"Sec-WebSocket-Protocol: wharf.chat.v1",
         b"Sec-WebSocket-Extensions: x-webkit-deflate-frame",
         b"Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10"],
        base=True),
    "rej405_post": request(RFC6455_REQUEST, method=1),
    "rej405_lowercase_get": request(RFC6455_REQUEST, method=6),
    "rej505_http10": request(RFC6455_REQUEST, version=1),
    "rej400_no_host": request(without(RFC6455_REQUEST, "host")),
    "rej400_upgrade_not_websocket": request(
        without(RFC6455_REQUEST, "upgrade") + [b"Upgrade: h2c"]),
    "rej400_connection_without_upgrade": request(
        without(RFC6455_REQUEST, "connection") + [b"Connection: keep-alive"]),
    "rej426_version_8": request(
        without(RFC6455_REQUEST, "sec-websocket-version") + [b"Sec-WebSocket-Version: 8"]),
    "rej426_two_versions": request(RFC6455_REQUEST + [b"Sec-WebSocket-Version: 13"]),
    "rej400_no_key": request(without(RFC6455_REQUEST, "sec-websocket-key")),
    "rej400_two_keys": request(RFC6455_REQUEST + [b"Sec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEA=="]),
    "rej400_key_of_15_bytes": request(
        without(RFC6455_REQUEST, "sec-websocket-key")
        + [b"Sec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4P"]),
    "rej400_malformed_extensions": request(
        RFC6455_REQUEST + [b'Sec-WebSocket-Extensions: permessage-deflate; x="'])
}


# extensions: two config bytes, then one header value per line.
def config(dedicated=False, server_bits=15, client_bits=15, level=6):
    return bytes([int(dedicated) | server_bits << 1, client_bits | (level // 2) << 5])


def offers(*values, **cfg):
    return config(**cfg) + b"\n".join(values)


EXTENSIONS = {
    "ok_bare_offer": offers(b"permessage-deflate"),
    "ok_bare_offer_dedicated": offers(b"permessage-deflate", dedicated=True),
    "ok_client_max_window_bits_without_value": offers(
        b"permessage-deflate; client_max_window_bits", client_bits=10),
    # RFC 7692 §5.1's example: the first offer declined, the second taken.
    "ok_second_offer_after_declined_one": offers(
        b"permessage-deflate; server_max_window_bits=8, "
        b"permessage-deflate; server_max_window_bits=10"),
    "ok_quoted_value": offers(b'permessage-deflate; client_max_window_bits="10"'),
    "ok_every_parameter": offers(
        b"permessage-deflate; server_no_context_takeover; client_no_context_takeover;"
        b" server_max_window_bits=9; client_max_window_bits=9", dedicated=True),
    "ok_other_extension_first": offers(b"x-webkit-deflate-frame, permessage-deflate"),
    "ok_offers_over_many_headers": offers(
        b"foo; bar=1", b"", b"  ,, ", b"PerMessage-Deflate ;\tClient_Max_Window_Bits = 12"),
    "ok_config_out_of_range": offers(
        b"permessage-deflate; client_max_window_bits; server_max_window_bits=15",
        dedicated=True, server_bits=127, client_bits=3, level=14),
    "none_server_window_8": offers(b"permessage-deflate; server_max_window_bits=8"),
    "none_unknown_parameter": offers(b"permessage-deflate; foo=bar"),
    "none_duplicate_parameter": offers(
        b"permessage-deflate; server_no_context_takeover; server_no_context_takeover"),
    "none_leading_zero": offers(b"permessage-deflate; server_max_window_bits=09"),
    "none_window_16": offers(b"permessage-deflate; client_max_window_bits=16"),
    "none_value_on_flag": offers(b"permessage-deflate; server_no_context_takeover=1"),
    "none_other_extensions_only": offers(b"x-custom; a=1; b=\"2\"", b"mux"),
    "bad_unterminated_quote": offers(b'permessage-deflate; client_max_window_bits="10'),
    "bad_empty_parameter": offers(b"permessage-deflate; ; x"),
    "bad_quoted_not_a_token": offers(b'permessage-deflate; a="b c"'),
    "bad_trailing_semicolon": offers(b"permessage-deflate;"),
    "bad_missing_comma": offers(b"permessage-deflate foo"),
    "bad_escape_at_end": offers(b'permessage-deflate; a="\\'),
    "bad_in_second_header": offers(b"permessage-deflate", b"=x"),
}


FRAME = {
    # RFC 6455 §5.7.
    "ok_text_hello_unmasked": bytes.fromhex("810548656c6c6f"),
    "ok_text_hello_masked": bytes.fromhex("818537fa213d7f9f4d5158"),
    "ok_fragment_hel": bytes.fromhex("010348656c"),
    "ok_fragment_lo": bytes.fromhex("80026c6f"),
    "ok_ping_hello": bytes.fromhex("890548656c6c6f"),
    "ok_pong_hello_masked": bytes.fromhex("8a8537fa213d7f9f4d5158"),
    "ok_binary_256_len16": bytes.fromhex("827e0100"),
    "ok_binary_64k_len64": bytes.fromhex("827f0000000000010000"),
    "ok_rsv1_compressed_hello": bytes.fromhex("c107f248cdc9c90700"),
    "more_half_header": bytes.fromhex("81"),
    "more_len16_cut": bytes.fromhex("827e01"),
    "more_mask_cut": bytes.fromhex("818537fa"),
    "err_len16_not_minimal": bytes.fromhex("827e0005"),
    "err_len64_not_minimal": bytes.fromhex("827f000000000000ffff"),
    "err_len64_top_bit": bytes.fromhex("827f8000000000000000"),
    "err_fragmented_ping": bytes.fromhex("0900"),
    "err_control_too_long": bytes.fromhex("897e007e"),
    "err_reserved_opcode": bytes.fromhex("8300"),
}


def write(target, seeds):
    out = DIR / target
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name, data in seeds.items():
        (out / name).write_bytes(data)


def main():
    write("connection_client", {k: bytes([r]) + d for k, (r, d) in CONNECTION_CLIENT.items()})
    write("connection_deflate", CONNECTION_DEFLATE)
    write("handshake", HANDSHAKE)
    write("extensions", EXTENSIONS)
    write("frame", FRAME)


if __name__ == "__main__":
    main()
