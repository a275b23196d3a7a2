"""The relay's frame rules, seen by bare-socket peers and Python `websockets`:
a gateway message never lands between the fragments of an upstream message
(`websockets` fails the connection with 1002 if it does), and a malformed
close frame fails its sender's connection with 1002 instead of being
passed on."""

import base64
import hashlib
import os
import socket
import struct
import threading

import pytest
from websockets.sync.server import serve as ws_serve

import harness
from harness import HS_SECRET, claims, mint

ISS = "https://boundaries.test"


class FragmentingUpstream:
    """On `frag`, sends `started`, then the first fragment of a message, and
    holds the rest back until the client sends `finish`."""

    def __init__(self):
        self.received = []
        self.server = ws_serve(self._handler, "127.0.0.1", 0)
        self.port = self.server.socket.getsockname()[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self):
        return f"ws://127.0.0.1:{self.port}"

    def _handler(self, connection):
        release = threading.Event()

        def fragments():
            yield "first half, "
            release.wait(20)
            yield "second half"

        sender = None
        for message in connection:
            self.received.append(message)
            if message == "frag":
                connection.send("started")
                sender = threading.Thread(target=connection.send, args=(fragments(),), daemon=True)
                sender.start()
            elif message == "finish":
                release.set()
            else:
                connection.send(message)
        release.set()
        if sender:
            sender.join(5)

    def stop(self):
        self.server.shutdown()
        self._thread.join(5)


@pytest.fixture
def upstream():
    server = FragmentingUpstream()
    yield server
    server.stop()


class RawClient:
    """A WebSocket client on a bare socket, so the test sees each frame as the
    gateway wrote it (a library would hide a message's first fragment)."""

    def __init__(self, port, path, token):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
            ).encode()
        )
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self._recv()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        assert head.split(b" ")[1] == b"101", head

    def _recv(self):
        data = self.sock.recv(65536)
        assert data, "connection closed"
        return data

    def send_text(self, text):
        self.send_frame(0x81, text.encode())

    def send_frame(self, b0, payload):
        """One masked frame whose first header byte is `b0`."""
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        n = len(payload)
        length = bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n)
        self.sock.sendall(bytes([b0]) + length + mask + masked)

    def frame(self):
        """(fin, opcode, payload) of the next frame (unmasked, as a server sends)."""
        while True:
            if len(self.buf) >= 2:
                b0, b1 = self.buf[0], self.buf[1]
                n, off = b1 & 0x7F, 2
                if n == 126 and len(self.buf) >= 4:
                    n, off = struct.unpack(">H", self.buf[2:4])[0], 4
                if n < 127 and len(self.buf) >= off + n and (b1 & 0x7F) in (n, 126):
                    payload, self.buf = self.buf[off : off + n], self.buf[off + n :]
                    return bool(b0 & 0x80), b0 & 0x0F, payload
            self.buf += self._recv()

    def close(self):
        self.sock.close()


def test_refresh_answer_waits_for_the_end_of_a_fragmented_message(start_gateway, upstream):
    routes = [{"id": "r", "path": "/r", "upstream": upstream.url, "session": {"refresh": True}}]
    issuers = [{"id": "main", "issuer": ISS, "audiences": ["relay"], "algorithms": ["HS256"], "keys": {"secret": HS_SECRET}}]
    gw = start_gateway(harness.base_config(routes, issuers, token_sources=["header"]))
    ws = RawClient(gw.port, "/r", mint(claims(iss=ISS, aud="relay"), HS_SECRET, "HS256"))
    try:
        ws.send_text("frag")
        assert ws.frame() == (True, 0x1, b"started")
        # The gateway has passed on the first fragment: the message is open.
        assert ws.frame() == (False, 0x1, b"first half, ")
        fresh = mint(claims(iss=ISS, aud="relay", ttl=900), HS_SECRET, "HS256")
        ws.send_text('{"type":"wsgate.refresh","token":"%s"}' % fresh)
        ws.send_text("finish")
        # The answer waits for the message to end (the rest may come in
        # several continuation frames).
        rest, fin = b"", False
        while not fin:
            fin, opcode, payload = ws.frame()
            assert opcode == 0x0, (opcode, payload)
            rest += payload
        assert rest == b"second half"
        fin, opcode, answer = ws.frame()
        assert (fin, opcode) == (True, 0x1) and b'"wsgate.refreshed"' in answer, answer
        ws.send_text("still open")
        assert ws.frame() == (True, 0x1, b"still open")
    finally:
        ws.close()
    assert not any("wsgate.refresh" in m for m in upstream.received if isinstance(m, str))


# ---------------------------------------------------------------------------
# Close frames are checked

# Close payloads RFC 6455 forbids (Autobahn 7.3.1, 7.9.x, 7.5.1).
MALFORMED_CLOSES = [
    ("a 1-byte payload", b"\x03"),
    ("code 999", struct.pack(">H", 999)),
    ("code 1005 on the wire", struct.pack(">H", 1005)),
    ("a reason that is not UTF-8", struct.pack(">H", 1000) + b"\xff\xfe"),
]


def relay_token():
    return mint(claims(iss=ISS, aud="relay"), HS_SECRET, "HS256")


def relay_config(routes):
    issuers = [{"id": "main", "issuer": ISS, "audiences": ["relay"], "algorithms": ["HS256"], "keys": {"secret": HS_SECRET}}]
    return harness.base_config(routes, issuers, token_sources=["header"])


def masked_frames(data):
    """(opcode, payload) of each whole masked frame (as a client sends) in `data`."""
    out = []
    while len(data) >= 2:
        n, off = data[1] & 0x7F, 2
        if n == 126:
            if len(data) < 4:
                break
            n, off = struct.unpack(">H", data[2:4])[0], 4
        assert n < 127, "no test frame is that long"
        if len(data) < off + 4 + n:
            break
        mask, payload = data[off : off + 4], data[off + 4 : off + 4 + n]
        out.append((data[0] & 0x0F, bytes(b ^ mask[i % 4] for i, b in enumerate(payload))))
        data = data[off + 4 + n :]
    return out


class ScriptedUpstream:
    """A WebSocket server on a bare socket: it answers the upgrade, writes
    `script` (raw bytes) once the gateway's first frame arrives, then records
    every byte the gateway sends until it hangs up (`ended`)."""

    GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    def __init__(self, script):
        self.script = script
        self.ended = threading.Event()
        self._received = b""
        self._lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self):
        return f"ws://127.0.0.1:{self.port}"

    def _serve(self):
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                head += chunk
            key = next(
                line.split(b":", 1)[1].strip()
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"sec-websocket-key:")
            )
            accept = base64.b64encode(hashlib.sha1(key + self.GUID).digest())
            conn.sendall(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
            )
            first = True
            while True:
                try:
                    chunk = conn.recv(4096)
                except OSError:
                    break
                if not chunk:
                    break
                with self._lock:
                    self._received += chunk
                if first:
                    first = False
                    conn.sendall(self.script)
        self.ended.set()

    def closes(self):
        """The close codes the gateway sent this upstream."""
        with self._lock:
            data = self._received
        return [struct.unpack(">H", p[:2])[0] for op, p in masked_frames(data) if op == 0x8]

    def stop(self):
        self.listener.close()
        self._thread.join(5)


def test_a_malformed_close_from_the_client_fails_it_with_1002(start_gateway, echo):
    gw = start_gateway(relay_config([{"id": "echo", "path": "/echo", "upstream": echo.url}]))
    for i, (case, payload) in enumerate(MALFORMED_CLOSES):
        ws = RawClient(gw.port, "/echo", relay_token())
        try:
            ws.send_text("hi")
            assert ws.frame() == (True, 0x1, b"hi")
            ws.send_frame(0x88, payload)
            fin, opcode, body = ws.frame()
            assert (fin, opcode) == (True, 0x8), case
            assert struct.unpack(">H", body[:2])[0] == 1002, (case, body)
        finally:
            ws.close()
        # The upstream (Python `websockets`) never sees the malformed close:
        # it gets the gateway's own.
        harness.wait_for(lambda: len(echo.closes) > i, what=f"the upstream's close after {case}")
        assert echo.closes[i][0] == 1001, (case, echo.closes[i])
    assert harness.roundtrip(gw.ws_url("/echo"), relay_token()) == "hello"


def test_a_malformed_close_from_the_upstream_fails_it_with_1002(start_gateway, echo):
    upstreams = [ScriptedUpstream(bytes([0x88, len(p)]) + p) for _, p in MALFORMED_CLOSES]
    try:
        routes = [{"id": f"bad{i}", "path": f"/bad{i}", "upstream": up.url} for i, up in enumerate(upstreams)]
        routes.append({"id": "echo", "path": "/echo", "upstream": echo.url})
        gw = start_gateway(relay_config(routes))
        for i, (case, _) in enumerate(MALFORMED_CLOSES):
            up = upstreams[i]
            with harness.open_ws(gw.ws_url(f"/bad{i}"), relay_token()) as ws:
                ws.send("go")
                code, _ = harness.closed_with(ws)
            assert code == 1014, case
            harness.wait_for(lambda: up.closes(), what=f"the gateway's close after {case}")
            assert up.closes() == [1002], case
            assert up.ended.wait(10), f"the gateway kept the upstream connection after {case}"
        assert harness.roundtrip(gw.ws_url("/echo"), relay_token()) == "hello"
    finally:
        for up in upstreams:
            up.stop()
