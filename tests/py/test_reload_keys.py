"""Reloads keep working key sets, `/readyz` is a stated choice, and a
rotated-in key is fetched within about a second of being used."""

import json
import signal

import pytest

import harness
from harness import HS_SECRET, claims, mint

AUD = "reload-keys"


def remote_issuer(ca, url, id_="idp"):
    return {
        "id": id_,
        "audiences": [AUD],
        "algorithms": ["RS256", "ES256"],
        "keys": {"jwks_url": url},
        "ca": str(ca.ca_path),
    }


def local_issuer():
    return {
        "id": "local",
        "issuer": "https://local.test",
        "audiences": [AUD],
        "algorithms": ["HS256"],
        "keys": {"secret": HS_SECRET},
    }


def config(echo, issuers, **extra):
    routes = [{"id": "echo", "path": "/echo", "upstream": echo.url}]
    return harness.base_config(routes, issuers, token_sources=["header"], admin=True, **extra)


def accepted(gw, token):
    return harness.accepted(gw.ws_url("/echo"), token)


def readyz(gw):
    return harness.http_get(gw.admin_url("/readyz"))[0]


def sighup(gw, cfg=None):
    """Writes `cfg` (if given) as the gateway's config, sends SIGHUP and
    waits until the reload is in force."""
    if cfg is not None:
        gw.config_path.write_text(json.dumps(cfg, indent=2))
    before = gw.log().count("configuration reloaded")
    gw.proc.send_signal(signal.SIGHUP)
    harness.wait_for(lambda: gw.log().count("configuration reloaded") > before, what="the reload")


def test_a_reload_while_the_provider_is_down_keeps_the_keys(start_gateway, echo, ca, idp):
    key = harness.gen_key("ec256")
    idp.set("/jwks.json", {"keys": [harness.jwk(key, "k1")]})
    gw = start_gateway(config(echo, [remote_issuer(ca, f"{idp.base}/jwks.json")]))
    assert accepted(gw, mint(claims(aud=AUD), key, "ES256", kid="k1"))
    assert readyz(gw) == 200

    idp.stop()
    sighup(gw)
    # A token the gateway has never seen (no cache can help) is still accepted.
    assert accepted(gw, mint(claims(sub="bob", aud=AUD), key, "ES256", kid="k1"))
    assert readyz(gw) == 200


@pytest.mark.parametrize("mode,want", [("all_issuers", 503), ("any_issuer", 200)])
def test_readyz_is_a_choice(start_gateway, echo, ca, mode, want):
    dead = "https://127.0.0.1:9/jwks.json"  # the discard port: nothing answers
    cfg = config(echo, [local_issuer(), remote_issuer(ca, dead)], readyz=mode)
    gw = start_gateway(cfg)
    assert harness.wait_for(lambda: readyz(gw) == want, what=f"/readyz {want}")
    # Tokens of the issuer that has keys are served either way.
    token = mint(claims(iss="https://local.test", aud=AUD), HS_SECRET, "HS256")
    assert accepted(gw, token)


def test_a_rotated_in_key_is_fetched_within_the_refetch_interval(start_gateway, echo, ca, idp):
    k1, k2 = harness.gen_key("ec256"), harness.gen_key("ec256")
    idp.set("/jwks.json", {"keys": [harness.jwk(k1, "k1")]})
    gw = start_gateway(config(echo, [remote_issuer(ca, f"{idp.base}/jwks.json")]))
    assert accepted(gw, mint(claims(aud=AUD), k1, "ES256", kid="k1"))
    # The set was fetched a moment ago; the provider now publishes k2.
    idp.set("/jwks.json", {"keys": [harness.jwk(k1, "k1"), harness.jwk(k2, "k2")]})
    token = mint(claims(aud=AUD), k2, "ES256", kid="k2")
    # `refetch_interval` defaults to 1s: well within this bound, where the
    # old fixed 10s rate limit was not.
    harness.wait_for(lambda: accepted(gw, token), timeout=5.0, interval=0.2,
                     what="the rotated-in key")


@pytest.mark.parametrize("change", ["refetch_interval", "issuer", "ca"])
def test_a_reload_that_changes_how_an_issuer_is_fetched_or_judged_keeps_its_keys(
    start_gateway, echo, ca, idp, tmp_path, change
):
    """Only the key source (the URL) decides whether fetched keys are still
    the issuer's keys; any other change keeps them until a new fetch."""
    key = harness.gen_key("ec256")
    idp.set("/jwks.json", {"keys": [harness.jwk(key, "k1")]})
    issuer = remote_issuer(ca, f"{idp.base}/jwks.json")
    issuer.update({"issuer": "https://idp.test/a", "refetch_interval": "1s"})
    gw = start_gateway(config(echo, [issuer]))
    assert accepted(gw, mint(claims(iss="https://idp.test/a", aud=AUD), key, "ES256", kid="k1"))
    assert readyz(gw) == 200

    idp.stop()
    if change == "refetch_interval":
        issuer["refetch_interval"] = "2s"
    elif change == "issuer":
        issuer["issuer"] = "https://idp.test/b"
    else:
        # Another CA bundle: the keys fetched under the old one stay until a
        # fetch through the new one succeeds (here none can: the provider is down).
        issuer["ca"] = str(harness.TestCA(tmp_path / "other-ca").ca_path)
    sighup(gw, config(echo, [issuer]))
    # A token the gateway has never seen (sub differs: no cache can help).
    token = mint(claims(sub="bob", iss=issuer["issuer"], aud=AUD), key, "ES256", kid="k1")
    assert accepted(gw, token)
    assert readyz(gw) == 200


def test_a_reload_that_changes_the_key_source_drops_the_old_keys(start_gateway, echo, ca, idp):
    key = harness.gen_key("ec256")
    idp.set("/jwks.json", {"keys": [harness.jwk(key, "k1")]})
    issuer = remote_issuer(ca, f"{idp.base}/jwks.json")
    gw = start_gateway(config(echo, [issuer]))
    assert accepted(gw, mint(claims(aud=AUD), key, "ES256", kid="k1"))

    idp.stop()
    # Keys fetched from the old URL are not the keys the issuer now names.
    issuer["keys"] = {"jwks_url": f"{idp.base}/other.json"}
    sighup(gw, config(echo, [issuer]))
    status, headers, _ = harness.refused(
        gw.ws_url("/echo"), mint(claims(sub="bob", aud=AUD), key, "ES256", kid="k1")
    )
    assert status == 401
    assert "no verification keys available" in headers["WWW-Authenticate"]
    assert readyz(gw) == 503
