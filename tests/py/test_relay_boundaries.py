"""A gateway message never lands between the fragments of an upstream
message: Python `websockets` fails the connection with 1002 if it does."""

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
        payload = text.encode()
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        n = len(payload)
        length = bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n)
        self.sock.sendall(bytes([0x81]) + length + mask + masked)

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
