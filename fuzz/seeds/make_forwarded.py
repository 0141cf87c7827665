#!/usr/bin/env python3
"""Writes the committed seeds of the `forwarded` fuzz target.

Each seed is one byte choosing the trusted blocks (bit 0: 127.0.0.0/8,
bit 1: 10.0.0.0/8, bit 2: ::1, bit 3: 2001:db8::/32; bit 4 set: read
X-Forwarded-For, else Forwarded; the peer is
127.0.0.1), then header lines cycling through `Forwarded`,
`X-Forwarded-For`, `X-Forwarded-Proto` and `X-Forwarded-Host`. The name
says whom `wharf::fuzz_forwarded` must take for the client: `peer_*` the
socket's peer, `forwarded_*` an address from the headers. The test
`forwarded::tests::forwarded_fuzz_seeds` in crates/wharf checks it.

    python3 fuzz/seeds/make_forwarded.py
"""

import pathlib
import shutil

OUT = pathlib.Path(__file__).resolve().parent / "forwarded"


def seed(trusted, forwarded="", xff="", proto="", host=""):
    return bytes([trusted]) + "\n".join([forwarded, xff, proto, host]).encode()


SEEDS = {
    "forwarded_rfc7239_example": seed(0b0001, 'for=192.0.2.60;proto=http;by=203.0.113.43, for="[2001:db8:cafe::17]:4711"'),
    "forwarded_xff_one_hop": seed(0b10001, xff="198.51.100.7", proto="https", host="chat.example"),
    "forwarded_xff_right_most_untrusted": seed(0b10011, xff="6.6.6.6, 198.51.100.7, 10.0.0.2", proto="https, http"),
    "forwarded_xff_all_trusted": seed(0b10011, xff="10.1.1.1, 10.0.0.2"),
    "forwarded_xff_ipv6_with_port": seed(0b10001, xff="[2001:db8::9]:443"),
    "forwarded_quoted_escapes": seed(0b0001, 'for="192.0.2.\\61";host="a\\"b"'),
    "peer_untrusted_peer": seed(0b0000, "for=192.0.2.1", "192.0.2.2"),
    "peer_unknown_node": seed(0b0001, "for=unknown"),
    "peer_obfuscated_node": seed(0b0001, "for=_hidden"),
    "peer_malformed_forwarded": seed(0b0001, 'for="192.0.2.1'),
    "peer_garbage_xff": seed(0b10001, xff="not an address"),
    "peer_no_headers": seed(0b1111),
    "peer_empty_elements": seed(0b0001, ",,;;,"),
}


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir()
    for name, data in SEEDS.items():
        (OUT / name).write_bytes(data)
    print(f"{len(SEEDS)} seeds in {OUT}")


if __name__ == "__main__":
    main()
