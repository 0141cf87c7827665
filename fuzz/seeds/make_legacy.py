#!/usr/bin/env python3
"""Writes the seeds of the legacy_handshake and legacy_framing fuzz targets
(fuzz/common/legacy.rs), each named for what must happen to it:
legacy_handshake: ok75_*, ok76_* (accepted), rej400_*, rej405_*, rej505_*
(refused), not_* (not a legacy request); legacy_framing: ok_* (open, no
error), close_* (the -76 closing handshake), err_* (a violation).

usage: fuzz/seeds/make_legacy.py   (from anywhere)
"""
import os

here = os.path.dirname(os.path.abspath(__file__))

K1, K2, K3 = "4 @1  46546xW%0l 1 5", "12998 5 Y3 1  .P00", b"^n:ds[4U"
BASE75 = ["Upgrade: WebSocket", "Connection: Upgrade", "Host: example.com", "Origin: http://example.com"]
BASE76 = BASE75 + [f"Sec-WebSocket-Key1: {K1}", f"Sec-WebSocket-Key2: {K2}"]


def hs(flags, lines, body=b""):
    return bytes([flags]) + "\n".join(lines).encode() + b"\n\n" + body


handshake = {
    "ok75_draft_example": hs(0, BASE75 + ["WebSocket-Protocol: sample"]),
    "ok75_secure": hs(4, BASE75),
    "ok76_draft_example": hs(0, BASE76 + ["Sec-WebSocket-Protocol: sample"], K3),
    "ok76_secure_no_key3": hs(4, BASE76),
    "ok76_max_number": hs(0, BASE75 + ["Sec-WebSocket-Key1: 42949 67295", "Sec-WebSocket-Key2: 0 0"], K3),
    "rej400_key_without_spaces": hs(0, BASE75 + ["Sec-WebSocket-Key1: 12345", f"Sec-WebSocket-Key2: {K2}"], K3),
    "rej400_key_not_multiple": hs(0, BASE75 + ["Sec-WebSocket-Key1: 1 2 3", f"Sec-WebSocket-Key2: {K2}"], K3),
    "rej400_key_over_u32": hs(0, BASE75 + ["Sec-WebSocket-Key1: 42949 67296", f"Sec-WebSocket-Key2: {K2}"], K3),
    "rej400_only_key2": hs(0, BASE75 + [f"Sec-WebSocket-Key2: {K2}"], K3),
    "rej400_two_key1": hs(0, BASE76 + [f"Sec-WebSocket-Key1: {K1}"], K3),
    "rej400_no_origin": hs(0, BASE75[:3]),
    "rej400_no_host": hs(0, [BASE75[0], BASE75[1], BASE75[3]]),
    "rej400_upgrade_h2c": hs(0, ["Upgrade: h2c"] + BASE75[1:]),
    "rej400_two_protocols": hs(0, BASE75 + ["WebSocket-Protocol: a", "WebSocket-Protocol: b"]),
    "rej405_post": hs(1, BASE76, K3),
    "rej505_http10": hs(2, BASE75),
    "not_rfc6455_version": hs(0, BASE75 + ["Sec-WebSocket-Version: 13"]),
}

framing = {
    "ok_75_hello": b"\x00" + b"\x00Hello\xff",
    "ok_76_hello_bytewise": b"\x01" + b"\x00Hello\xff\x00caf\xc3\xa9\xff",
    "ok_76_discarded_frames": b"\x05" + b"\x01skip\xff\x80\x81\x00" + b"x" * 128 + b"\x80\x00\x00kept\xff",
    "ok_75_close_is_discarded": b"\x02" + b"\xff\x00\x00after\xff",
    "ok_76_partial_text": b"\x03" + b"\x00unfinished",
    "ok_76_at_message_limit": b"\x01" + b"\x00" + b"m" * 256 + b"\xff",
    "close_76_after_text": b"\x07" + b"\x00bye\xff\xff\x00\x00ignored\xff",
    "err_76_invalid_utf8": b"\x01" + b"\x00ok\xff\x00\xc3\x28\xff",
    "err_75_surrogate": b"\x00" + b"\x00\xed\xa0\x80\xff",
    "err_76_over_message_limit": b"\x09" + b"\x00" + b"m" * 257 + b"\xff",
    "err_75_discarded_over_limit": b"\x04" + b"\x05" + b"m" * 300,
    "err_76_length_over_frame_limit": b"\x01" + b"\x80\x88\x01",
    "err_76_endless_length": b"\x01" + b"\x80" + b"\x80" * 12,
}

for target, seeds in [("legacy_handshake", handshake), ("legacy_framing", framing)]:
    d = os.path.join(here, target)
    os.makedirs(d, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
