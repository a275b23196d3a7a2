"""Every token source, seen from a Python client and a Python upstream: the
token is found, and it never reaches the upstream."""

import json

import pytest
from websockets.exceptions import ConnectionClosed

import harness
from harness import HS_SECRET, claims, mint

ISS = "https://sources.test"


def token(**kw):
    c = claims(iss=ISS, sub=kw.pop("sub", "alice"), roles=kw.pop("roles", ["chat"]), **kw)
    return mint(c, HS_SECRET, "HS256")


@pytest.fixture
def silent_echo():
    """An upstream that selects no subprotocol."""
    server = harness.EchoUpstream(select=None)
    yield server
    server.stop()


def make_config(echo_url, silent_url, auth_timeout="10s"):
    def route(id_, path, sources, url=echo_url, **extra):
        r = {
            "id": id_,
            "path": path,
            "upstream": url,
            "token_sources": sources,
            "forward": {"headers": {"X-User-Id": "{claims.sub}", "X-Roles": "{claims.roles}"}},
        }
        r.update(extra)
        return r

    routes = [
        route("header", "/header", ["header"]),
        route("sub", "/sub", ["subprotocol"]),
        route("sub-silent", "/sub-silent", ["subprotocol"], url=silent_url),
        route("query", "/query", [{"query": "access_token"}]),
        # A cookie source needs `origins` (cross-site WebSocket hijacking).
        route("cookie", "/cookie", [{"cookie": "access_token"}], origins=["https://app.example.com"]),
        route("first", "/first", ["first_message"]),
        route("first-admin", "/first-admin", ["first_message"],
              require=[{"claim": "roles", "any_of": ["admin"]}]),
        route("keep", "/keep", ["header"], forward={"token": "keep"}),
    ]
    issuers = [{"id": "main", "issuer": ISS, "audiences": [harness.AUD], "algorithms": ["HS256"],
                "keys": {"secret": HS_SECRET}}]
    cfg = harness.base_config(routes, issuers)
    cfg["limits"]["auth_timeout"] = auth_timeout
    return cfg


@pytest.fixture
def gateway(start_gateway, echo, silent_echo):
    return start_gateway(make_config(echo.url, silent_echo.url))


def test_header(gateway, echo):
    t = token(sub="hdr-user")
    with harness.open_ws(gateway.ws_url("/header"), t, source="header",
                         headers={"X-User-Id": "forged", "X-Roles": "admin"}) as ws:
        ws.send("via header")
        assert ws.recv(timeout=10) == "via header"
    assert echo.header("Authorization") == []
    # forward.headers replace whatever the client sent under the same name.
    assert echo.header("X-User-Id") == ["hdr-user"]
    assert echo.header("X-Roles") == ["chat"]
    assert echo.header("X-Forwarded-For") == ["127.0.0.1"]
    assert echo.header("X-Forwarded-Proto") == ["http"]
    assert echo.header("X-Forwarded-Host") == [f"127.0.0.1:{gateway.port}"]
    assert echo.last()["path"] == "/header"


def test_forward_token_keep(gateway, echo):
    t = token()
    assert harness.roundtrip(gateway.ws_url("/keep"), t) == "hello"
    assert echo.header("Authorization") == [f"Bearer {t}"]


def test_subprotocol_with_app_protocol(gateway, echo):
    t = token()
    with harness.open_ws(gateway.ws_url("/sub"), subprotocols=["bearer", t, "chat.v1"]) as ws:
        # The upstream picked chat.v1; the client is told so.
        assert ws.subprotocol == "chat.v1"
        ws.send("via subprotocol")
        assert ws.recv(timeout=10) == "via subprotocol"
    req = echo.last()
    assert req["offered"] == ["chat.v1"]
    offered_header = ",".join(echo.header("Sec-WebSocket-Protocol"))
    assert t not in offered_header and "bearer" not in offered_header
    assert echo.header("X-User-Id") == ["alice"]


def test_subprotocol_several_app_protocols_keep_order(gateway, echo):
    t = token()
    with harness.open_ws(gateway.ws_url("/sub"), subprotocols=["bearer", t, "chat.v2", "chat.v1"]) as ws:
        assert ws.subprotocol == "chat.v2"
    assert echo.last()["offered"] == ["chat.v2", "chat.v1"]


def test_subprotocol_upstream_selects_none_client_gets_bearer(gateway, silent_echo):
    t = token()
    with harness.open_ws(gateway.ws_url("/sub-silent"), subprotocols=["bearer", t, "chat.v1"]) as ws:
        assert ws.subprotocol == "bearer"
        ws.send("x")
        assert ws.recv(timeout=10) == "x"
    assert silent_echo.last()["offered"] == ["chat.v1"]


def test_subprotocol_only_token_client_gets_bearer(gateway, echo):
    t = token()
    with harness.open_ws(gateway.ws_url("/sub"), subprotocols=["bearer", t]) as ws:
        assert ws.subprotocol == "bearer"
        ws.send("x")
        assert ws.recv(timeout=10) == "x"
    assert echo.last()["offered"] == []
    assert echo.header("Sec-WebSocket-Protocol") == []


def test_subprotocol_bad_token_refused(gateway):
    bad = mint(claims(iss=ISS), "x" * 64, "HS256")
    status, headers, _ = harness.refused(gateway.ws_url("/sub"), subprotocols=["bearer", bad, "chat.v1"])
    assert status == 401
    assert 'error="invalid_token"' in headers.get("WWW-Authenticate", "")


def test_query(gateway, echo):
    t = token()
    url = gateway.ws_url(f"/query?room=1&access_token={t}&x=2")
    assert harness.roundtrip(url) == "hello"
    path = echo.last()["path"]
    assert t not in path and "access_token" not in path
    assert path.startswith("/query?")
    assert sorted(path.split("?", 1)[1].split("&")) == ["room=1", "x=2"]


def test_query_token_only(gateway, echo):
    t = token()
    assert harness.roundtrip(gateway.ws_url("/query"), t, source="query:access_token") == "hello"
    assert echo.last()["path"] in ("/query", "/query?")


def test_cookie(gateway, echo):
    t = token()
    headers = {"Cookie": f"theme=dark; access_token={t}; lang=en"}
    assert harness.roundtrip(gateway.ws_url("/cookie"), headers=headers) == "hello"
    cookies = "; ".join(echo.header("Cookie"))
    assert t not in cookies and "access_token" not in cookies
    assert "theme=dark" in cookies and "lang=en" in cookies


def test_wrong_source_is_missing_token(gateway):
    # The route reads only the query; a header token is not looked at.
    status, headers, _ = harness.refused(gateway.ws_url("/query"), token(), source="header")
    assert status == 401
    assert "invalid_token" not in headers.get("WWW-Authenticate", "")


@pytest.mark.parametrize("field", ["token", "jwt"])
def test_first_message(gateway, echo, field):
    t = token(sub="fm-user")
    with harness.open_ws(gateway.ws_url("/first"), subprotocols=["jwt", "v1.jwt"]) as ws:
        # The 101 answers with the first offered protocol.
        assert ws.subprotocol == "jwt"
        ws.send(json.dumps({field: t}))
        ws.send("after auth")
        # The auth message is not forwarded: the first echo is the next message.
        assert ws.recv(timeout=10) == "after auth"
    req = echo.last()
    assert req["offered"] == ["jwt", "v1.jwt"]
    assert echo.header("X-User-Id") == ["fm-user"]


def test_first_message_without_subprotocols(gateway, echo):
    with harness.open_ws(gateway.ws_url("/first")) as ws:
        assert ws.subprotocol is None
        ws.send(json.dumps({"token": token()}))
        ws.send(b"\x00\x01binary")
        assert ws.recv(timeout=10) == b"\x00\x01binary"


def test_first_message_invalid_token_closes_4401(gateway, echo):
    before = len(echo.requests)
    with harness.open_ws(gateway.ws_url("/first")) as ws:
        ws.send(json.dumps({"token": mint(claims(iss=ISS), "y" * 64, "HS256")}))
        code, _reason = harness.closed_with(ws)
    assert code == 4401
    assert len(echo.requests) == before


def test_first_message_forbidden_closes_4403(gateway, echo):
    before = len(echo.requests)
    with harness.open_ws(gateway.ws_url("/first-admin")) as ws:
        ws.send(json.dumps({"token": token(roles=["chat"])}))
        code, _reason = harness.closed_with(ws)
    assert code == 4403
    assert len(echo.requests) == before


def test_first_message_not_json_closes_4401(gateway):
    with harness.open_ws(gateway.ws_url("/first")) as ws:
        ws.send("hello, not a token")
        code, _ = harness.closed_with(ws)
    assert code == 4401


def test_first_message_timeout_closes_4408(start_gateway, echo, silent_echo):
    gw = start_gateway(make_config(echo.url, silent_echo.url, auth_timeout="1s"))
    with harness.open_ws(gw.ws_url("/first")) as ws:
        code, _ = harness.closed_with(ws, timeout=15)
    assert code == 4408
    assert echo.requests == []
