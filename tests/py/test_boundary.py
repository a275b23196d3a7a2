"""The trust boundary and the single admission rule, driven by an independent
client (Python `websockets` + PyJWT) and judged by what an independent
upstream parser reads: the standard library's WSGI server (`wsgiref`) maps
`-` and `_` alike to `_`, as gunicorn, Django, Flask and PHP do."""

import io
import json
import socket
import subprocess
import types
import urllib.request
from wsgiref.simple_server import WSGIRequestHandler

from websockets.sync.client import connect as ws_connect

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


def upgrade_status(port, target, lines):
    """Sends an upgrade request for `target` with exactly these header lines
    besides the WebSocket ones (no implied `Host`); returns the status code."""
    head = (
        f"GET {target} HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    )
    head += "".join(f"{k}: {v}\r\n" for k, v in lines) + "\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head.encode())
        status_line = s.makefile("rb").readline().decode()
    assert status_line.startswith("HTTP/1.1 "), status_line
    return int(status_line.split()[1])


def test_two_host_headers_are_refused(echo, start_gateway):
    gw = start_gateway(config(echo.url))
    auth = ("Authorization", f"Bearer {token()}")
    assert upgrade_status(gw.port, "/echo", [("Host", "a.test"), ("Host", "b.test"), auth]) == 400
    assert echo.last() is None


def test_a_request_without_host_is_refused(echo, start_gateway):
    gw = start_gateway(config(echo.url))
    auth = ("Authorization", f"Bearer {token()}")
    assert upgrade_status(gw.port, "/echo", [auth]) == 400
    # The same request with a Host is served: the 400 is about the Host.
    assert upgrade_status(gw.port, "/echo", [("Host", "a.test"), auth]) == 101
    harness.wait_for(lambda: len(echo.requests) == 1, what="the upstream handshake")


def test_an_absolute_form_target_and_another_host_are_refused(echo, start_gateway):
    gw = start_gateway(config(echo.url))
    auth = ("Authorization", f"Bearer {token()}")
    assert upgrade_status(gw.port, "http://a.test/echo", [("Host", "b.test"), auth]) == 400
    assert upgrade_status(gw.port, "http://a.test:8080/echo", [("Host", "a.test"), auth]) == 400
    assert echo.last() is None


def test_an_absolute_form_target_is_routed_by_its_own_authority(echo, start_gateway):
    other = harness.EchoUpstream()
    try:
        routes = [
            {"id": "chat", "host": "chat.test", "path": "/echo", "upstream": echo.url},
            {"id": "other", "path": "/echo", "upstream": other.url},
        ]
        gw = start_gateway(harness.base_config(routes, [issuer()]))
        auth = ("Authorization", f"Bearer {token()}")
        # The target names chat.test: the host route, whatever spelling of
        # the same authority the Host uses (or none).
        assert upgrade_status(gw.port, "http://chat.test/echo", [auth]) == 101
        assert upgrade_status(gw.port, "http://chat.test/echo", [("Host", "CHAT.test:80"), auth]) == 101
        # The target names another host: not the host route.
        assert upgrade_status(gw.port, "http://other.test/echo", [auth]) == 101
        harness.wait_for(lambda: len(echo.requests) == 2 and len(other.requests) == 1,
                         what="three upstream handshakes")
        # The upstream is told the authority the route was chosen by.
        for request in echo.requests:
            assert echo.header("x-forwarded-host", request) == ["chat.test"], request["headers"]
            assert request["path"] == "/echo"
        assert other.header("x-forwarded-host") == ["other.test"]
    finally:
        other.stop()


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


def test_strip_removes_a_second_authorization_header(echo, start_gateway):
    # Two `Authorization` headers give no token (the gateway does not pick
    # one); the query token is the one verified.
    cfg = config(echo.url, token_sources=["header", {"query": "access_token"}])
    route = cfg["routes"][0]
    keep = dict(route, id="keep", path="/keep", forward=dict(route["forward"], token="keep"))
    cfg["routes"].append(keep)
    gw = start_gateway(cfg)
    good, other = token("alice"), token("bob")
    headers = [("Authorization", f"Bearer {other}"), ("Authorization", f"Bearer {good}")]
    for path in ["/echo", "/keep"]:
        with ws_connect(gw.ws_url(f"{path}?access_token={good}"), additional_headers=headers,
                        open_timeout=10, close_timeout=5) as ws:
            ws.send("hello")
            assert ws.recv(timeout=10) == "hello"
    stripped, kept = echo.requests[-2], echo.requests[-1]
    for request in (stripped, kept):
        assert echo.header("authorization", request) == [], request["headers"]
        assert other not in json.dumps(request)
        assert echo.header("x-user-id", request) == ["alice"]
    assert stripped["path"] == "/echo"
    assert good not in json.dumps(stripped)
    assert kept["path"] == f"/keep?access_token={good}"


def test_a_first_message_route_never_offers_the_bearer_pair_upstream(echo, start_gateway):
    gw = start_gateway(config(echo.url, token_sources=["first_message"]))
    t = token("alice")
    with harness.open_ws(gw.ws_url("/echo"), subprotocols=["bearer", t, "chat.v1"]) as ws:
        ws.send(json.dumps({"token": t}))
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"
    request = echo.last()
    assert request["offered"] == ["chat.v1"]
    assert t not in json.dumps(request)
    assert echo.header("x-user-id") == ["alice"]


def test_check_warns_when_a_broader_route_skips_a_rule(tmp_path):
    chat = "ws://127.0.0.1:9001"
    routes = [
        {"id": "rooms", "path": "/rooms/{room}", "upstream": chat,
         "require": [{"claim": "rooms", "any_of": ["{room}"]}]},
        {"id": "lobby", "path": "/*", "upstream": chat},
    ]

    def check(routes):
        path = tmp_path / f"check-{len(list(tmp_path.iterdir()))}.yaml"
        path.write_text(json.dumps(harness.base_config(routes, [issuer()])))
        return subprocess.run([harness.wsgate_bin(), "check", "-c", str(path)],
                              capture_output=True, text=True, timeout=30)

    def route_warnings(out):
        assert out.returncode == 0, out.stderr
        return [l for l in out.stderr.splitlines() if l.startswith("warning: ") and "routes[" in l]

    warnings = route_warnings(check(routes))
    assert len(warnings) == 1, warnings
    assert (
        "routes[0].path: `/ROOMS/X` (letter case), `/rooms/x/` (trailing slash), "
        "`/rooms/x/x` (extra segment) miss this route and reach routes[1] (`lobby`), "
        "which sends them to the same upstream without this route's `require` rules"
    ) in warnings[0], warnings[0]
    # The catch-all on another upstream: nothing to warn about.
    assert route_warnings(check([routes[0], dict(routes[1], upstream="ws://127.0.0.1:9002")])) == []
