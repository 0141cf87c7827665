"""The wharf binary over TLS, with real peers (run by scripts/tls-test).

Arguments: the port, the server's PID, and the directory with the test CA
(ca.pem), the two certificates (a.pem/a.key, b.pem/b.key) and the files the
server was started with (cert.pem, key.pem).
"""

import asyncio
import os
import shutil
import signal
import socket
import ssl
import sys
import time
import urllib.request

import websockets

PORT, PID, DIR = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
STEP = 10  # seconds any one step may take


def context():
    ctx = ssl.create_default_context(cafile=os.path.join(DIR, "ca.pem"))
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def der(name):
    with open(os.path.join(DIR, name)) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def served_cert():
    with socket.create_connection(("127.0.0.1", PORT), timeout=STEP) as tcp:
        with context().wrap_socket(tcp, server_hostname="localhost") as tls:
            assert tls.selected_alpn_protocol() == "http/1.1", tls.selected_alpn_protocol()
            return tls.getpeercert(binary_form=True)


def ok(what):
    print(f"  ok  {what}", flush=True)


async def echo(ws, text):
    await ws.send(text)
    back = await asyncio.wait_for(ws.recv(), STEP)
    assert back == text, (back, text)


async def main():
    deadline = time.monotonic() + STEP
    while True:
        try:
            socket.create_connection(("127.0.0.1", PORT), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)

    url = f"wss://localhost:{PORT}/echo"
    old = await websockets.connect(url, ssl=context(), open_timeout=STEP)
    await echo(old, "hello over wss")
    ok("wss:// echo, verified against the test CA (Python websockets)")

    body = urllib.request.urlopen(f"https://localhost:{PORT}/healthz", context=context(), timeout=STEP).read()
    assert body == b"ok", body
    ok("https:// /healthz (urllib)")

    try:
        await websockets.connect(url, ssl=ssl.create_default_context(), open_timeout=STEP)
        raise AssertionError("a client without the test CA connected")
    except ssl.SSLCertVerificationError:
        ok("a client that does not trust the CA is refused by its own check")

    with socket.create_connection(("127.0.0.1", PORT), timeout=STEP) as plain:
        plain.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        reply = b""
        while chunk := plain.recv(4096):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 400 "), reply
    assert b"this port speaks TLS" in reply, reply
    await echo(old, "still here after plain HTTP")
    ok("plain HTTP on the TLS port: 400 and closed; the server serves on")

    assert served_cert() == der("a.pem")
    shutil.copy(os.path.join(DIR, "b.pem"), os.path.join(DIR, "cert.pem"))
    shutil.copy(os.path.join(DIR, "b.key"), os.path.join(DIR, "key.pem"))
    os.kill(PID, signal.SIGHUP)
    deadline = time.monotonic() + STEP
    while served_cert() != der("b.pem"):
        assert time.monotonic() < deadline, "SIGHUP did not swap the certificate"
        await asyncio.sleep(0.05)
    await echo(old, "the old connection stays open")
    new = await websockets.connect(url, ssl=context(), open_timeout=STEP)
    await echo(new, "the new connection")
    ok("SIGHUP: new connections get the new certificate; the open one keeps echoing")

    with open(os.path.join(DIR, "key.pem"), "w") as f:
        f.write("not a key\n")
    os.kill(PID, signal.SIGHUP)
    log = os.path.join(DIR, "server.log")
    deadline = time.monotonic() + STEP
    while "TLS reload failed" not in open(log).read():
        assert time.monotonic() < deadline, "no log line for a bad reload"
        await asyncio.sleep(0.05)
    assert served_cert() == der("b.pem")
    await echo(old, "after a bad reload")
    await echo(new, "after a bad reload")
    ok("SIGHUP with a bad key: logged, the certificate in use kept")

    await old.close()
    await new.close()


asyncio.run(main())
