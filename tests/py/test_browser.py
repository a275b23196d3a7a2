"""A real browser (headless Chromium, driven over the DevTools protocol) as
the client: what a web page can and cannot see of wsgate's answers.

The page `tests/browser/ws.html` is served from a local HTTP server, so its
Origin is `http://127.0.0.1:<port>`.
"""

import json
import urllib.parse
from pathlib import Path

import pytest

import harness
from harness import HS_SECRET, claims, mint

import cdp  # tests/browser, put on the path by conftest.py

BROWSER_DIR = harness.REPO / "tests" / "browser"

ISS = "https://browser.test"

if cdp.find_chromium() is None:
    pytest.skip("chromium is not installed (tests/run installs it: apt-get install chromium)",
                allow_module_level=True)


def token(ttl=300, **kw):
    return mint(claims(iss=ISS, ttl=ttl, roles=["chat"], **kw), HS_SECRET, "HS256")


@pytest.fixture(scope="module")
def page_server():
    server = harness.DocServer()
    server.set("/ws.html", (BROWSER_DIR / "ws.html").read_text(),
               headers={"Content-Type": "text/html; charset=utf-8"})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def upstreams():
    first, silent = harness.EchoUpstream(), harness.EchoUpstream(select=None)
    yield first, silent
    first.stop()
    silent.stop()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, page_server, upstreams):
    first, silent = upstreams
    page_origin = page_server.base

    def route(id_, sources, url=first.url, **extra):
        r = {"id": id_, "path": f"/{id_}", "upstream": url, "token_sources": sources}
        r.update(extra)
        return r

    routes = [
        route("sub", ["subprotocol"]),
        route("sub-silent", ["subprotocol"], url=silent.url),
        route("first", ["first_message"]),
        route("close", ["subprotocol"], reject="close"),
        route("close-first", ["first_message"], reject="close"),
        route("close-origin", ["subprotocol"], reject="close", origins=["https://app.example.com"]),
        route("origin-ok", ["subprotocol"], reject="close", origins=[page_origin]),
        route("close-admin", ["subprotocol"], reject="close",
              require=[{"claim": "roles", "any_of": ["admin"]}]),
    ]
    issuers = [{"id": "main", "issuer": ISS, "audiences": [harness.AUD], "algorithms": ["HS256"],
                "keys": {"secret": HS_SECRET}}]
    gw = harness.Gateway(tmp_path_factory.mktemp("browser-gw"), harness.base_config(routes, issuers))
    yield gw
    gw.stop()


def visit(browser, page_server, gateway, path, protocols=None, first=None, message="hello from the page",
          repeat=None):
    params = {"url": gateway.ws_url(path), "message": message}
    if repeat is not None:
        params["repeat"] = repeat
    if protocols is not None:
        params["protocols"] = protocols
    if first is not None:
        params["first"] = first
    url = f"{page_server.base}/ws.html#{urllib.parse.quote(json.dumps(params))}"
    raw = browser.run_page(url, "window.__result ? JSON.stringify(window.__result) : ''")
    return json.loads(raw)


def test_subprotocol_upstream_pick(browser, page_server, gateway, upstreams):
    r = visit(browser, page_server, gateway, "/sub", ["bearer", token(), "chat.v1"])
    assert r["opened"], r
    assert r["protocol"] == "chat.v1"
    assert r["echo"] == "hello from the page"
    assert r["code"] == 1000
    assert upstreams[0].last()["offered"] == ["chat.v1"]


def test_subprotocol_bearer_when_upstream_picks_none(browser, page_server, gateway):
    r = visit(browser, page_server, gateway, "/sub-silent", ["bearer", token(), "chat.v1"])
    assert r["opened"], r
    assert r["protocol"] == "bearer"
    assert r["echo"] == "hello from the page"


def test_subprotocol_token_only(browser, page_server, gateway):
    r = visit(browser, page_server, gateway, "/sub", ["bearer", token()])
    assert r["opened"], r
    assert r["protocol"] == "bearer"
    assert r["echo"] == "hello from the page"


def test_first_message(browser, page_server, gateway, upstreams):
    r = visit(browser, page_server, gateway, "/first", ["jwt", "v1.jwt"],
              first=json.dumps({"jwt": token(sub="browser-user")}))
    assert r["opened"], r
    assert r["protocol"] == "jwt"
    # The echo is the page's message: the auth message was not forwarded.
    assert r["echo"] == "hello from the page"
    assert upstreams[0].last()["offered"] == ["jwt", "v1.jwt"]


def test_refused_handshake_is_opaque_to_the_page(browser, page_server, gateway):
    # reject: status (default): the page only sees a failed connection.
    bad = mint(claims(iss=ISS), "z" * 64, "HS256")
    r = visit(browser, page_server, gateway, "/sub", ["bearer", bad])
    assert not r["opened"]
    assert r["code"] == 1006


def test_close_bad_token_4401_readable(browser, page_server, gateway):
    bad = mint(claims(iss=ISS), "z" * 64, "HS256")
    r = visit(browser, page_server, gateway, "/close", ["bearer", bad, "chat.v1"])
    assert r["opened"], r
    assert r["code"] == 4401
    assert r["reason"]
    assert r["echo"] is None


def test_close_expired_token_reason(browser, page_server, gateway):
    r = visit(browser, page_server, gateway, "/close", ["bearer", token(ttl=-3600)])
    assert r["code"] == 4401
    assert r["reason"] == "token expired"


def test_close_missing_token(browser, page_server, gateway):
    r = visit(browser, page_server, gateway, "/close")
    assert r["code"] == 4401
    assert r["reason"] == "missing token"


def test_close_first_message_bad_token(browser, page_server, gateway):
    bad = mint(claims(iss=ISS), "z" * 64, "HS256")
    r = visit(browser, page_server, gateway, "/close-first", ["jwt"], first=json.dumps({"jwt": bad}))
    assert r["opened"], r
    assert r["code"] == 4401


def test_close_forbidden_origin_4403(browser, page_server, gateway):
    r = visit(browser, page_server, gateway, "/close-origin", ["bearer", token(), "chat.v1"])
    assert r["opened"], r
    assert r["code"] == 4403
    assert r["reason"] == "origin not allowed"
    assert r["echo"] is None


def test_allowed_origin_passes(browser, page_server, gateway):
    r = visit(browser, page_server, gateway, "/origin-ok", ["bearer", token()])
    assert r["opened"], r
    assert r["echo"] == "hello from the page"


def test_close_rule_failure_4403(browser, page_server, gateway):
    r = visit(browser, page_server, gateway, "/close-admin", ["bearer", token()])
    assert r["opened"], r
    assert r["code"] == 4403
    assert r["reason"]


def test_compression_is_negotiated_end_to_end(browser, page_server, gateway, upstreams):
    # Chromium always offers permessage-deflate; a route that lets frames
    # through untouched passes the offer on, and the upstream's answer back.
    r = visit(browser, page_server, gateway, "/sub", ["bearer", token(), "chat.v1"],
              message="a compressible line of chat text. ", repeat=3000)
    assert r["opened"], r
    assert r["extensions"].startswith("permessage-deflate"), r
    assert r["echoMatches"] is True, r
    offered = dict((k.lower(), v) for k, v in upstreams[0].last()["headers"])
    assert offered["sec-websocket-extensions"].startswith("permessage-deflate")


def test_compression_is_declined_where_the_gateway_reads_messages(browser, page_server, gateway):
    # first_message: the gateway reads the first message, so it declines.
    r = visit(browser, page_server, gateway, "/first", ["jwt"],
              first=json.dumps({"jwt": token()}), message="x" * 100, repeat=1000)
    assert r["opened"], r
    assert r["extensions"] == ""
    assert r["echoMatches"] is True, r
