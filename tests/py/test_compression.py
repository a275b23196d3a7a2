"""permessage-deflate end to end, negotiated by Python `websockets` on both
sides: the gateway passes the offer and the answer, and compressed frames
cross it unchanged (it never inflates them), so what it counts is the
compressed size. Where it reads messages (refresh, first_message) it
declines."""

import re
import urllib.request

import pytest

import harness
from harness import HS_SECRET, claims, mint

ISS = "https://compression.test"
MESSAGE = "wsgate passes compressed frames unchanged. " * 2500  # ~105 KB


@pytest.fixture
def gateway(start_gateway, echo):
    def route(id_, **extra):
        r = {"id": id_, "path": f"/{id_}", "upstream": echo.url}
        r.update(extra)
        return r

    routes = [
        route("plain"),
        route("refresh", session={"refresh": True}),
        route("first", token_sources=["first_message"]),
    ]
    issuers = [{"id": "main", "issuer": ISS, "audiences": [harness.AUD], "algorithms": ["HS256"],
                "keys": {"secret": HS_SECRET}}]
    return start_gateway(harness.base_config(routes, issuers, token_sources=["header"], admin=True))


def token():
    return mint(claims(iss=ISS, aud=harness.AUD), HS_SECRET, "HS256")


def bytes_to_upstream(gw, route):
    with urllib.request.urlopen(gw.admin_url("/metrics"), timeout=10) as r:
        text = r.read().decode()
    m = re.search(
        r'^wsgate_bytes_total\{[^}]*route="%s"[^}]*direction="to_upstream"[^}]*\} (\S+)' % route,
        text, re.M)
    if m is None:
        m = re.search(
            r'^wsgate_bytes_total\{[^}]*direction="to_upstream"[^}]*route="%s"[^}]*\} (\S+)' % route,
            text, re.M)
    return float(m.group(1)) if m else 0.0


def test_a_compressible_message_crosses_compressed(gateway, echo):
    with harness.open_ws(gateway.ws_url("/plain"), token()) as ws:
        agreed = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        assert agreed.startswith("permessage-deflate"), agreed
        ws.send(MESSAGE)
        assert ws.recv(timeout=10) == MESSAGE
    offered = [v for k, v in echo.last()["headers"] if k.lower() == "sec-websocket-extensions"]
    assert offered and offered[0].startswith("permessage-deflate")
    # What crossed the gateway is the compressed form: a small fraction.
    sent = harness.wait_for(lambda: bytes_to_upstream(gateway, "plain"), what="counted bytes")
    assert 0 < sent < len(MESSAGE) / 10, sent


@pytest.mark.parametrize("path", ["/refresh", "/first"])
def test_routes_that_read_messages_decline(gateway, echo, path):
    kw = {}
    first = None
    if path == "/first":
        first = '{"token": "%s"}' % token()
    with harness.open_ws(gateway.ws_url(path), None if first else token(), **kw) as ws:
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        if first:
            ws.send(first)
        ws.send(MESSAGE)
        assert ws.recv(timeout=10) == MESSAGE
    offered = [v for k, v in echo.last()["headers"] if k.lower() == "sec-websocket-extensions"]
    assert offered == []
