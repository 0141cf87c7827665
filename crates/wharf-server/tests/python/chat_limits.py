"""An independent client of the wharf chat: Python `websockets` (sync API).

    python3 chat_limits.py PORT BURST

Against a server whose message rate limit is BURST messages at once, then
one a second: a join and BURST + 5 says sent back to back get `joined`,
BURST - 1 messages and 6 `rate_limited` errors, the connection staying
open; on a second connection, names and rooms with invisible characters
get `bad_message` naming the character. Exits 1 with the first mismatch.
Run by crates/wharf-server/tests/it/rate_limit.rs.
"""

import json
import sys

from websockets.sync.client import connect

BAD = ["\u202e", "\u200b", "\ufeff", "\u2028", "\u0007", "\u00a0", "\u3164", "\ue000"]


def check(cond, what):
    if not cond:
        print(f"FAIL: {what}", file=sys.stderr)
        sys.exit(1)


def open_chat(port):
    ws = connect(f"ws://127.0.0.1:{port}/chat", subprotocols=["wharf.chat.v1"],
                 open_timeout=5, close_timeout=2)
    check(ws.subprotocol == "wharf.chat.v1", f"subprotocol {ws.subprotocol!r}")
    welcome = json.loads(ws.recv(timeout=5))
    check(welcome["type"] == "welcome", f"first message {welcome}")
    return ws


def main():
    port, burst = int(sys.argv[1]), int(sys.argv[2])
    with open_chat(port) as ws:
        ws.send(json.dumps({"v": 1, "type": "join", "room": "py", "name": "snake"}))
        for i in range(burst + 5):
            ws.send(json.dumps({"v": 1, "type": "say", "text": f"s{i}"}))
        got = [json.loads(ws.recv(timeout=5)) for _ in range(burst + 6)]
        kinds = [m["type"] for m in got]
        check(kinds[0] == "joined", f"first reply {got[0]}")
        said = [m["text"] for m in got if m["type"] == "message"]
        check(said == [f"s{i}" for i in range(burst - 1)], f"delivered {said}")
        limited = [m for m in got if m["type"] == "error"]
        check(len(limited) == 6 and all(m["code"] == "rate_limited" for m in limited),
              f"errors {limited}")
        print(f"ok: burst {burst}: joined, {len(said)} messages, {len(limited)} rate_limited")
    with open_chat(port) as ws:
        for ch in BAD:
            ws.send(json.dumps({"v": 1, "type": "join", "room": "py", "name": f"Ada{ch}x"}))
            e = json.loads(ws.recv(timeout=5))
            want = f"U+{ord(ch):04X}"
            check(e["type"] == "error" and e["code"] == "bad_message" and want in e["reason"],
                  f"name with {want}: {e}")
        print(f"ok: {len(BAD)} invisible characters refused by name")


if __name__ == "__main__":
    main()
