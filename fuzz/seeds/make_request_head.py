#!/usr/bin/env python3
"""Writes the committed seeds of the `request_head` fuzz target.

Each seed is one byte choosing a read size (1 + 67 * byte), then what a
client sends as the first request of a connection. The name says what the
first-request parser must make of it (`wharf::fuzz_request_head`):
`upgrade_*` an upgrade answered by wharf, `other_*` a request for hyper,
`414_*` and `431_*` a refusal, `none_*` no head before the input ends.
The test `head::tests::request_head_fuzz_seeds` in crates/wharf checks it.

    python3 fuzz/seeds/make_request_head.py
"""

import pathlib
import shutil

OUT = pathlib.Path(__file__).resolve().parent / "request_head"
MAX_HEAD = 16 * 1024
MAX_HEADERS = 64
MAX_TARGET = 8 * 1024


def upgrade(path="/", extra=(), method="GET", version="1.1", eol="\r\n"):
    lines = [
        f"{method} {path} HTTP/{version}",
        "Host: localhost",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        *extra,
    ]
    return (eol.join(lines) + eol + eol).encode()


SEEDS = {
    "upgrade_basic": (0, upgrade()),
    "upgrade_with_frame_behind": (3, upgrade("/chat?room=1") + b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"),
    "upgrade_bare_newlines": (1, upgrade(eol="\n")),
    "upgrade_leading_blank_lines": (2, b"\r\n\r\n" + upgrade()),
    "upgrade_token_list": (5, upgrade(extra=["Upgrade: h2c, WebSocket"])),
    "upgrade_target_at_limit": (7, upgrade("/" + "t" * (MAX_TARGET - 1))),
    "upgrade_headers_at_limit": (4, upgrade(extra=[f"X-H{i}: {i}" for i in range(MAX_HEADERS - 6)])),
    "upgrade_post_for_the_handshake_to_refuse": (0, upgrade(method="POST")),
    "other_plain_get": (0, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"),
    "other_pipelined_gets": (9, b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n"),
    "other_h2c_upgrade": (0, b"GET / HTTP/1.1\r\nUpgrade: h2c\r\n\r\n"),
    "other_not_http": (0, b"NOT HTTP AT ALL\r\n\r\n"),
    "other_bad_header_byte": (1, b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nBad\x01Header: x\r\n\r\n"),
    "other_bad_header_value_for_http": (2, b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nX: \x7f\r\n\r\n"),
    "upgrade_http10_for_the_handshake_to_refuse": (0, upgrade(version="1.0")),
    "414_target_over_limit": (0, upgrade("/" + "t" * MAX_TARGET)),
    "414_request_line_over_head": (11, b"GET /" + b"q" * MAX_HEAD + b" HTTP/1.1\r\n\r\n"),
    "431_one_huge_header": (13, upgrade(extra=["X-Big: " + "a" * MAX_HEAD])),
    "431_too_many_headers": (0, upgrade(extra=[f"X-H{i}: {i}" for i in range(MAX_HEADERS)])),
    "431_no_blank_line": (17, b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * (MAX_HEAD // 8 + 1)),
    "none_empty": (0, b""),
    "none_unfinished_head": (1, b"GET / HTTP/1.1\r\nHost: local"),
    "none_only_blank_lines": (0, b"\r\n" * 100),
    "none_no_blank_line_yet": (2, b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nBad\x01"),
}


def main():
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir()
    for name, (reads, data) in SEEDS.items():
        (OUT / name).write_bytes(bytes([reads]) + data)


if __name__ == "__main__":
    main()
