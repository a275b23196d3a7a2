"""A gateway message never lands between the fragments of an upstream
message: Python `websockets` fails the connection with 1002 if it does."""

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


def test_refresh_answer_waits_for_the_end_of_a_fragmented_message(start_gateway, upstream):
    routes = [{"id": "r", "path": "/r", "upstream": upstream.url, "session": {"refresh": True}}]
    issuers = [{"id": "main", "issuer": ISS, "audiences": ["relay"], "algorithms": ["HS256"], "keys": {"secret": HS_SECRET}}]
    gw = start_gateway(harness.base_config(routes, issuers, token_sources=["header"]))
    with harness.open_ws(gw.ws_url("/r"), mint(claims(iss=ISS, aud="relay"), HS_SECRET, "HS256")) as ws:
        ws.send("frag")
        # `started` and the first fragment left the upstream in one write:
        # the gateway has the message open when the refresh arrives.
        assert ws.recv(timeout=10) == "started"
        fresh = mint(claims(iss=ISS, aud="relay", ttl=900), HS_SECRET, "HS256")
        ws.send('{"type":"wsgate.refresh","token":"%s"}' % fresh)
        ws.send("finish")
        assert ws.recv(timeout=10) == "first half, second half"
        answer = ws.recv(timeout=10)
        assert '"wsgate.refreshed"' in answer, answer
        ws.send("still open")
        assert ws.recv(timeout=10) == "still open"
    assert not any("wsgate.refresh" in m for m in upstream.received if isinstance(m, str))
