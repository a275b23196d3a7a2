"""The trust boundary and the single admission rule, driven by an independent
client (Python `websockets` + PyJWT) and judged by what an independent
upstream parser reads: the standard library's WSGI server (`wsgiref`) maps
`-` and `_` alike to `_`, as gunicorn, Django, Flask and PHP do."""

import io
import json
import types
import urllib.request
from wsgiref.simple_server import WSGIRequestHandler

import harness
from harness import HS_SECRET, claims, mint

ISS = "https://boundary.test"
AUD = "boundary"
OTHER_SECRET = "a-rotated-hmac-secret-for-the-python-suite-0123456789abcdef"


def issuer(secret=HS_SECRET, audiences=(AUD,)):
    return {
        "id": "py",
        "issuer": ISS,
        "audiences": list(audiences),
        "algorithms": ["HS256"],
        "keys": {"secret": secret},
        "leeway": "1s",
    }


def token(sub="alice", secret=HS_SECRET, **extra):
    extra.setdefault("roles", ["chat"])
    return mint(claims(sub=sub, iss=ISS, aud=AUD, **extra), secret, "HS256")


def config(echo_url, secret=HS_SECRET, audiences=(AUD,), **route_extra):
    route = {
        "id": "echo",
        "path": "/echo",
        "upstream": echo_url,
        "forward": {"headers": {"X-User-Id": "{claims.sub}", "X-Roles": "{claims.roles}"}},
    }
    route.update(route_extra)
    return harness.base_config([route], [issuer(secret, audiences)], admin=True)


def wsgi_environ(request):
    """The WSGI environ `wsgiref` builds from the request the upstream got."""
    lines = [f"GET {request['path']} HTTP/1.1"]
    lines += [f"{k}: {v}" for k, v in request["headers"]]
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    handler = WSGIRequestHandler.__new__(WSGIRequestHandler)
    handler.rfile = io.BytesIO(raw)
    handler.wfile = io.BytesIO()
    handler.client_address = ("127.0.0.1", 0)
    handler.server = types.SimpleNamespace(base_environ={}, server_name="upstream", server_port=0)
    handler.raw_requestline = handler.rfile.readline()
    assert handler.parse_request(), "wsgiref could not parse the forwarded request"
    return handler.get_environ()


def admin(gw, method, path, body=None):
    req = urllib.request.Request(
        gw.admin_url(path),
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {harness.ADMIN_TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, json.loads(r.read() or b"null")


def test_a_wsgi_upstream_reads_the_gateways_identity_not_the_clients(echo, start_gateway):
    gw = start_gateway(config(echo.url))
    spoof = {
        "X_User_Id": "admin",
        "X_Roles": "admin",
        "X_Forwarded_For": "10.6.6.6",
        "X_Real_IP": "10.6.6.6",
    }
    reply = harness.roundtrip(gw.ws_url("/echo"), token("mallory"), headers=spoof)
    assert reply == "hello"
    env = wsgi_environ(echo.last())
    assert env["HTTP_X_USER_ID"] == "mallory"
    assert env["HTTP_X_ROLES"] == "chat"
    assert env["HTTP_X_FORWARDED_FOR"] == "127.0.0.1"
    assert "HTTP_X_REAL_IP" not in env


def test_claims_an_upstream_would_read_differently_are_refused(echo, start_gateway):
    gw = start_gateway(config(echo.url))
    for roles in [" admin ", ["user,admin"]]:
        status, _, _ = harness.refused(gw.ws_url("/echo"), token(roles=roles))
        assert status == 403, roles
    assert echo.last() is None


def test_two_host_headers_are_refused(echo, start_gateway):
    import socket

    gw = start_gateway(config(echo.url))
    req = (
        "GET /echo HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token()}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        s.sendall(req.encode())
        status_line = s.makefile("rb").readline().decode()
    assert status_line.split()[1] == "400", status_line


def test_a_reload_that_rotates_the_secret_ends_sessions_made_with_the_old_one(echo, start_gateway):
    gw = start_gateway(config(echo.url))
    ten_years = 10 * 365 * 86400
    with harness.open_ws(gw.ws_url("/echo"), token("forger", ttl=ten_years)) as ws:
        ws.send("before")
        assert ws.recv(timeout=10) == "before"
        gw.config_path.write_text(json.dumps(config(echo.url, secret=OTHER_SECRET)))
        status, _ = admin(gw, "POST", "/admin/reload")
        assert status == 200
        assert harness.closed_with(ws) == (4403, "access revoked by policy")
    # A token made with the new secret opens a session.
    assert harness.roundtrip(gw.ws_url("/echo"), token(secret=OTHER_SECRET)) == "hello"


def test_a_numeric_sub_is_revoked_by_its_decimal_text(echo, start_gateway):
    gw = start_gateway(config(echo.url))
    with harness.open_ws(gw.ws_url("/echo"), token(sub=12345)) as ws:
        ws.send("x")
        assert ws.recv(timeout=10) == "x"
        assert echo.header("x-user-id") == ["12345"]
        status, body = admin(gw, "POST", "/admin/revocations", {"sub": "12345"})
        assert (status, body) == (201, {"closed": 1})
        assert harness.closed_with(ws) == (4403, "token revoked")


def test_a_token_issued_in_the_future_is_refused(echo, start_gateway):
    import time

    gw = start_gateway(config(echo.url))
    status, headers, _ = harness.refused(gw.ws_url("/echo"), token(iat=int(time.time()) + 3600))
    assert status == 401
    assert "token not yet valid" in headers["WWW-Authenticate"]


def test_strip_removes_every_carrier_and_keep_forwards_only_the_verified_one(echo, start_gateway):
    sources = ["header", {"query": "access_token"}, {"cookie": "access_token"}]
    cfg = config(echo.url, token_sources=sources, origins=["https://app.test"])
    keep = dict(cfg["routes"][0], id="keep", path="/keep", forward={"token": "keep"})
    cfg["routes"].append(keep)
    gw = start_gateway(cfg)
    good, stale = token("alice"), token("bob", ttl=-3600)
    for path in ["/echo", "/keep"]:
        url = gw.ws_url(f"{path}?access_token={stale}&room=1")
        headers = {"Cookie": f"access_token={stale}; theme=dark"}
        assert harness.roundtrip(url, good, headers=headers) == "hello"
    stripped, kept = echo.requests[-2], echo.requests[-1]
    for request in (stripped, kept):
        assert stale not in request["path"]
        assert echo.header("cookie", request) == ["theme=dark"]
    assert "access_token" not in stripped["path"]
    assert echo.header("authorization", stripped) == []
    assert echo.header("authorization", kept) == [f"Bearer {good}"]
