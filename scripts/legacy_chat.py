#!/usr/bin/env python3
"""A hixie-75, a hixie-76 and an RFC 6455 client chatting in one room.

Run against `examples/chat --legacy-drafts` (scripts/legacy-chat starts
it): prints a transcript of what each client sent and received, and exits
non-zero unless every client saw every message. The two legacy clients are
written here from the drafts (draft-hixie-75 and -76: the handshake, the
-76 MD5 challenge, 0x00 ... 0xFF text frames, the -76 closing handshake),
with the standard library only, independent of the server's code; the
RFC 6455 client is Python `websockets`.

usage: legacy_chat.py PORT
"""

import asyncio
import hashlib
import random
import struct
import sys

import websockets

HOST = "127.0.0.1"
TIMEOUT = 10


def key76():
    """A -76 key: a number times its spaces, with noise, as the draft says."""
    spaces = random.randint(1, 12)
    number = random.randint(0, 4294967295 // spaces)
    chars = list(str(number * spaces))
    for _ in range(random.randint(1, 12)):
        chars.insert(random.randint(0, len(chars)), random.choice("!#$%&()*+,-./:;<=>?@[]^_`{|}~"))
    for _ in range(spaces):
        chars.insert(random.randint(1, len(chars) - 1), " ")
    return "".join(chars), number


class Legacy:
    """A minimal hixie-75 or -76 client."""

    def __init__(self, draft, port):
        self.draft, self.port, self.buf = draft, port, b""

    async def connect(self, path="/"):
        self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        origin = f"http://{HOST}:{self.port}"
        lines = [f"GET {path} HTTP/1.1", "Upgrade: WebSocket", "Connection: Upgrade",
                 f"Host: {HOST}:{self.port}", f"Origin: {origin}"]
        body = b""
        if self.draft == 76:
            (k1, n1), (k2, n2) = key76(), key76()
            lines += [f"Sec-WebSocket-Key1: {k1}", f"Sec-WebSocket-Key2: {k2}"]
            body = bytes(random.getrandbits(8) for _ in range(8))
            expected = hashlib.md5(struct.pack(">II", n1, n2) + body).digest()
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        await self.writer.drain()
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        if self.draft == 75:
            prefix = b"HTTP/1.1 101 Web Socket Protocol Handshake\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n"
            assert head.startswith(prefix), head
            assert f"websocket-origin: {origin}".lower().encode() in head.lower(), head
            assert f"websocket-location: ws://{HOST}:{self.port}{path}".lower().encode() in head.lower(), head
        else:
            assert head.startswith(b"HTTP/1.1 101 "), head
            assert b"sec-websocket-location: ws://" in head.lower(), head
            answer = await asyncio.wait_for(self.reader.readexactly(16), TIMEOUT)
            assert answer == expected, (answer, expected)

    async def send(self, text):
        self.writer.write(b"\x00" + text.encode() + b"\xff")
        await self.writer.drain()

    async def recv(self):
        """The next text message; None at the -76 closing handshake or EOF."""
        while True:
            if self.buf[:2] == b"\xff\x00":
                self.buf = self.buf[2:]
                return None
            if self.buf[:1] == b"\x00" and b"\xff" in self.buf:
                end = self.buf.index(b"\xff")
                text, self.buf = self.buf[1:end].decode(), self.buf[end + 1:]
                return text
            assert self.buf[:1] in (b"", b"\x00", b"\xff"), self.buf
            more = await asyncio.wait_for(self.reader.read(4096), TIMEOUT)
            if not more:
                return None
            self.buf += more

    async def close(self):
        if self.draft == 76:
            self.writer.write(b"\xff\x00")
            await self.writer.drain()
            while await self.recv() is not None:
                pass
        self.writer.close()


class Modern:
    def __init__(self, port):
        self.port = port

    async def connect(self):
        self.ws = await websockets.connect(f"ws://{HOST}:{self.port}/")

    async def send(self, text):
        await self.ws.send(text)

    async def recv(self):
        return await asyncio.wait_for(self.ws.recv(), TIMEOUT)

    async def close(self):
        await self.ws.close()


async def main(port):
    clients = {"hixie-75": Legacy(75, port), "hixie-76": Legacy(76, port), "rfc6455": Modern(port)}
    seen = {name: [] for name in clients}
    ids = {}

    async def expect(name, predicate):
        while True:
            msg = await clients[name].recv()
            assert msg is not None, f"{name}: closed early"
            seen[name].append(msg)
            print(f"  {name:9} <- {msg}")
            if predicate(msg):
                return msg

    for name, client in clients.items():
        await client.connect()
        print(f"{name:9} connected")
        # Its own arrival, broadcast to the room, names its id.
        msg = await expect(name, lambda m: m.startswith("New Connection: "))
        ids[name] = msg.split(": ")[1]
        for other in list(clients)[: list(clients).index(name)]:
            await expect(other, lambda m, i=ids[name]: m == f"New Connection: {i}")
    for name, client in clients.items():
        text = f"hello from {name}"
        print(f"{name:9} -> {text}")
        await client.send(text)
        line = f"{ids[name]}: {text}"
        for other in clients:
            await expect(other, lambda m, line=line: m == line)
    for i, (name, client) in enumerate(clients.items()):
        await client.close()
        print(f"{name:9} closed")
        for other in list(clients)[i + 1:]:
            await expect(other, lambda m, n=name: m == f"Connection Closed: {ids[n]}")
    print("every client saw every message")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
