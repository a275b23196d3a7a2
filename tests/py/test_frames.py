"""Frames and closes pass through unchanged between a Python client and a
Python upstream."""

import os

import pytest

import harness
from harness import HS_SECRET, claims, mint

ISS = "https://frames.test"


@pytest.fixture
def gateway(start_gateway, echo):
    routes = [
        {"id": "open", "path": "/open", "upstream": echo.url, "auth": "none"},
        {"id": "small", "path": "/small", "upstream": echo.url, "auth": "none",
         "session": {"max_message_size": "1KiB"}},
        {"id": "auth", "path": "/auth", "upstream": echo.url},
    ]
    issuers = [{"id": "main", "issuer": ISS, "audiences": [harness.AUD], "algorithms": ["HS256"],
                "keys": {"secret": HS_SECRET}}]
    return start_gateway(harness.base_config(routes, issuers, token_sources=["header"]))


def test_text_binary_and_large_messages(gateway):
    big = os.urandom(1024 * 1024)
    with harness.open_ws(gateway.ws_url("/open"), max_size=None) as ws:
        ws.send("héllo ✓")
        assert ws.recv(timeout=10) == "héllo ✓"
        ws.send(b"\x00\xff\x10")
        assert ws.recv(timeout=10) == b"\x00\xff\x10"
        ws.send(big)
        assert ws.recv(timeout=30) == big
        ws.send("")
        assert ws.recv(timeout=10) == ""


def test_fragmented_message(gateway):
    with harness.open_ws(gateway.ws_url("/open")) as ws:
        ws.send(["frag", "ment", "ed ", "text"])
        assert ws.recv(timeout=10) == "fragmented text"
        ws.send([b"\x01", b"\x02\x03", b"\x04"])
        assert ws.recv(timeout=10) == b"\x01\x02\x03\x04"


def test_ping_is_answered(gateway):
    with harness.open_ws(gateway.ws_url("/open")) as ws:
        assert ws.ping(b"are you there").wait(10)


def test_client_close_code_reaches_upstream(gateway, echo):
    with harness.open_ws(gateway.ws_url("/auth"), mint(claims(iss=ISS), HS_SECRET, "HS256")) as ws:
        ws.send("x")
        assert ws.recv(timeout=10) == "x"
        ws.close(4000, "client says bye")
    harness.wait_for(lambda: echo.closes, what="the upstream to see the close")
    assert echo.closes[-1] == (4000, "client says bye")


def test_upstream_close_code_reaches_client(gateway):
    with harness.open_ws(gateway.ws_url("/open")) as ws:
        ws.send("__close__ 4321 upstream says bye")
        assert harness.closed_with(ws) == (4321, "upstream says bye")


def test_upstream_lost_without_close_frame_1014(gateway):
    with harness.open_ws(gateway.ws_url("/open")) as ws:
        ws.send("__drop__")
        code, _ = harness.closed_with(ws)
    assert code == 1014


def test_message_above_max_size_1009(gateway, echo):
    # Uncompressed, so the wire size is the message size (see below).
    with harness.open_ws(gateway.ws_url("/small"), compression=None) as ws:
        ws.send("a" * 1000)
        assert ws.recv(timeout=10) == "a" * 1000
        ws.send("b" * 2048)
        code, _ = harness.closed_with(ws)
    assert code == 1009
    harness.wait_for(lambda: echo.closes, what="the upstream to be closed")
    assert echo.closes[-1][0] == 1001


def test_max_message_size_counts_wire_bytes_of_compressed_messages(gateway):
    """With permessage-deflate agreed end to end the gateway never inflates:
    `max_message_size` (1 KiB here) is what crosses the wire."""
    with harness.open_ws(gateway.ws_url("/small")) as ws:
        assert ws.response.headers.get("Sec-WebSocket-Extensions", "").startswith("permessage-deflate")
        ws.send("b" * 4096)  # a few dozen bytes once compressed
        assert ws.recv(timeout=10) == "b" * 4096
        ws.send(os.urandom(2048))  # incompressible: above 1 KiB on the wire
        code, _ = harness.closed_with(ws)
    assert code == 1009
