"""Socket.IO through `http: proxy`: python-socketio's own client and server
(aiohttp), default transports (long-polling first, then the WebSocket
upgrade), authenticated by the gateway, with one and with two upstreams."""

import asyncio
import threading

import pytest
import socketio
from aiohttp import web

import harness
from harness import HS_SECRET, claims, mint

ISS = "https://socketio.test"


def token(sub="alice"):
    return mint(claims(iss=ISS, sub=sub), HS_SECRET, "HS256")


class SocketIOUpstream:
    """A python-socketio AsyncServer on aiohttp, in its own thread and loop.
    `whoami` answers which server it is, the transport the session is on now
    and the identity header the gateway set on the session's first request."""

    def __init__(self, name):
        self.name = name
        self.connects = []  # the environ of each connect
        ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        assert ready.wait(15), "socket.io upstream did not start"

    def _run(self, ready):
        asyncio.set_event_loop(self.loop)
        sio = self.sio = socketio.AsyncServer(async_mode="aiohttp", cors_allowed_origins="*")
        users = {}

        @sio.event
        async def connect(sid, environ, auth=None):
            self.connects.append(environ)
            users[sid] = environ.get("HTTP_X_USER_ID")

        @sio.event
        async def whoami(sid, data=None):
            return {"server": self.name, "user": users.get(sid), "transport": sio.transport(sid)}

        app = web.Application()
        sio.attach(app)
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = self.runner.addresses[0][1]
        ready.set()
        self.loop.run_forever()

    @property
    def url(self):
        return f"ws://127.0.0.1:{self.port}"

    def stop(self):
        async def shutdown():
            await self.sio.shutdown()
            await self.runner.cleanup()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def upstreams():
    started = []

    def start(name):
        u = SocketIOUpstream(name)
        started.append(u)
        return u

    yield start
    for u in started:
        u.stop()


def config(upstream):
    route = {
        "id": "socketio",
        "path": "/socket.io/*",
        "upstream": upstream,
        "http": "proxy",
        "token_sources": ["header", {"query": "access_token"}],
        "forward": {"headers": {"X-User-Id": "{claims.sub}"}},
    }
    issuers = [{"id": "t", "issuer": ISS, "audiences": [harness.AUD], "algorithms": ["HS256"],
                "keys": {"secret": HS_SECRET}}]
    return harness.base_config([route], issuers)


def base(gw):
    host, port, _ = gw.listeners[0]
    return f"http://{host}:{port}"


def connect(gw, headers=None):
    """A python-socketio client with its default transports, connected and
    upgraded to WebSocket. Returns the client."""
    client = socketio.Client(reconnection=False)
    client.connect(f"{base(gw)}", headers=headers or {}, wait_timeout=10)
    harness.wait_for(lambda: client.transport() == "websocket", what="the upgrade to websocket")
    return client


def test_polling_then_upgrade_with_a_token_and_401_without(start_gateway, upstreams):
    up = upstreams("a")
    gw = start_gateway(config(up.url))
    t = token("alice")
    client = connect(gw, headers={"Authorization": f"Bearer {t}", "X_User_Id": "admin"})
    try:
        answer = client.call("whoami", timeout=10)
        assert answer == {"server": "a", "user": "alice", "transport": "websocket"}
        # The session began on long-polling through the gateway.
        environ = up.connects[-1]
        assert "transport=polling" in environ.get("QUERY_STRING", "")
        assert "HTTP_AUTHORIZATION" not in environ
    finally:
        client.disconnect()

    refused = socketio.Client(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        refused.connect(f"{base(gw)}", wait_timeout=5)
    status, headers, _ = harness.http_get(
        f"{base(gw)}/socket.io/?EIO=4&transport=polling")
    assert status == 401
    assert headers["WWW-Authenticate"] == 'Bearer realm="wsgate"'


def test_two_upstreams_keep_each_session_on_one_with_balance_hash(start_gateway, upstreams):
    a, b = upstreams("a"), upstreams("b")
    # The Engine.IO `sid` is made by the server that answers the first
    # polling request, so it cannot choose that server; the token's subject
    # can, and reaches the same upstream on every request of the session.
    upstream = {"urls": [a.url, b.url], "balance": "hash", "hash_key": {"claim": "sub"}}
    gw = start_gateway(config(upstream))
    seen = {}
    for i in range(8):
        sub = f"user-{i}"
        client = connect(gw, headers={"Authorization": f"Bearer {token(sub)}"})
        try:
            answers = [client.call("whoami", timeout=10) for _ in range(3)]
        finally:
            client.disconnect()
        assert all(x == answers[0] for x in answers), answers
        assert answers[0]["user"] == sub and answers[0]["transport"] == "websocket"
        seen[sub] = answers[0]["server"]
    assert set(seen.values()) == {"a", "b"}, seen
