#!/usr/bin/env python3
"""Writes the committed seeds of the `connection_server` fuzz target.

Each seed is one byte choosing the read sizes (0: a single read; n:
pseudo-random reads of 1..=n bytes), then the client's bytes. The name says
what the server must do: `ok_*` stays open, `close_*` closes cleanly on the
peer's close frame, `err_*` fails the connection. The stable test
crates/wharf-proto/tests/fuzz_seeds.rs checks exactly that.

    python3 fuzz/seeds/make_connection_server.py
"""

import pathlib
import shutil
import struct

OUT = pathlib.Path(__file__).resolve().parent / "connection_server"
KEY = bytes([0x37, 0xFA, 0x21, 0x3D])  # RFC 6455 §5.7

TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


def frame(opcode, payload=b"", fin=True, masked=True, rsv=0, length=None):
    """One client frame; `length` overrides the encoded payload length."""
    n = len(payload) if length is None else length
    out = bytearray([(0x80 if fin else 0) | (rsv << 4) | opcode])
    bit = 0x80 if masked else 0
    if n <= 125:
        out.append(bit | n)
    elif n <= 0xFFFF:
        out += bytes([bit | 126]) + struct.pack(">H", n)
    else:
        out += bytes([bit | 127]) + struct.pack(">Q", n)
    if masked:
        out += KEY
        payload = bytes(b ^ KEY[i % 4] for i, b in enumerate(payload))
    return bytes(out + payload)


def close(code, reason=b""):
    return frame(CLOSE, struct.pack(">H", code) + reason)


SEEDS = {
    # RFC 6455 §5.7 "Hello", in one read and byte by byte.
    "ok_text_hello": (0, frame(TEXT, b"Hello")),
    "ok_text_hello_bytewise": (1, frame(TEXT, b"Hello")),
    "ok_binary_256_len16": (7, frame(BINARY, bytes(range(256)))),
    "ok_control_and_empty_frames": (
        3,
        frame(PING, b"are you there")
        + frame(PONG, b"unsolicited")
        + frame(TEXT)
        + frame(BINARY)
        + frame(PING),
    ),
    "ok_fragmented_text_with_ping": (
        5,
        frame(TEXT, b"Hel", fin=False)
        + frame(PING, b"mid")
        + frame(CONT, b"l", fin=False)
        + frame(CONT, b"o"),
    ),
    # "κόσμε" with the second letter's two bytes split across fragments.
    "ok_fragmented_utf8_split_codepoint": (
        2,
        frame(TEXT, "κό".encode()[:3], fin=False) + frame(CONT, "κόσμε".encode()[3:]),
    ),
    "close_normal_then_ignored_data": (4, close(1000, b"bye") + frame(TEXT, b"after close")),
    "close_empty_payload": (0, frame(CLOSE)),
    # Fails before the frame is complete: text is validated as it arrives.
    "err_invalid_utf8_partial": (6, frame(TEXT, b"ok \xff" + b"x" * 40)),
    "err_invalid_utf8_in_continuation": (
        0,
        frame(TEXT, b"abc", fin=False) + frame(CONT, b"\xed\xa0\x80"),
    ),
    "err_truncated_codepoint_at_fin": (0, frame(TEXT, "€".encode()[:2])),
    "err_reserved_opcode": (0, frame(0x3, b"x")),
    "err_unmasked_frame": (0, frame(TEXT, b"Hello", masked=False)),
    "err_rsv1_without_extension": (0, frame(TEXT, b"Hello", rsv=0b100)),
    "err_bad_close_code": (0, close(1005)),
    "err_close_reason_not_utf8": (0, close(1000, b"\xc3\x28")),
    "err_length_top_bit_set": (0, frame(BINARY, length=1 << 63)),
    "err_frame_too_big_len64": (3, frame(BINARY, length=(64 << 10) + 1)),
    "err_fragmented_ping": (0, frame(PING, b"p", fin=False)),
    "err_continuation_without_message": (0, frame(CONT, b"orphan")),
}


def main():
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    for name, (reads, data) in SEEDS.items():
        (OUT / name).write_bytes(bytes([reads]) + data)


if __name__ == "__main__":
    main()
