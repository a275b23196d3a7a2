"""The admin page in a real browser (headless Chromium over the DevTools
protocol): log in, list sessions, search, terminate one (its client gets 4403
`session terminated`), revoke a subject, see a refused reload's error, and a
wrong admin token refused. The page is served by the admin listener itself.

Set WSGATE_ADMIN_SCREENSHOT=path.png to save a screenshot of the loaded page
(docs/admin-page.png is made that way).
"""

import base64
import contextlib
import json
import os
import time
import urllib.error
import urllib.request

import pytest

import harness
from harness import HS_SECRET, claims, mint

import cdp  # tests/browser, put on the path by conftest.py

ISS = "https://admin-page.test"
ADMIN_TOKEN = "admin-token-for-python-tests"

if cdp.find_chromium() is None:
    pytest.skip("chromium is not installed (tests/run installs it: apt-get install chromium)",
                allow_module_level=True)


def token(sub, jti, ttl=600):
    return mint(claims(sub=sub, iss=ISS, ttl=ttl, jti=jti), HS_SECRET, "HS256")


class Tab:
    """One browser tab kept open across the steps of a test."""

    def __init__(self, browser, url):
        self.browser = browser
        self.target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = browser.call(
            "Target.attachToTarget", {"targetId": self.target, "flatten": True})["sessionId"]
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": 1360, "height": 1000, "deviceScaleFactor": 1, "mobile": False})
        self.call("Page.navigate", {"url": url})

    def call(self, method, params=None):
        return self.browser.call(method, params, session=self.session)

    def eval(self, expression):
        r = self.call("Runtime.evaluate",
                      {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in r:
            raise AssertionError(f"{expression}: {r['exceptionDetails']}")
        return r.get("result", {}).get("value")

    def wait(self, expression, timeout=15.0, what=None):
        return harness.wait_for(lambda: self.eval(expression), timeout=timeout,
                                interval=0.1, what=what or expression)

    def screenshot(self, path):
        data = self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        with open(path, "wb") as f:
            f.write(base64.b64decode(data["data"]))

    def close(self):
        try:
            self.browser.call("Target.closeTarget", {"targetId": self.target})
        except Exception:
            pass


def fill_and_submit(tab, value):
    tab.eval(f"document.getElementById('token').value = {json.dumps(value)};"
             "document.getElementById('login-form').requestSubmit(); true")


def click_in_row(tab, session_id, button_class):
    tab.wait(f"!!document.querySelector('#sessions tr[data-id=\"{session_id}\"] .{button_class}')")
    tab.eval(f"document.querySelector('#sessions tr[data-id=\"{session_id}\"] .{button_class}').click(); true")
    tab.wait("!document.getElementById('confirm').hidden")
    tab.eval("document.getElementById('confirm-ok').click(); true")


def search(tab, text):
    tab.eval("(() => { const s = document.getElementById('search');"
             f" s.value = {json.dumps(text)}; s.dispatchEvent(new Event('input')); return true; }})()")


def visible_rows(tab):
    return tab.eval("[...document.querySelectorAll('#sessions tbody tr[data-id]')]"
                    ".map(tr => tr.children[2].textContent)")


@pytest.fixture(scope="module")
def echo():
    server = harness.EchoUpstream()
    yield server
    server.stop()


@pytest.fixture
def gateway(tmp_path, echo):
    routes = [{"id": "chat", "path": "/chat", "upstream": echo.url},
              {"id": "feed", "path": "/feed/*", "upstream": echo.url}]
    issuers = [{"id": "main", "issuer": ISS, "audiences": [harness.AUD], "algorithms": ["HS256"],
                "keys": {"secret": HS_SECRET}}]
    config = harness.base_config(routes, issuers, admin=True)
    gw = harness.Gateway(tmp_path / "gw", config)
    gw.config = config
    yield gw
    gw.stop()


def test_page_is_served_with_a_strict_policy_and_no_token(gateway):
    with urllib.request.urlopen(gateway.admin_url("/"), timeout=10) as r:
        csp = r.headers["Content-Security-Policy"]
        html = r.read().decode()
    assert csp.startswith("default-src 'self'")
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert '<script src="/ui/admin.js"' in html
    assert ADMIN_TOKEN not in html
    # The API behind it still wants the token.
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(gateway.admin_url("/admin/sessions"), timeout=10)
    assert e.value.code == 401


def test_wrong_admin_token_is_refused(browser, gateway):
    tab = Tab(browser, gateway.admin_url("/"))
    try:
        tab.wait("document.readyState === 'complete' && !!document.getElementById('login-form')")
        fill_and_submit(tab, "not-the-admin-token")
        tab.wait("document.getElementById('login-error').textContent.includes('refused')")
        assert tab.eval("document.getElementById('app').hidden") is True
        assert tab.eval("document.body.dataset.loaded === undefined") is True
    finally:
        tab.close()


def test_log_in_list_search_terminate_revoke_reload(browser, gateway):
    with contextlib.ExitStack() as stack:
        alice = stack.enter_context(harness.open_ws(gateway.ws_url("/chat"), token("alice", "jti-alice")))
        bob = stack.enter_context(harness.open_ws(gateway.ws_url("/feed/news"), token("bob", "jti-bob")))
        carol = stack.enter_context(harness.open_ws(gateway.ws_url("/chat"), token("carol", "jti-carol")))
        drive_the_page(browser, gateway, alice, bob, carol)


def drive_the_page(browser, gateway, alice, bob, carol):
    for ws in (alice, bob, carol):
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"
    # A few refusals, so the outcome chart has more than one colour.
    for _ in range(3):
        harness.refused(gateway.ws_url("/chat"), mint(claims(iss=ISS), "x" * 64, "HS256"))
    harness.refused(gateway.ws_url("/nowhere"), token("dave", "jti-dave"))

    def sessions():
        return json.loads(urllib.request.urlopen(urllib.request.Request(
            gateway.admin_url("/admin/sessions"),
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}), timeout=10).read())

    # The relay counts a frame just after passing it on: poll for the counts.
    listed = harness.wait_for(
        # Bytes are wire bytes: `hello` may cross compressed (permessage-deflate).
        lambda: (lambda ss: ss if all(s["messages_to_upstream"] == 1 and s["messages_to_client"] == 1
                                      and s["bytes_to_client"] > 0 for s in ss) else None)(sessions()),
        what="the sessions' traffic counts")
    ids = {s["sub"]: s["id"] for s in listed}
    assert set(ids) == {"alice", "bob", "carol"}

    tab = Tab(browser, gateway.admin_url("/"))
    try:
        tab.wait("document.readyState === 'complete' && !!document.getElementById('login-form')")
        fill_and_submit(tab, ADMIN_TOKEN)
        tab.wait("document.body.dataset.loaded === 'yes'", what="the page to load its data")
        tab.wait("document.querySelectorAll('#sessions tbody tr[data-id]').length === 3")
        assert sorted(visible_rows(tab)) == ["alice", "bob", "carol"]
        # The token is in no URL, cookie, storage or markup.
        state = tab.eval("JSON.stringify([location.href, document.cookie, localStorage.length,"
                         " sessionStorage.length, document.documentElement.outerHTML])")
        assert ADMIN_TOKEN not in state
        assert tab.eval("document.getElementById('token').value") == ""
        # The issuer table shows the key of the HS secret.
        tab.wait("document.querySelector('#issuers tbody td') &&"
                 " document.querySelector('#issuers tbody td').textContent === 'main'")
        # Charts drew the handshakes of this test.
        tab.wait("document.querySelectorAll('#chart-handshakes rect').length >= 2")
        assert "unauthorized" in tab.eval("document.getElementById('legend-handshakes').textContent")

        search(tab, "feed")
        assert visible_rows(tab) == ["bob"]
        search(tab, "")

        if os.environ.get("WSGATE_ADMIN_SCREENSHOT"):
            for i in range(4):
                harness.roundtrip(gateway.ws_url("/chat"), token(f"visitor{i}", f"jti-v{i}"))
            for ws in (alice, bob, carol):
                for i in range(20):
                    ws.send("x" * (i * 50))
                    ws.recv(timeout=10)
            tab.wait("document.querySelectorAll('#sessions tbody tr[data-id]').length === 3")
            time.sleep(2.5)  # one refresh of the page, so the traffic shows
            tab.screenshot(os.environ["WSGATE_ADMIN_SCREENSHOT"])

        # Terminate alice: her client gets 4403 "session terminated".
        click_in_row(tab, ids["alice"], "terminate")
        assert harness.closed_with(alice) == (4403, "session terminated")
        tab.wait("document.getElementById('notice').textContent.includes('terminated')")
        tab.wait("document.querySelectorAll('#sessions tbody tr[data-id]').length === 2")

        # Revoke bob's subject: his session closes with 4403 "token revoked".
        click_in_row(tab, ids["bob"], "revoke-subject")
        assert harness.closed_with(bob) == (4403, "token revoked")
        tab.wait("document.getElementById('notice').textContent.includes('1 session(s) closed')")
        tab.wait("document.querySelector('#revocations tbody').textContent.includes('sub bob')")

        # Revoke carol's token by jti.
        click_in_row(tab, ids["carol"], "revoke-jti")
        assert harness.closed_with(carol) == (4403, "token revoked")
        tab.wait("document.querySelector('#revocations tbody').textContent.includes('jti jti-carol')")

        # A reload of an invalid config shows why, and the old one stays.
        broken = dict(gateway.config, routes=[{"id": "chat", "path": "/chat", "upstrem": "x"}])
        gateway.config_path.write_text(json.dumps(broken))
        tab.eval("document.getElementById('reload').click(); true")
        tab.wait("document.getElementById('notice').className === 'error'")
        text = tab.eval("document.getElementById('notice').textContent")
        assert "Reload refused" in text and "upstrem" in text, text
        gateway.config_path.write_text(json.dumps(gateway.config))
        tab.eval("document.getElementById('reload').click(); true")
        tab.wait("document.getElementById('notice').textContent.startsWith('Config reloaded')")
        assert harness.roundtrip(gateway.ws_url("/chat"), token("erin", "jti-erin")) == "hello"
    finally:
        tab.close()
