"""Remote key sets over HTTPS from a local JWKS server with its own CA: key
rotation, unknown-kid floods, bad documents, OIDC discovery and readiness."""

import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

import harness
from harness import claims, mint

REFETCH_WAIT = 30.0  # the gateway refetches on an unknown kid at most every 10s


@pytest.fixture(scope="module")
def k1():
    return harness.gen_key("rsa")


@pytest.fixture(scope="module")
def k2():
    return harness.gen_key("ec256")


def jwks_config(echo, ca_path, keys, issuer=None, admin=False):
    iss = {"id": "idp", "audiences": [harness.AUD], "algorithms": ["RS256", "ES256"], "keys": keys,
           "ca": str(ca_path)}
    if issuer:
        iss["issuer"] = issuer
    routes = [{"id": "echo", "path": "/echo", "upstream": echo.url}]
    return harness.base_config(routes, [iss], token_sources=["header"], admin=admin)


def accepted(gw, token):
    return harness.accepted(gw.ws_url("/echo"), token)


def rs(key, kid, **kw):
    return mint(claims(**kw), key, "RS256", kid=kid)


def es(key, kid, **kw):
    return mint(claims(**kw), key, "ES256", kid=kid)


def test_key_rotation_new_kid_is_fetched_and_accepted(start_gateway, echo, ca, idp, k1, k2):
    idp.set("/jwks.json", {"keys": [harness.jwk(k1, "k1")]})
    gw = start_gateway(jwks_config(echo, ca.ca_path, {"jwks_url": f"{idp.base}/jwks.json"}))
    assert idp.count("/jwks.json") >= 1
    assert accepted(gw, rs(k1, "k1"))

    # The provider rotates: k2 is published next to k1.
    idp.set("/jwks.json", {"keys": [harness.jwk(k1, "k1"), harness.jwk(k2, "k2")]})
    before = idp.count("/jwks.json")
    new_token = es(k2, "k2")
    harness.wait_for(lambda: accepted(gw, new_token), timeout=REFETCH_WAIT, interval=0.5,
                     what="the rotated-in kid to be accepted")
    assert idp.count("/jwks.json") > before
    assert accepted(gw, rs(k1, "k1"))


def test_unknown_kid_flood_causes_at_most_a_couple_of_fetches(start_gateway, echo, ca, idp, k1):
    idp.set("/jwks.json", {"keys": [harness.jwk(k1, "k1")]})
    gw = start_gateway(jwks_config(echo, ca.ca_path, {"jwks_url": f"{idp.base}/jwks.json"}))

    def flood(n=50):
        tokens = [rs(k1, uuid.uuid4().hex) for _ in range(n)]
        with ThreadPoolExecutor(max_workers=10) as pool:
            return list(pool.map(lambda t: accepted(gw, t), tokens))

    before = idp.count("/jwks.json")
    assert not any(flood())
    assert idp.count("/jwks.json") - before <= 2

    # Wait until an unknown kid does trigger a refetch (the rate limit has
    # passed), then flood again right after it: still at most a couple.
    probe_from = idp.count("/jwks.json")
    harness.wait_for(lambda: not accepted(gw, rs(k1, uuid.uuid4().hex)) and idp.count("/jwks.json") > probe_from,
                     timeout=REFETCH_WAIT, interval=0.5, what="an unknown-kid refetch")
    before = idp.count("/jwks.json")
    assert not any(flood())
    assert idp.count("/jwks.json") - before <= 2
    assert accepted(gw, rs(k1, "k1"))


@pytest.mark.parametrize("document", [
    pytest.param(b"<html>this is not json</html>", id="not-json"),
    pytest.param({"keys": []}, id="empty-set"),
    pytest.param({"keys": [{"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"}]}, id="broken-key"),
])
def test_bad_document_keeps_last_good_keys(start_gateway, echo, ca, idp, k1, document):
    idp.set("/jwks.json", {"keys": [harness.jwk(k1, "k1")]})
    gw = start_gateway(jwks_config(echo, ca.ca_path, {"jwks_url": f"{idp.base}/jwks.json"}))
    assert accepted(gw, rs(k1, "k1"))

    idp.set("/jwks.json", document)
    before = idp.count("/jwks.json")
    harness.wait_for(lambda: not accepted(gw, rs(k1, uuid.uuid4().hex)) and idp.count("/jwks.json") > before,
                     timeout=REFETCH_WAIT, interval=0.5, what="a refetch of the bad document")
    assert accepted(gw, rs(k1, "k1"))
    assert gw.proc.poll() is None


def test_oidc_discovery(start_gateway, echo, ca, idp, k1):
    idp.set("/.well-known/openid-configuration",
            {"issuer": idp.base, "jwks_uri": f"{idp.base}/keys/current.json"})
    idp.set("/keys/current.json", {"keys": [harness.jwk(k1, "k1", alg="RS256")]})
    gw = start_gateway(jwks_config(echo, ca.ca_path, {"discovery": True}, issuer=idp.base))
    assert idp.count("/.well-known/openid-configuration") >= 1
    assert idp.count("/keys/current.json") >= 1
    assert accepted(gw, rs(k1, "k1", iss=idp.base))
    # `iss` must equal the configured issuer.
    status, headers, _ = harness.refused(gw.ws_url("/echo"), rs(k1, "k1", iss="https://evil.test"))
    assert status == 401


def test_discovery_document_for_another_issuer_is_not_trusted(start_gateway, echo, ca, idp, k1):
    idp.set("/.well-known/openid-configuration",
            {"issuer": "https://someone-else.test", "jwks_uri": f"{idp.base}/keys.json"})
    idp.set("/keys.json", {"keys": [harness.jwk(k1, "k1")]})
    gw = start_gateway(jwks_config(echo, ca.ca_path, {"discovery": True}, issuer=idp.base))
    assert not accepted(gw, rs(k1, "k1", iss=idp.base))


def test_untrusted_certificate_gives_no_keys(start_gateway, echo, idp, tmp_path, k1):
    # The issuer trusts a different CA than the one that signed the server.
    other = harness.TestCA(tmp_path / "other")
    idp.set("/jwks.json", {"keys": [harness.jwk(k1, "k1")]})
    gw = start_gateway(jwks_config(echo, other.ca_path, {"jwks_url": f"{idp.base}/jwks.json"}, admin=True))
    assert not accepted(gw, rs(k1, "k1"))
    status, _, _ = harness.http_get(gw.admin_url("/readyz"))
    assert status == 503


def test_readyz_503_until_the_issuer_has_keys(start_gateway, echo, ca, idp, k1):
    idp.set("/jwks.json", {"error": "down"}, status=503)
    gw = start_gateway(jwks_config(echo, ca.ca_path, {"jwks_url": f"{idp.base}/jwks.json"}, admin=True))
    assert harness.http_get(gw.admin_url("/healthz"))[0] == 200
    assert harness.http_get(gw.admin_url("/readyz"))[0] == 503
    status, headers, _ = harness.refused(gw.ws_url("/echo"), rs(k1, "k1"))
    assert status == 401

    idp.set("/jwks.json", {"keys": [harness.jwk(k1, "k1")]})
    harness.wait_for(lambda: harness.http_get(gw.admin_url("/readyz"))[0] == 200,
                     timeout=REFETCH_WAIT, interval=0.25, what="/readyz to turn 200")
    assert accepted(gw, rs(k1, "k1"))


def test_plain_http_jwks_url_only_for_loopback(tmp_path, echo, k1):
    def check(url):
        cfg = harness.base_config(
            [{"id": "echo", "path": "/echo", "upstream": echo.url}],
            [{"id": "idp", "audiences": [harness.AUD], "algorithms": ["RS256"], "keys": {"jwks_url": url}}],
        )
        path = tmp_path / f"check-{time.monotonic_ns()}.yaml"
        path.write_text(harness.json.dumps(cfg))
        return subprocess.run([harness.wsgate_bin(), "check", "-c", str(path)],
                              capture_output=True, text=True, timeout=30)

    remote = check("http://idp.example.com/jwks.json")
    assert remote.returncode == 1
    assert "jwks_url" in remote.stderr + remote.stdout
    assert check("http://127.0.0.1:1/jwks.json").returncode == 0


def test_plain_http_on_loopback_serves_keys(start_gateway, echo, k1):
    server = harness.DocServer()
    try:
        server.set("/jwks.json", {"keys": [harness.jwk(k1, "k1")]})
        routes = [{"id": "echo", "path": "/echo", "upstream": echo.url}]
        iss = {"id": "idp", "audiences": [harness.AUD], "algorithms": ["RS256"],
               "keys": {"jwks_url": f"{server.base}/jwks.json"}}
        gw = start_gateway(harness.base_config(routes, [iss], token_sources=["header"]))
        assert accepted(gw, rs(k1, "k1"))
    finally:
        server.stop()
