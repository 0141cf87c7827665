#!/usr/bin/env python3
"""The hostile-input suite: attacks the real `wharf` binary as a hostile
client would, and asserts numbers (memory growth against the documented
per-connection budget, latencies, close codes, deadlines), not survival.

Python 3.11 standard library only: raw sockets under asyncio, frames built
and masked by hand, permessage-deflate with zlib. Every scenario starts its
own server on a free loopback port, and every wait has a deadline.
See docs/HOSTILE.md.

    python3 scripts/hostile.py                 # every scenario; exit 1 on a failure
    python3 scripts/hostile.py --only pong-flood
    python3 scripts/hostile.py --report        # every scenario; never fails
"""

import argparse
import asyncio
import base64
import hashlib
import json
import os
import resource
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import zlib

KiB = 1024
MiB = 1024 * KiB
# Fixed allowance on top of connections x budget: allocator, runtime, pools.
SLACK = 16 * MiB
# The largest message the chat server itself sends: a `message` event whose
# 2,000-character text is JSON-escaped (up to 6 bytes a character), plus
# the envelope.
CHAT_LARGEST_OUT = 16 * KiB
# The documented default message limit of `--mode chat` (echo and broadcast
# keep 1 MiB).
CHAT_MESSAGE_LIMIT = 64 * KiB
# What one pending request head may hold (one read buffer), for scenarios
# whose connections never become WebSockets.
HEAD_BUDGET = 64 * KiB
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
HOST = "127.0.0.1"

OP_CONT, OP_TEXT, OP_BIN, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def budget(cfg):
    """The per-connection memory budget the server documents, from its
    effective configuration (`wharf --print-config`):

        budget = M + Q + 2*R + C
        M = max_message_size        one message assembled or inflated, not yet taken
        Q = max_backpressure + largest message the server sends + 256 (a pong, a close)
        R = max(64 KiB, max_frame_size + 14)   read buffers, incl. pinned ones
        C = 4 KiB (+ 320 KiB with deflate = dedicated)
    """
    m = cfg["max-message-size"]
    largest_out = CHAT_LARGEST_OUT if cfg["mode"] == "chat" else m
    q = cfg["max-backpressure"] + largest_out + 256
    r = max(64 * KiB, cfg["max-frame-size"] + 14)
    c = 4 * KiB + (320 * KiB if cfg["deflate"] == "dedicated" else 0)
    return m + q + 2 * r + c


def mib(n):
    return f"{n / MiB:.1f}"


def now():
    return time.monotonic()


def left(deadline, floor=0.001):
    return max(floor, deadline - now())


# ---------------------------------------------------------------- frames


def xor_mask(data, key):
    n = len(data)
    if n == 0:
        return b""
    mask = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(mask, "big")).to_bytes(n, "big")


def frame(opcode, payload=b"", fin=True, rsv1=False, length=None):
    """A client frame: masked, as RFC 6455 section 5.3 requires. `length`
    overrides the announced payload length (for partial frames)."""
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    n = len(payload) if length is None else length
    if n < 126:
        head = bytes([b0, 0x80 | n])
    elif n < 65536:
        head = struct.pack("!BBH", b0, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", b0, 0x80 | 127, n)
    key = os.urandom(4)
    return head + key + xor_mask(payload, key)


def close_payload(code, reason=b""):
    return struct.pack("!H", code) + reason


def deflate_message(raw):
    """RFC 7692 section 7.2.1: raw deflate, sync flush, tail 00 00 ff ff removed."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = c.compress(raw) + c.flush(zlib.Z_SYNC_FLUSH)
    assert data.endswith(b"\x00\x00\xff\xff")
    return data[:-4]


class Frame:
    __slots__ = ("fin", "rsv1", "opcode", "payload")

    def __init__(self, fin, rsv1, opcode, payload):
        self.fin, self.rsv1, self.opcode, self.payload = fin, rsv1, opcode, payload

    def close_code(self):
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else 1005


class Closed(Exception):
    """The peer closed the TCP connection (EOF or reset)."""


class WS:
    """A WebSocket client on a raw non-blocking socket: nothing is buffered
    but what the kernel holds, so a client that does not read is a true
    zero-window reader."""

    def __init__(self, sock, rest, headers):
        self.sock = sock
        self.buf = bytearray(rest)
        self.pos = 0
        self.headers = headers
        self.inflater = None

    @classmethod
    async def connect(cls, port, path="/", deflate=False, protocol=None, rcvbuf=None, timeout=5.0):
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        deadline = now() + timeout
        try:
            await asyncio.wait_for(loop.sock_connect(sock, (HOST, port)), left(deadline))
            key = base64.b64encode(os.urandom(16))
            req = (
                f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            ).encode() + b"Sec-WebSocket-Key: " + key + b"\r\n"
            if deflate:
                req += b"Sec-WebSocket-Extensions: permessage-deflate\r\n"
            if protocol:
                req += f"Sec-WebSocket-Protocol: {protocol}\r\n".encode()
            await asyncio.wait_for(loop.sock_sendall(sock, req + b"\r\n"), left(deadline))
            head = b""
            while b"\r\n\r\n" not in head:
                data = await asyncio.wait_for(loop.sock_recv(sock, 4096), left(deadline))
                if not data:
                    raise Closed("EOF during handshake")
                head += data
                if len(head) > 64 * KiB:
                    raise ValueError("response head too long")
            head, rest = head.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            if lines[0].split(" ")[1:2] != ["101"]:
                raise ValueError(f"handshake refused: {lines[0]}")
            headers = {}
            for line in lines[1:]:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
            want = base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()
            if headers.get("sec-websocket-accept") != want:
                raise ValueError("bad Sec-WebSocket-Accept")
        except BaseException:
            sock.close()
            raise
        ws = cls(sock, rest, headers)
        if "permessage-deflate" in headers.get("sec-websocket-extensions", ""):
            ws.inflater = zlib.decompressobj(-15)
        return ws

    @property
    def deflated(self):
        return self.inflater is not None

    async def send(self, data, timeout=5.0):
        loop = asyncio.get_running_loop()
        await asyncio.wait_for(loop.sock_sendall(self.sock, data), timeout)

    def _parse(self):
        buf, i = self.buf, self.pos
        avail = len(buf) - i
        if avail < 2:
            return None
        b0, b1 = buf[i], buf[i + 1]
        n, j = b1 & 0x7F, i + 2
        if n == 126:
            if avail < 4:
                return None
            n, j = int.from_bytes(buf[i + 2 : i + 4], "big"), i + 4
        elif n == 127:
            if avail < 10:
                return None
            n, j = int.from_bytes(buf[i + 2 : i + 10], "big"), i + 10
        key = None
        if b1 & 0x80:
            key, j = bytes(buf[j : j + 4]), j + 4
        if len(buf) < j + n:
            return None
        payload = bytes(buf[j : j + n])
        if key:
            payload = xor_mask(payload, key)
        self.pos = j + n
        if self.pos > 256 * KiB:
            del buf[: self.pos]
            self.pos = 0
        return Frame(bool(b0 & 0x80), bool(b0 & 0x40), b0 & 0x0F, payload)

    async def recv_frame(self, timeout):
        """The next frame; raises Closed on EOF or reset, TimeoutError."""
        loop = asyncio.get_running_loop()
        deadline = now() + timeout
        while True:
            f = self._parse()
            if f is not None:
                return f
            try:
                data = await asyncio.wait_for(loop.sock_recv(self.sock, 256 * KiB), left(deadline))
            except (ConnectionError, OSError) as e:
                if isinstance(e, TimeoutError):
                    raise
                raise Closed(str(e)) from e
            if not data:
                raise Closed("EOF")
            self.buf += data

    async def recv_message(self, timeout):
        """The next text or binary message (bytes), answering pings; a close
        frame is returned as a Frame."""
        deadline = now() + timeout
        parts, compressed = [], False
        while True:
            f = await self.recv_frame(left(deadline))
            if f.opcode == OP_PING:
                try:
                    await self.send(frame(OP_PONG, f.payload), 1.0)
                except (OSError, TimeoutError):
                    pass
                continue
            if f.opcode == OP_PONG:
                continue
            if f.opcode == OP_CLOSE:
                return f
            if f.opcode in (OP_TEXT, OP_BIN):
                parts, compressed = [], f.rsv1
            parts.append(f.payload)
            if f.fin:
                data = b"".join(parts)
                if compressed:
                    data = self.inflater.decompress(data + b"\x00\x00\xff\xff")
                return data

    async def wait_close(self, timeout, reply=False):
        """Reads (discarding) until the server's close frame: its code, or
        'eof' / 'reset' / 'timeout'."""
        deadline = now() + timeout
        try:
            while True:
                f = await self.recv_frame(left(deadline))
                if f.opcode == OP_CLOSE:
                    code = f.close_code()
                    if reply:
                        # Echo the close, then wait for the server's FIN and
                        # close too, as RFC 6455 section 7.1.1 has a client do.
                        try:
                            await self.send(frame(OP_CLOSE, close_payload(code)), 1.0)
                            while True:
                                await self.recv_frame(left(deadline))
                        except (OSError, TimeoutError, Closed):
                            self.close()
                    return code
        except TimeoutError:
            return "timeout"
        except Closed as e:
            return "reset" if "reset" in str(e).lower() else "eof"

    def close(self):
        self.sock.close()


async def raw_connect(port, timeout=5.0):
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(loop.sock_connect(sock, (HOST, port)), timeout)
    except BaseException:
        sock.close()
        raise
    return sock


async def wait_eof(sock, timeout):
    """Reads until the server closes `sock`: True if it did within `timeout`."""
    loop = asyncio.get_running_loop()
    deadline = now() + timeout
    try:
        while True:
            data = await asyncio.wait_for(loop.sock_recv(sock, 65536), left(deadline))
            if not data:
                return True
    except TimeoutError:
        return False
    except OSError:
        return True


async def http_get(port, path, timeout=3.0):
    """GET over a fresh connection: (status, body, seconds), or (None, error, seconds)."""
    t0 = now()
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection(HOST, port), timeout)
    except (OSError, TimeoutError) as e:
        return None, repr(e), now() - t0
    try:
        w.write(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
        data = await asyncio.wait_for(r.read(4 * MiB), left(t0 + timeout))
        while True:
            more = await asyncio.wait_for(r.read(4 * MiB), left(t0 + timeout))
            if not more:
                break
            data += more
    except (OSError, TimeoutError) as e:
        return None, repr(e), now() - t0
    finally:
        w.close()
    head, _, body = data.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ")[1])
    except (IndexError, ValueError):
        return None, "bad response", now() - t0
    return status, body, now() - t0


async def metric(port, name, timeout=3.0):
    status, body, _ = await http_get(port, "/metrics", timeout)
    if status != 200:
        return None
    for line in body.decode(errors="replace").splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


class Prober:
    """Times GET /healthz every `every` seconds until stopped."""

    def __init__(self, port, every=0.25, timeout=3.0):
        self.port, self.every, self.timeout = port, every, timeout
        self.times, self.failures = [], 0
        self.task = asyncio.create_task(self._run())

    async def _run(self):
        while True:
            status, _, dt = await http_get(self.port, "/healthz", self.timeout)
            self.times.append(dt)
            if status != 200:
                self.failures += 1
            await asyncio.sleep(self.every)

    async def stop(self):
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass
        return max(self.times, default=0.0)


# ---------------------------------------------------------------- server


def proc_status(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            out = {}
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    k, v = line.split(":")
                    out[k] = int(v.split()[0]) * 1024
            return out
    except OSError:
        return {}


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Server:
    """One `wharf` process started by this suite. Only its PID is ever signalled."""

    def __init__(self, binary, mode, flags, nofile=None):
        self.binary, self.mode, self.flags, self.nofile = binary, mode, flags, nofile
        self.proc = None
        self.port = None
        self.cfg = None
        self.log = None

    def args(self):
        return [self.binary, "--listen", f"{HOST}:{self.port}", "--mode", self.mode,
                "--log-level", "warn", *self.flags]

    async def start(self):
        self.port = free_port()
        out = subprocess.run(self.args() + ["--print-config"], capture_output=True, text=True, timeout=10)
        if out.returncode != 0:
            why = (out.stderr.strip().splitlines() or [f"exit status {out.returncode}"])[0]
            raise StartError(f"server refused its flags: {why}")
        self.cfg = tomllib.loads(out.stdout)
        self.log = tempfile.NamedTemporaryFile(prefix="wharf-hostile-", suffix=".log", delete=False)
        nofile = self.nofile

        def limits():
            if nofile:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        self.proc = subprocess.Popen(self.args(), stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=self.log, preexec_fn=limits, start_new_session=True)
        STARTED.add(self.proc)
        deadline = now() + 10
        while now() < deadline:
            if self.proc.poll() is not None:
                raise StartError(f"server exited at start ({self.proc.returncode}): {self.log_tail()}")
            status, _, _ = await http_get(self.port, "/healthz", 1.0)
            if status == 200:
                return
            await asyncio.sleep(0.05)
        raise StartError("server did not answer /healthz within 10 s")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n=3):
        try:
            with open(self.log.name, errors="replace") as f:
                return " | ".join(f.read().strip().splitlines()[-n:])
        except OSError:
            return ""

    def kill(self):
        if self.alive():
            self.proc.kill()

    def stop(self):
        if self.proc is None:
            return
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc.wait(10)
        STARTED.discard(self.proc)
        if self.log:
            self.log.close()
            os.unlink(self.log.name)


STARTED = set()


class StartError(Exception):
    pass


class Monitor(threading.Thread):
    """Samples the server's VmRSS every 50 ms; kills the server (and says so)
    if it grows past the safety cap, to protect the shared machine."""

    def __init__(self, server, cap):
        super().__init__(daemon=True)
        self.server, self.cap = server, cap
        self.baseline = proc_status(server.proc.pid).get("VmRSS", 0)
        self.peak = self.baseline
        self.capped = False
        self.halt = threading.Event()
        self.start()

    def run(self):
        while not self.halt.wait(0.05):
            rss = proc_status(self.server.proc.pid).get("VmRSS")
            if rss is None:
                return
            self.peak = max(self.peak, rss)
            if rss - self.baseline > self.cap:
                self.capped = True
                self.server.kill()
                return

    def finish(self):
        """Peak growth over the baseline, VmHWM included."""
        self.halt.set()
        self.join(2)
        hwm = proc_status(self.server.proc.pid).get("VmHWM", 0)
        self.peak = max(self.peak, hwm)
        return self.peak - self.baseline


# ---------------------------------------------------------------- results


class Result:
    def __init__(self, name):
        self.name = name
        self.figures = []
        self.failures = []
        self.growth = self.limit = None

    def fig(self, key, value):
        self.figures.append(f"{key}={value}")

    def check(self, ok, why):
        if not ok:
            self.failures.append(why)
        return ok

    def line(self):
        verdict = "FAIL" if self.failures else "PASS"
        mem = ""
        if self.growth is not None:
            mem = f"growth {mib(self.growth)} MiB / limit {mib(self.limit)} MiB"
        parts = [f"{self.name:<22}", verdict, mem, " ".join(self.figures)]
        s = "  ".join(p for p in parts if p)
        if self.failures:
            s += "  !! " + "; ".join(self.failures)
        return s


class Session:
    """A fresh server plus its memory monitor; `finish` runs the checks every
    scenario shares: (a) memory, (b) a new client is served, (c) alive."""

    def __init__(self, ctx, res, mode, flags, nofile=None):
        self.ctx, self.res = ctx, res
        self.server = Server(ctx.binary, mode, flags, nofile)
        self.mon = None

    async def __aenter__(self):
        await self.server.start()
        self.mon = Monitor(self.server, self.ctx.rss_cap)
        return self

    async def __aexit__(self, *exc):
        if self.mon:
            self.mon.halt.set()
        self.server.stop()

    @property
    def port(self):
        return self.server.port

    @property
    def cfg(self):
        return self.server.cfg

    async def finish(self, conns, per_conn=None, new_client=True):
        res = self.res
        if new_client and self.server.alive():
            ok, why = await new_client_served(self.port, self.server.mode)
            res.check(ok, f"new client not served: {why}")
        elif new_client:
            res.check(False, "new client not served: server gone")
        growth = self.mon.finish()
        b = budget(self.cfg) if per_conn is None else per_conn
        res.growth, res.limit = growth, conns * b + SLACK
        res.fig("conns", conns)
        res.fig("budget_MiB", mib(b))
        if self.mon.capped:
            res.check(False, f"RSS grew past the {mib(self.ctx.rss_cap)} MiB safety cap: server killed")
        else:
            res.check(growth <= res.limit, "memory growth over conns x budget + 16 MiB")
            res.check(self.server.alive(), f"server died (status {self.server.proc.returncode})")
        return growth


async def new_client_served(port, mode, timeout=5.0):
    """A handshake and an echo round trip (echo, broadcast) or a chat join."""
    try:
        ws = await WS.connect(port, protocol="wharf.chat.v1" if mode == "chat" else None, timeout=timeout)
    except (OSError, TimeoutError, ValueError, Closed) as e:
        return False, f"handshake: {e!r}"
    try:
        deadline = now() + timeout
        if mode == "chat":
            me = await chat_welcome(ws, left(deadline))
            await ws.send(frame(OP_TEXT, chat_join("probe", "newcomer")), left(deadline))
            while True:
                m = await ws.recv_message(left(deadline))
                if isinstance(m, Frame):
                    return False, f"closed {m.close_code()}"
                ev = json.loads(m)
                if ev.get("type") == "joined" and ev.get("id") == me:
                    return True, ""
        token = os.urandom(8).hex().encode()
        await ws.send(frame(OP_TEXT, token), left(deadline))
        while True:
            m = await ws.recv_message(left(deadline))
            if isinstance(m, Frame):
                return False, f"closed {m.close_code()}"
            if m == token:
                return True, ""
    except (OSError, TimeoutError, Closed, ValueError) as e:
        return False, repr(e)
    finally:
        ws.close()


def chat_join(room, name):
    return json.dumps({"v": 1, "type": "join", "room": room, "name": name}).encode()


def chat_say(text):
    return json.dumps({"v": 1, "type": "say", "text": text}).encode()


async def chat_welcome(ws, timeout):
    m = await ws.recv_message(timeout)
    if isinstance(m, Frame):
        raise Closed(f"closed {m.close_code()} before welcome")
    ev = json.loads(m)
    if ev.get("type") != "welcome":
        raise ValueError(f"expected welcome, got {ev.get('type')}")
    return ev["id"]


def percentile(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


async def gather_limited(n, coros):
    sem = asyncio.Semaphore(n)

    async def one(c):
        async with sem:
            return await c

    return await asyncio.gather(*(one(c) for c in coros), return_exceptions=True)


# ---------------------------------------------------------------- scenarios


async def control_flood(ctx, res, opcode, read, duration=10.0):
    """One connection sends 125-byte pings (or pongs) as fast as it can."""
    async with Session(ctx, res, "echo", []) as s:
        ws = await WS.connect(s.port)
        loop = asyncio.get_running_loop()
        batch = b"".join(frame(opcode, os.urandom(125)) for _ in range(512))
        sent, got, ended = 0, 0, "no"
        t_end = now() + duration

        async def drain():
            # Reads everything, at 6.4 MB/s: slower than the flood, as a
            # real client on a real link would be.
            nonlocal got
            while True:
                data = await loop.sock_recv(ws.sock, 64 * KiB)
                if not data:
                    return
                got += len(data)
                await asyncio.sleep(0.01)

        reader = asyncio.create_task(drain()) if read else None
        while now() < t_end:
            try:
                await asyncio.wait_for(loop.sock_sendall(ws.sock, batch), left(t_end))
                sent += 512
            except TimeoutError:
                break
            except OSError as e:
                ended = type(e).__name__
                break
        if reader:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        kind = "pings" if opcode == OP_PING else "pongs"
        res.fig(f"{kind}_sent", sent)
        res.fig("wire_MiB", mib(sent * 131))
        if read:
            res.fig("read_MiB", mib(got))
        res.fig("flooder_reset", ended)
        await s.finish(conns=1)
        ws.close()


async def compressed_flood(ctx, res, mode, count=1000, conns=8):
    """8 deflate connections each send `count` ~1 KiB frames that inflate to
    just under the message limit, reading nothing, while a bystander times
    echo (or chat) round trips and /healthz is probed."""
    async with Session(ctx, res, mode, []) as s:
        limit = CHAT_MESSAGE_LIMIT if mode == "chat" else s.cfg["max-message-size"]
        res.fig("msg_limit_KiB", s.cfg["max-message-size"] // KiB)
        if mode == "chat":
            raw = chat_say("a" * (limit - 1 * KiB - 40))
            op = OP_TEXT
        else:
            raw = bytes(limit - 1 * KiB)
            op = OP_BIN
        wire = deflate_message(raw)
        res.fig("frame_B", len(wire) + 14)
        res.fig("inflated_KiB", len(raw) // KiB)
        pool = [frame(op, wire, rsv1=True) for _ in range(32)]
        floods = []
        for _ in range(conns):
            ws = await WS.connect(s.port, deflate=True)
            if not ws.deflated:
                res.check(False, "permessage-deflate not negotiated")
                return
            floods.append(ws)
        by = await WS.connect(s.port, protocol="wharf.chat.v1" if mode == "chat" else None)
        loop = asyncio.get_running_loop()
        sent = [0] * conns

        async def flood(i, ws):
            # `count` messages as fast as the server takes them, again (up
            # to 3 rounds) until 3 s have passed; a server that pushes back
            # (stops reading) ends it after 15 s.
            k = 0
            try:
                while k < 3 * count and (k < count or now() < t0 + 3) and now() < t0 + 15:
                    chunk = b"".join(pool[(k + j) % 32] for j in range(50))
                    await asyncio.wait_for(loop.sock_sendall(ws.sock, chunk), left(t0 + 15))
                    k += 50
                    sent[i] = k
                    await asyncio.sleep(0)
            except (OSError, TimeoutError):
                pass

        rtts = []
        by_sent = [0]
        stop = asyncio.Event()

        async def bystander():
            deadline = now() + 5
            if mode == "chat":
                me = await chat_welcome(by, 5)
                await by.send(frame(OP_TEXT, chat_join("bystanders", "bystander")))
                while True:
                    ev = json.loads(await by.recv_message(left(deadline)))
                    if ev.get("type") == "joined" and ev.get("id") == me:
                        break
            seq = 0
            while not stop.is_set():
                seq += 1
                token = f"rtt {seq}"
                t0 = now()
                by_sent[0] += 1
                await by.send(frame(OP_TEXT, chat_say(token) if mode == "chat" else token.encode()), 5)
                try:
                    while True:
                        m = await by.recv_message(left(t0 + 5))
                        if isinstance(m, Frame):
                            raise Closed(f"bystander closed {m.close_code()}")
                        if mode == "chat":
                            ev = json.loads(m)
                            if ev.get("type") == "message" and ev.get("text") == token:
                                break
                        elif m == token.encode():
                            break
                    rtts.append(now() - t0)
                except TimeoutError:
                    rtts.append(5.0)
                    raise
                # Chat: 4 a second, within the default rate limit (5/s).
                pace = 0.25 if mode == "chat" else 0.1
                await asyncio.sleep(max(0.0, pace - (now() - t0)))

        prober = Prober(s.port)
        by_task = asyncio.create_task(bystander())
        await asyncio.sleep(0.3)
        t0 = now()
        await asyncio.gather(*(flood(i, ws) for i, ws in enumerate(floods)))
        res.fig("sent", sum(sent))
        # Let the server work through what it was sent, or stop reading it.
        done_in, last = None, None
        while now() < t0 + ctx.flood_cap and not by_task.done():
            n = await metric(s.port, "wharf_messages_in_total")
            n = n - by_sent[0] if n is not None else None
            if n is not None and (n >= sum(sent) or n == last):
                done_in = now() - t0
                break
            last = n
            await asyncio.sleep(1.0)
        stop.set()
        try:
            await asyncio.wait_for(by_task, 6)
        except (Exception, TimeoutError) as e:
            res.check(False, f"bystander failed: {e!r}")
        healthz_max = await prober.stop()
        processed = await metric(s.port, "wharf_messages_in_total")
        res.fig("processed", int(processed) if processed is not None else "?")
        res.fig("flood_s", f"{done_in:.1f}" if done_in else f">{ctx.flood_cap:.0f}(cap)")
        p50, p99, mx = (percentile(rtts, 50), percentile(rtts, 99), max(rtts, default=float("nan")))
        res.fig("rtt_ms_p50/p99/max", f"{p50 * 1000:.0f}/{p99 * 1000:.0f}/{mx * 1000:.0f}")
        res.fig("healthz_max_ms", f"{healthz_max * 1000:.0f}")
        res.check(len(rtts) >= 5, f"bystander made only {len(rtts)} round trips")
        res.check(p99 < 0.5, f"bystander p99 RTT {p99 * 1000:.0f} ms >= 500 ms")
        res.check(healthz_max < 1.0 and prober.failures == 0,
                  f"/healthz max {healthz_max * 1000:.0f} ms, {prober.failures} failed")
        if mode == "chat":
            big = await WS.connect(s.port, deflate=True)
            await chat_welcome(big, 5)
            over = chat_say("a" * (MiB - 1 * KiB - 40))
            await big.send(frame(OP_TEXT, deflate_message(over), rsv1=True))
            code = await big.wait_close(5)
            res.fig("over_limit_close", code)
            res.check(code == 1009, f"a message inflating to ~1 MiB got {code}, want close 1009")
            big.close()
        await s.finish(conns=conns + 1)
        for ws in floods:
            ws.close()
        by.close()


async def parked_partial(ctx, res, conns=150):
    interval, timeout = 2.0, 2.0
    flags = ["--ping-interval", "2s", "--ping-timeout", "2s", "--close-timeout", "1s"]
    async with Session(ctx, res, "echo", flags) as s:
        size = s.cfg["max-frame-size"]
        head = frame(OP_BIN, b"", length=size)  # header and mask key only
        key = head[-4:]
        body = xor_mask(bytes(size - 1), key)
        wss = list(await gather_limited(50, [WS.connect(s.port) for _ in range(conns)]))
        bad = [w for w in wss if not isinstance(w, WS)]
        wss = [w for w in wss if isinstance(w, WS)]
        res.check(not bad, f"{len(bad)} handshakes failed: {bad[:1]!r}")

        async def park(ws):
            await ws.send(head + body, 30)
            return now()

        parked_at = await gather_limited(50, [park(ws) for ws in wss])
        t_parked = max((t for t in parked_at if isinstance(t, float)), default=now())
        res.fig("parked", sum(isinstance(t, float) for t in parked_at))
        deadline = t_parked + interval + timeout + 3

        async def closed_at(ws):
            r = await ws.wait_close(left(deadline))
            return r, now()

        outcomes = await asyncio.gather(*(closed_at(ws) for ws in wss))
        n_closed = sum(1 for r, _ in outcomes if r != "timeout")
        last = max((t for r, t in outcomes if r != "timeout"), default=None)
        res.fig("closed", f"{n_closed}/{len(wss)}")
        if last:
            res.fig("last_close_s", f"{last - t_parked:.1f}")
        res.check(n_closed == len(wss),
                  f"{len(wss) - n_closed} parked connections still open {interval + timeout + 3:.0f} s after parking")
        open_now = None
        while True:
            open_now = await metric(s.port, "wharf_connections_open", 1.0)
            if open_now == 0 or now() >= deadline:
                break
            await asyncio.sleep(0.2)
        res.fig("connections_open", int(open_now) if open_now is not None else "?")
        res.check(open_now == 0, f"wharf_connections_open is {open_now}, want 0")
        await s.finish(conns=conns)
        for ws in wss:
            ws.close()


async def fragment_flood(ctx, res, conns=8, cap=20000):
    """Endless tiny continuation fragments (1 byte, or empty for half the
    connections): the max-fragments limit must close them."""
    async with Session(ctx, res, "echo", []) as s:
        wss = [await WS.connect(s.port) for _ in range(conns)]
        loop = asyncio.get_running_loop()

        async def attack(i, ws):
            body = b"x" if i % 2 == 0 else b""
            first = frame(OP_BIN, body, fin=False)
            cont = b"".join(frame(OP_CONT, body, fin=False) for _ in range(256))
            closer = asyncio.create_task(ws.wait_close(10))
            sent = 1
            t0 = now()
            try:
                await asyncio.wait_for(loop.sock_sendall(ws.sock, first), 5)
                while sent < cap and not closer.done() and now() - t0 < 10:
                    await asyncio.wait_for(loop.sock_sendall(ws.sock, cont), left(t0 + 10))
                    sent += 256
                    await asyncio.sleep(0)
            except (OSError, TimeoutError):
                pass
            code = await closer
            return code, sent, now() - t0

        out = await asyncio.gather(*(attack(i, ws) for i, ws in enumerate(wss)))
        codes = sorted({str(c) for c, _, _ in out})
        res.fig("close_codes", ",".join(codes))
        res.fig("max_fragments_sent", max(n for _, n, _ in out))
        res.fig("max_close_s", f"{max(t for _, _, t in out):.1f}")
        bad = [c for c, _, _ in out if c not in (1008, 1009)]
        res.check(not bad, f"{len(bad)} connections not closed 1008/1009: {bad[:3]}")
        await s.finish(conns=conns)
        for ws in wss:
            ws.close()


async def zero_window_room(ctx, res, members=10, duration=10.0, write_timeout=3.0, flag=True):
    # The kernel takes up to ~4 MiB (tcp_wmem) into the server's send buffer
    # before its writes stall; a queue limit above what is said keeps the
    # slow-client close out of the way, so only the write timeout can act.
    flags = ["--max-backpressure", "16MiB"]
    flags += ["--write-timeout", f"{write_timeout:g}s"] if flag else []
    # The members say ~8 MiB in a burst on purpose: no rate limit here.
    flags += ["--rate-limit-messages", "off", "--rate-limit-bytes", "off"]
    async with Session(ctx, res, "chat", flags) as s:
        room = "harbour"
        readers = []
        for i in range(members - 1):
            ws = await WS.connect(s.port, protocol="wharf.chat.v1")
            me = await chat_welcome(ws, 5)
            await ws.send(frame(OP_TEXT, chat_join(room, f"m{i}")))
            readers.append((ws, me))
        stalled = await WS.connect(s.port, protocol="wharf.chat.v1", rcvbuf=4096)
        await stalled.send(frame(OP_TEXT, chat_join(room, "stalled")))
        open0 = await metric(s.port, "wharf_connections_open")
        loop = asyncio.get_running_loop()
        received = [0] * len(readers)
        said = [0]
        stop_reading = now() + duration + 60

        async def reader(i, ws):
            while now() < stop_reading:
                try:
                    m = await ws.recv_message(left(stop_reading))
                except (TimeoutError, Closed):
                    return
                if isinstance(m, Frame):
                    return
                ev = json.loads(m)
                if ev.get("type") == "message" and ev.get("room") == room:
                    received[i] += 1

        tasks = [asyncio.create_task(reader(i, ws)) for i, (ws, _) in enumerate(readers)]
        await asyncio.sleep(0.3)  # the joins settle
        # A burst of ~8 MiB fills the stalled member's window and the kernel
        # buffers behind it; then a steady chat.
        burst = frame(OP_TEXT, chat_say("b" * 2000))
        for _ in range(45):
            for _ in range(10):
                for ws, _ in readers:
                    await ws.send(burst)
                    said[0] += 1
            await asyncio.sleep(0.01)
        t_burst = now()
        ping = frame(OP_PING, b"hi")
        trickled = 0
        dropped_at = None
        t_end = t_burst + duration
        next_trickle = t_burst
        while now() < t_end:
            for ws, _ in readers:
                await ws.send(frame(OP_TEXT, chat_say(f"steady {said[0]}")))
                said[0] += 1
            if now() >= next_trickle and trickled < len(ping):
                try:
                    await loop.sock_sendall(stalled.sock, ping[trickled : trickled + 1])
                    trickled += 1
                except OSError:
                    trickled = len(ping)
                next_trickle += 2.0
            if dropped_at is None:
                n = await metric(s.port, "wharf_connections_open", 1.0)
                if n is not None and open0 is not None and n <= open0 - 1:
                    dropped_at = now() - t_burst
            await asyncio.sleep(0.2)
        # Everyone else must get every message said.
        drain_end = now() + 10
        while now() < drain_end and min(received) < said[0]:
            await asyncio.sleep(0.1)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        res.fig("said", said[0])
        res.fig("min_received", min(received))
        res.fig("stalled_dropped_s", f"{dropped_at:.1f}" if dropped_at is not None else "never")
        res.check(min(received) == said[0], f"a member missed messages: {min(received)}/{said[0]}")
        res.check(dropped_at is not None and dropped_at <= write_timeout + 2,
                  f"stalled member not dropped within write-timeout + 2 s ({dropped_at})")
        await s.finish(conns=members)
        for ws, _ in readers:
            ws.close()
        stalled.close()


async def chat_say_flood(ctx, res, readers=10, flood=4000, read_rate=256_000):
    """Issue 12's attack with the default settings: one member sends
    `flood` says of 2,000 characters as fast as it can; `readers` members
    read at `read_rate` bytes a second (16 KiB receive buffers). No reader
    may be closed, each must receive every message the server accepted, and
    the sender gets `rate_limited` for the rest."""
    async with Session(ctx, res, "chat", []) as s:
        room = "harbour"
        members = []
        for i in range(readers):
            ws = await WS.connect(s.port, protocol="wharf.chat.v1", rcvbuf=16 * KiB)
            await chat_welcome(ws, 5)
            await ws.send(frame(OP_TEXT, chat_join(room, f"reader{i}")))
            members.append(ws)
        sender = await WS.connect(s.port, protocol="wharf.chat.v1")
        me = await chat_welcome(sender, 5)
        await sender.send(frame(OP_TEXT, chat_join(room, "flood")))
        await asyncio.sleep(0.3)  # the joins settle
        got = [0] * readers
        closed = [None] * readers
        done_at = [None] * readers
        counts = {"accepted": 0, "limited": 0}
        stop_by = now() + 60

        async def reader(i, ws):
            t0, taken = now(), 0
            while now() < stop_by:
                try:
                    m = await ws.recv_message(left(stop_by))
                except (TimeoutError, Closed) as e:
                    closed[i] = repr(e)
                    return
                if isinstance(m, Frame):
                    closed[i] = f"close {m.close_code()}"
                    return
                taken += len(m)
                ev = json.loads(m)
                if ev.get("type") == "message" and ev.get("id") == me:
                    if ev.get("text") == "done":
                        done_at[i] = now()
                        return
                    got[i] += 1
                # Read at `read_rate`: the kernel's small buffer passes the
                # pace back to the server.
                await asyncio.sleep(max(0.0, t0 + taken / read_rate - now()))

        async def sender_reads():
            while now() < stop_by:
                m = await sender.recv_message(left(stop_by))
                if isinstance(m, Frame):
                    raise Closed(f"sender closed {m.close_code()}")
                ev = json.loads(m)
                if ev.get("type") == "message" and ev.get("id") == me:
                    if ev.get("text") == "done":
                        return
                    counts["accepted"] += 1
                elif ev.get("type") == "error" and ev.get("code") == "rate_limited":
                    counts["limited"] += 1

        tasks = [asyncio.create_task(reader(i, ws)) for i, ws in enumerate(members)]
        own = asyncio.create_task(sender_reads())
        say = frame(OP_TEXT, chat_say("f" * 2000))
        t0 = now()
        for _ in range(flood // 100):
            await sender.send(say * 100, 10)
        flood_s = now() - t0
        slow_closes_early = await metric(s.port, "wharf_slow_client_closes_total")
        await asyncio.sleep(1.1)  # the bucket refills: the marker gets through
        await sender.send(frame(OP_TEXT, chat_say("done")))
        try:
            await asyncio.wait_for(own, 30)
        except (Exception, TimeoutError) as e:
            res.check(False, f"sender: {e!r}")
        await asyncio.gather(*tasks, return_exceptions=True)
        accepted, limited = counts["accepted"], counts["limited"]
        res.fig("flood_s", f"{flood_s:.2f}")
        res.fig("accepted", accepted)
        res.fig("rate_limited", limited)
        res.fig("readers_got_min/max", f"{min(got)}/{max(got)}")
        drained = [d - t0 for d in done_at if d is not None]
        res.fig("readers_done_s", f"{max(drained):.1f}" if drained else "never")
        slow_closes = await metric(s.port, "wharf_slow_client_closes_total")
        res.fig("slow_closes", slow_closes)
        res.check(all(c is None for c in closed), f"readers closed: {[c for c in closed if c]}")
        res.check(slow_closes == 0 and slow_closes_early == 0, f"{slow_closes} slow-consumer closes")
        res.check(min(got) == max(got) == accepted,
                  f"readers got {min(got)}..{max(got)} of the {accepted} messages accepted")
        res.check(accepted + limited == flood, f"accepted {accepted} + rate_limited {limited} != {flood}")
        res.check(limited > 0, "the sender got no rate_limited error")
        # Default limits: a burst of 20, then 5 a second.
        most = 20 + int(5 * (flood_s + 0.5)) + 1
        res.check(accepted <= most, f"accepted {accepted} > {most}, beyond the default rate limit")
        await s.finish(conns=readers + 1)
        for ws in members:
            ws.close()
        sender.close()


async def half_open(ctx, res, count=1000, hs_timeout=3.0):
    flags = ["--handshake-timeout", f"{hs_timeout:g}s"]
    async with Session(ctx, res, "echo", flags) as s:
        loop = asyncio.get_running_loop()
        half = f"GET / HTTP/1.1\r\nHost: {HOST}:{s.port}\r\nUpgrade: websocket\r\nConn".encode()
        prober = Prober(s.port, every=0.2)

        async def one():
            sock = await raw_connect(s.port)
            await loop.sock_sendall(sock, half)
            return sock, now()

        out = await gather_limited(100, [one() for _ in range(count)])
        socks = [o for o in out if isinstance(o, tuple)]
        res.fig("half_open", len(socks))
        res.check(len(socks) == count, f"only {len(socks)}/{count} sockets connected")

        async def closed_in(sock, t_sent):
            ok = await wait_eof(sock, left(t_sent + hs_timeout + 2))
            return now() - t_sent if ok else None

        waits = await asyncio.gather(*(closed_in(sk, t) for sk, t in socks))
        healthz_max = await prober.stop()
        n_closed = sum(w is not None for w in waits)
        res.fig("closed_by_server", f"{n_closed}/{len(socks)}")
        res.fig("max_close_s", f"{max((w for w in waits if w is not None), default=0):.1f}")
        res.fig("healthz_max_ms", f"{healthz_max * 1000:.0f}")
        res.check(n_closed == len(socks), f"{len(socks) - n_closed} not closed within handshake-timeout + 2 s")
        res.check(healthz_max < 1.0 and prober.failures == 0,
                  f"/healthz max {healthz_max * 1000:.0f} ms, {prober.failures} failed")
        for sk, _ in socks:
            sk.close()
        await s.finish(conns=count, per_conn=HEAD_BUDGET)


async def half_open_nofile(ctx, res, nofile=256, count=250):
    async with Session(ctx, res, "echo", [], nofile=nofile) as s:
        socks = []
        try:
            for _ in range(count):
                socks.append(await raw_connect(s.port))
        except (OSError, TimeoutError) as e:
            res.fig("connect_error", type(e).__name__)
        await asyncio.sleep(0.5)
        res.fig("nofile", nofile)
        res.fig("idle_sockets", len(socks))
        status, _, dt = await http_get(s.port, "/healthz", 3.0)
        res.fig("healthz_ms", f"{dt * 1000:.0f}" if status == 200 else f"failed({status})")
        res.check(status == 200 and dt < 1.0, "/healthz not answered within 1 s at the fd limit")
        for sk in socks:
            sk.close()
        await asyncio.sleep(0.5)
        await s.finish(conns=count, per_conn=HEAD_BUDGET)


async def idle_then_sigterm(ctx, res, count=10000, close_timeout=3.0):
    # Every client is 127.0.0.1: the per-address cap (half the server by
    # default) is lifted; the global cap derived from nofile stays on.
    flags = ["--ping-interval", "off", "--close-timeout", f"{close_timeout:g}s",
             "--max-connections-per-ip", "off"]
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < count + 500:
        res.check(False, f"the hard `ulimit -n` is {hard}; this scenario needs {count + 500}")
        return
    async with Session(ctx, res, "echo", flags, nofile=count + 500) as s:
        t0 = now()
        out = await gather_limited(200, [WS.connect(s.port, timeout=20) for _ in range(count)])
        wss = [w for w in out if isinstance(w, WS)]
        res.fig("connected", len(wss))
        res.fig("connect_s", f"{now() - t0:.1f}")
        res.check(len(wss) == count, f"only {len(wss)}/{count} connected: {[o for o in out if not isinstance(o, WS)][:1]!r}")
        await asyncio.sleep(1.0)
        rss = proc_status(s.server.proc.pid).get("VmRSS", 0)
        res.fig("B_per_conn", int((rss - s.mon.baseline) / max(1, len(wss))))
        await s.finish(conns=count)
        if not s.server.alive():
            return
        closers = [asyncio.create_task(ws.wait_close(close_timeout + 5, reply=True)) for ws in wss]
        t_term = now()
        s.server.proc.send_signal(signal.SIGTERM)
        try:
            status = await asyncio.wait_for(asyncio.to_thread(s.server.proc.wait), close_timeout + 5)
        except TimeoutError:
            status = None
        exit_s = now() - t_term
        codes = await asyncio.gather(*closers)
        n1001 = sum(c == 1001 for c in codes)
        res.fig("got_1001", f"{n1001}/{len(wss)}")
        res.fig("exit_s", f"{exit_s:.1f}")
        res.fig("exit_status", status)
        res.check(n1001 == len(wss), f"{len(wss) - n1001} clients got no close 1001")
        res.check(status == 0 and exit_s <= close_timeout + 2,
                  f"server exit status {status} after {exit_s:.1f} s (want 0 within {close_timeout + 2:g} s)")
        for ws in wss:
            ws.close()


async def slow_reader_backlog(ctx, res, slow=20, duration=10.0):
    async with Session(ctx, res, "broadcast", []) as s:
        slows = [await WS.connect(s.port) for _ in range(slow)]
        pub = await WS.connect(s.port)
        loop = asyncio.get_running_loop()
        pub_closed = []

        async def pub_reader():
            while True:
                try:
                    m = await pub.recv_message(60)
                except (TimeoutError, Closed) as e:
                    pub_closed.append(repr(e))
                    return
                if isinstance(m, Frame):
                    pub_closed.append(m.close_code())
                    return

        rd = asyncio.create_task(pub_reader())
        batch = b"".join(frame(OP_BIN, os.urandom(100)) for _ in range(100))
        sent = 0
        t_end = now() + duration
        while now() < t_end and not pub_closed:
            try:
                await asyncio.wait_for(loop.sock_sendall(pub.sock, batch), left(t_end))
                sent += 100
            except (OSError, TimeoutError):
                break
            await asyncio.sleep(0.01)
        res.fig("published", sent)
        open_now = await metric(s.port, "wharf_connections_open")
        res.fig("open_after", int(open_now) if open_now is not None else "?")
        codes = await asyncio.gather(*(ws.wait_close(5) for ws in slows))
        res.fig("slow_closes", ",".join(sorted({str(c) for c in codes})))
        bad = [c for c in codes if c not in (1008, "eof", "reset")]
        res.check(not bad, f"{len(bad)} slow readers not closed (1008 or write timeout): {bad[:3]}")
        rd.cancel()
        await asyncio.gather(rd, return_exceptions=True)
        ok = False
        if not pub_closed:
            token = b"still here"
            try:
                await pub.send(frame(OP_BIN, token))
                deadline = now() + 5
                while not ok:
                    m = await pub.recv_message(left(deadline))
                    if isinstance(m, Frame):
                        pub_closed.append(m.close_code())
                        break
                    ok = m == token
            except (OSError, TimeoutError, Closed) as e:
                pub_closed.append(repr(e))
        res.check(ok, f"publisher not served after the flood: {pub_closed[:1]}")
        await s.finish(conns=slow + 1)
        for ws in slows:
            ws.close()
        pub.close()


SCENARIOS = [
    ("ping-flood-noread", lambda c, r: control_flood(c, r, OP_PING, read=False)),
    ("ping-flood-read", lambda c, r: control_flood(c, r, OP_PING, read=True)),
    ("pong-flood-noread", lambda c, r: control_flood(c, r, OP_PONG, read=False)),
    ("pong-flood-read", lambda c, r: control_flood(c, r, OP_PONG, read=True)),
    ("compressed-flood-echo", lambda c, r: compressed_flood(c, r, "echo")),
    ("compressed-flood-chat", lambda c, r: compressed_flood(c, r, "chat")),
    ("parked-partial", parked_partial),
    ("fragment-flood", fragment_flood),
    ("zero-window-room", zero_window_room),
    ("chat-say-flood", chat_say_flood),
    ("half-open-handshakes", half_open),
    ("half-open-nofile", half_open_nofile),
    ("idle-then-sigterm", idle_then_sigterm),
    ("slow-reader-backlog", slow_reader_backlog),
]

# Scenarios that guard work still open: skipped unless named with --only or
# run with --all, with the reason printed.
PENDING = {}


async def run_one(ctx, name, fn):
    res = Result(name)
    try:
        await asyncio.wait_for(fn(ctx, res), ctx.scenario_timeout)
    except StartError as e:
        res.check(False, str(e))
    except TimeoutError:
        res.check(False, f"scenario did not finish within {ctx.scenario_timeout:.0f} s")
    except Exception as e:  # a broken scenario is a failure, not a crash of the suite
        res.check(False, f"error: {e!r}")
    return res


def selected(only, name):
    return not only or any(name == o or name.startswith(o + "-") for o in only)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", metavar="NAME",
                    help="run this scenario (or every NAME-*); repeatable")
    ap.add_argument("--report", action="store_true", help="run and print figures; never fail")
    ap.add_argument("--list", action="store_true", help="list the scenarios")
    ap.add_argument("--all", action="store_true", help="also run the pending scenarios")
    ap.add_argument("--binary", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "wharf"))
    ap.add_argument("--rss-cap-mib", type=int, default=2048,
                    help="kill a server whose RSS grows past this (protects the machine)")
    ap.add_argument("--scenario-timeout", type=float, default=120.0)
    ap.add_argument("--flood-cap", type=float, default=30.0,
                    help="longest a compressed flood may take to be processed (s)")
    ctx = ap.parse_args()
    if ctx.list:
        print("\n".join(n for n, _ in SCENARIOS))
        return 0
    ctx.binary = os.path.abspath(ctx.binary)
    ctx.rss_cap = ctx.rss_cap_mib * MiB
    names = [n for n, _ in SCENARIOS]
    for o in ctx.only or []:
        if not any(selected([o], n) for n in names):
            ap.error(f"no scenario named {o}; --list shows them")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    async def run_all():
        results = []
        for name, fn in SCENARIOS:
            if name in PENDING and not ctx.all and not ctx.only:
                print(f"{name:<23} SKIP  pending: {PENDING[name]}", flush=True)
                continue
            if selected(ctx.only, name):
                t0 = now()
                res = await run_one(ctx, name, fn)
                res.fig("took_s", f"{now() - t0:.0f}")
                print(res.line(), flush=True)
                results.append(res)
        return results

    t0 = now()
    try:
        results = asyncio.run(run_all())
    finally:
        for p in list(STARTED):
            if p.poll() is None:
                p.kill()
    failed = [r.name for r in results if r.failures]
    print(f"\n{len(results) - len(failed)}/{len(results)} passed in {now() - t0:.0f} s"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 0 if ctx.report or not failed else 1


if __name__ == "__main__":
    sys.exit(main())
