"""Every accepted algorithm, with tokens minted by PyJWT (not by the Rust
`jsonwebtoken` crate the gateway uses) and a `websockets` client (not
tungstenite); and the classic forgeries, which must all be refused."""

import hashlib
import json

import pytest

import harness
from harness import HS_SECRET, claims, mint

ISS = {
    "hs": "https://hs.test",
    "rsa": "https://rsa.test",
    "ec256": "https://ec256.test",
    "ec384": "https://ec384.test",
    "ed": "https://ed.test",
    "jwks": "https://jwks.test",
}
ASYMMETRIC = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"]


@pytest.fixture(scope="module")
def keys():
    return {kind: harness.gen_key(kind) for kind in ("rsa", "ec256", "ec384", "ed25519")}


@pytest.fixture(scope="module")
def other_keys():
    return {kind: harness.gen_key(kind) for kind in ("rsa", "ec256", "ec384", "ed25519")}


@pytest.fixture
def gateway(start_gateway, echo, keys, tmp_path):
    files = tmp_path / "keys"
    files.mkdir()
    pem = {}
    for kind, key in keys.items():
        pem[kind] = files / f"{kind}.pub.pem"
        pem[kind].write_bytes(harness.public_pem(key))
    jwks = {
        "keys": [
            harness.jwk(keys["rsa"], "rsa-1"),
            harness.jwk(keys["ec256"], "ec256-1"),
            harness.jwk(keys["ec384"], "ec384-1"),
            harness.jwk(keys["ed25519"], "ed-1"),
        ]
    }
    (files / "jwks.json").write_text(json.dumps(jwks))

    def issuer(id_, algorithms, keys_):
        return {"id": id_, "issuer": ISS[id_], "audiences": [harness.AUD], "algorithms": algorithms,
                "keys": keys_}

    issuers = [
        issuer("hs", ["HS256", "HS384", "HS512"], {"secret": HS_SECRET}),
        issuer("rsa", ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"], {"public_key": str(pem["rsa"])}),
        issuer("ec256", ["ES256"], {"public_key": str(pem["ec256"])}),
        issuer("ec384", ["ES384"], {"public_key": str(pem["ec384"])}),
        issuer("ed", ["EdDSA"], {"public_key": str(pem["ed25519"])}),
        issuer("jwks", ASYMMETRIC, {"jwks_file": str(files / "jwks.json")}),
    ]
    routes = [{"id": "echo", "path": "/echo", "upstream": echo.url}]
    gw = start_gateway(harness.base_config(routes, issuers, token_sources=["header"]))
    gw.pem = pem
    return gw


# (issuer id, alg, key kind or "hs", kid)
PEM_CASES = (
    [("hs", a, "hs", None) for a in ("HS256", "HS384", "HS512")]
    + [("rsa", a, "rsa", None) for a in ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")]
    + [("ec256", "ES256", "ec256", None), ("ec384", "ES384", "ec384", None), ("ed", "EdDSA", "ed25519", None)]
)
JWKS_CASES = (
    [("jwks", a, "rsa", "rsa-1") for a in ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")]
    + [("jwks", "ES256", "ec256", "ec256-1"), ("jwks", "ES384", "ec384", "ec384-1"), ("jwks", "EdDSA", "ed25519", "ed-1")]
)


def signing_key(keys, kind):
    return HS_SECRET if kind == "hs" else keys[kind]


@pytest.mark.parametrize("issuer,alg,kind,kid", PEM_CASES + JWKS_CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in PEM_CASES + JWKS_CASES])
def test_algorithm_accepted(gateway, echo, keys, issuer, alg, kind, kid):
    token = mint(claims(iss=ISS[issuer], sub=f"user-{alg}"), signing_key(keys, kind), alg, kid=kid)
    message = f"hello over {alg}"
    assert harness.roundtrip(gateway.ws_url("/echo"), token, message=message) == message
    # The token never reaches the upstream (forward.token defaults to strip).
    assert not echo.header("Authorization")


@pytest.mark.parametrize("issuer,alg,kind,kid", PEM_CASES + JWKS_CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in PEM_CASES + JWKS_CASES])
def test_wrong_key_refused(gateway, other_keys, issuer, alg, kind, kid):
    key = "another-secret-of-sufficient-length-0123456789abcdef0123456789ab" if kind == "hs" else other_keys[kind]
    token = mint(claims(iss=ISS[issuer]), key, alg, kid=kid)
    status, headers, _ = harness.refused(gateway.ws_url("/echo"), token)
    assert status == 401
    assert 'error="invalid_token"' in headers.get("WWW-Authenticate", "")


@pytest.mark.parametrize("iss", [ISS["hs"], ISS["rsa"], ISS["jwks"]])
def test_alg_none_refused(gateway, iss):
    for header in ({"alg": "none", "typ": "JWT"}, {"alg": "None"}, {"alg": "NONE", "kid": "rsa-1"}):
        token = harness.hand_made(header, claims(iss=iss))
        status, headers, _ = harness.refused(gateway.ws_url("/echo"), token)
        assert status == 401, header
        assert "Bearer" in headers.get("WWW-Authenticate", "")


def test_hs256_signed_with_rsa_public_key_refused(gateway):
    # Algorithm confusion: the public key PEM used as an HMAC secret.
    pem_bytes = gateway.pem["rsa"].read_bytes()
    for iss, kid in ((ISS["rsa"], None), (ISS["jwks"], "rsa-1")):
        header = {"alg": "HS256", "typ": "JWT"}
        if kid:
            header["kid"] = kid
        for secret in (pem_bytes, pem_bytes.strip()):
            token = harness.hand_made(header, claims(iss=iss), harness.hmac_signer(secret))
            status, headers, _ = harness.refused(gateway.ws_url("/echo"), token)
            assert status == 401
            assert 'error="invalid_token"' in headers.get("WWW-Authenticate", "")


def test_expired_refused_with_invalid_token(gateway, keys):
    for iss, key, alg in ((ISS["hs"], HS_SECRET, "HS256"), (ISS["ec256"], keys["ec256"], "ES256")):
        token = mint(claims(iss=iss, ttl=-3600), key, alg)
        status, headers, _ = harness.refused(gateway.ws_url("/echo"), token)
        assert status == 401
        www = headers.get("WWW-Authenticate", "")
        assert www.startswith("Bearer")
        assert 'error="invalid_token"' in www
        assert "expired" in www


def test_expired_within_leeway_passes_the_handshake(gateway):
    # Default leeway is 60s: a token that expired 5s ago passes the handshake.
    # The session may then be closed for expiry at any time between exp and
    # exp + leeway + 1s (CONTRACT), so only the handshake is asserted here.
    token = mint(claims(iss=ISS["hs"], ttl=-5), HS_SECRET, "HS256")
    with harness.open_ws(gateway.ws_url("/echo"), token):
        pass


def test_tampered_payload_refused(gateway, keys):
    token = mint(claims(iss=ISS["rsa"], sub="alice"), keys["rsa"], "RS256")
    head, _, sig = token.split(".")
    forged = harness.b64url(json.dumps(claims(iss=ISS["rsa"], sub="mallory")).encode())
    status, _, _ = harness.refused(gateway.ws_url("/echo"), f"{head}.{forged}.{sig}")
    assert status == 401


def test_alg_not_listed_for_issuer_refused(gateway, keys):
    # The ec256 issuer lists only ES256; an ES384 token claiming it is refused.
    token = mint(claims(iss=ISS["ec256"]), keys["ec384"], "ES384")
    status, _, _ = harness.refused(gateway.ws_url("/echo"), token)
    assert status == 401


def test_unknown_kid_in_jwks_file_refused(gateway, keys):
    token = mint(claims(iss=ISS["jwks"]), keys["rsa"], "RS256", kid="no-such-kid")
    status, headers, _ = harness.refused(gateway.ws_url("/echo"), token)
    assert status == 401
    assert 'error="invalid_token"' in headers.get("WWW-Authenticate", "")


def test_missing_token_has_plain_bearer_challenge(gateway):
    status, headers, _ = harness.refused(gateway.ws_url("/echo"))
    assert status == 401
    www = headers.get("WWW-Authenticate", "")
    assert www.startswith("Bearer") and 'realm="wsgate"' in www
    assert "invalid_token" not in www


def test_token_fingerprint_only_in_logs(gateway):
    token = mint(claims(iss=ISS["hs"], jti="log-check"), HS_SECRET, "HS256")
    harness.roundtrip(gateway.ws_url("/echo"), token)
    bad = mint(claims(iss=ISS["hs"], ttl=-3600), HS_SECRET, "HS256")
    harness.refused(gateway.ws_url("/echo"), bad)
    log = gateway.log()
    for t in (token, bad):
        assert t not in log
        assert t.split(".")[2] not in log
    _ = hashlib  # fingerprints are the gateway's business; only absence is checked
