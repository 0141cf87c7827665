#!/usr/bin/env python3
"""Writes the committed seeds of the `proxy_header` fuzz target.

Each seed is what a proxy (or an impostor) sends first on a connection. The
name says what the PROXY protocol parser must make of the whole input
(`wharf::fuzz_proxy_header`): `complete_*` a header, `incomplete_*` not yet
a whole one, `invalid_*` a refusal. The test
`proxy_protocol::tests::proxy_header_fuzz_seeds` in crates/wharf checks it.

    python3 fuzz/seeds/make_proxy_header.py
"""

import pathlib
import shutil
import struct

OUT = pathlib.Path(__file__).resolve().parent / "proxy_header"
SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v2(command, family, body):
    return SIG + bytes([0x20 | command, family]) + struct.pack(">H", len(body)) + body


V4 = bytes([192, 0, 2, 1, 198, 51, 100, 2]) + struct.pack(">HH", 56324, 443)
V6 = bytes(15) + b"\x01" + bytes(15) + b"\x02" + struct.pack(">HH", 1, 2)

SEEDS = {
    "complete_v1_tcp4": b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET / HTTP/1.1\r\n\r\n",
    "complete_v1_tcp6": b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n",
    "complete_v1_unknown": b"PROXY UNKNOWN\r\n",
    "complete_v1_unknown_with_addresses": b"PROXY UNKNOWN ::1 ::1 1 2\r\n",
    "complete_v2_tcp4": v2(1, 0x11, V4) + b"\x16\x03\x01",
    "complete_v2_tcp4_with_tlv": v2(1, 0x11, V4 + b"\x04\x00\x01\x00"),
    "complete_v2_udp6": v2(1, 0x22, V6),
    "complete_v2_local": v2(0, 0x00, b""),
    "incomplete_v1_line": b"PROXY TCP4 192.0.2.1 198.51",
    "incomplete_v2_addresses": v2(1, 0x11, V4)[:20],
    "incomplete_v2_signature": SIG[:7],
    "invalid_http_request": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "invalid_v1_bare_lf": b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\n",
    "invalid_v1_family_mismatch": b"PROXY TCP6 192.0.2.1 198.51.100.2 1 2\r\n",
    "invalid_v1_leading_zero_port": b"PROXY TCP4 192.0.2.1 198.51.100.2 01 2\r\n",
    "invalid_v1_too_long": b"PROXY TCP4 " + b"1" * 120,
    "invalid_v1_udp": b"PROXY UDP4 192.0.2.1 198.51.100.2 1 2\r\n",
    "invalid_v2_unix": v2(1, 0x31, bytes(216)),
    "invalid_v2_short_addresses": v2(1, 0x11, V4[:8]),
    "invalid_v2_version_3": SIG + bytes([0x31, 0x11]) + struct.pack(">H", 12) + V4,
    "invalid_v2_too_long": SIG + bytes([0x21, 0x11]) + struct.pack(">H", 4000) + V4,
}


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir()
    for name, data in SEEDS.items():
        (OUT / name).write_bytes(data)
    print(f"{len(SEEDS)} seeds in {OUT}")


if __name__ == "__main__":
    main()
