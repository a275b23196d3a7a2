"""A reload re-judges every live session's token against the config it brings
in, seen from an independent client (Python `websockets`, tokens minted with
PyJWT): each case opens a session, reloads with `POST /admin/reload`, and the
session either closes with 4403 `access revoked by policy` within 1 s of the
reload's answer — while a new handshake with the same token is refused with
the status the handshake table gives — or, when the reload leaves the token
valid, keeps flowing."""

import contextlib
import json
import signal
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

import pytest
from websockets.exceptions import ConnectionClosed

import harness
from harness import AUD, HS_SECRET, mint

ISS_HS = "https://hs.reload-matrix.test"
ISS_JWKS = "https://jwks.reload-matrix.test"
ISS_ELSEWHERE = "https://elsewhere.reload-matrix.test"
OTHER_AUD = "reload-matrix-other-audience"
ROTATED_SECRET = "rotated-python-suite-hmac-secret-fedcba9876543210fedcba9876543210"
REVOKED = (4403, "access revoked by policy")
CLOSE_BOUND = 1.0  # seconds from the reload's answer to the client's close
WAIT = 10.0  # generous bound for everything that is not the measured gap


# --------------------------------------------------------------------------
# Config pieces


def hs_issuer(secret=HS_SECRET, audiences=(AUD, OTHER_AUD), iss=ISS_HS, id_="hs"):
    return {
        "id": id_,
        "issuer": iss,
        "audiences": list(audiences),
        "algorithms": ["HS256"],
        "keys": {"secret": secret},
    }


def jwks_issuer(path):
    return {
        "id": "jwks",
        "issuer": ISS_JWKS,
        "audiences": [AUD],
        "algorithms": ["ES256", "RS256"],
        "keys": {"jwks_file": str(path)},
    }


def route(echo, id_="echo", path="/echo", **extra):
    r = {"id": id_, "path": path, "upstream": echo.url}
    r.update(extra)
    return r


def config(issuers, routes):
    return harness.base_config(routes, issuers, token_sources=["header"], admin=True)


def hs_token(**extra):
    c = harness.claims(iss=ISS_HS, roles=["chat"])
    c.update(extra)
    return mint(c, HS_SECRET, "HS256")


def write_jwks(path, keys):
    """`keys`: [(kid, private key)] → the public JWKS file at `path`."""
    path.write_text(json.dumps({"keys": [harness.jwk(k, kid) for kid, k in keys]}))


# --------------------------------------------------------------------------
# Admin and session helpers


def reload_now(gw):
    """`POST /admin/reload`; asserts 200 and returns the monotonic time at
    which the answer arrived."""
    req = urllib.request.Request(
        gw.admin_url("/admin/reload"),
        data=b"",
        method="POST",
        headers={"Authorization": f"Bearer {harness.ADMIN_TOKEN}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=WAIT) as r:
            status, body = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read()
    answered = time.monotonic()
    assert status == 200, f"reload answered {status}: {body!r}\n{gw.log()}"
    return answered


def rewrite(gw, cfg):
    gw.config_path.write_text(json.dumps(cfg, indent=2))


def echoes(ws, message):
    ws.send(message)
    assert ws.recv(timeout=WAIT) == message


def close_after(ws, answered):
    """Waits (generously) for the peer's close; returns ((code, reason),
    seconds from `answered` to its receipt)."""
    try:
        msg = ws.recv(timeout=WAIT)
        raise AssertionError(f"a frame arrived instead of the close: {msg!r}")
    except ConnectionClosed as e:
        received = time.monotonic()
        got = (e.rcvd.code, e.rcvd.reason) if e.rcvd is not None else (None, None)
    except TimeoutError:
        raise AssertionError(f"no close within {WAIT}s of the reload") from None
    return got, received - answered


def upstream_closes(echo, code):
    return [c for c in list(echo.closes) if c[0] == code]


# --------------------------------------------------------------------------
# The revoking cases


@dataclass
class Case:
    """`before`/`after(ctx)` build the configs; `token(ctx)` is the session's
    token, `path` its route; `survivor(ctx)` (optional) is a (path, token)
    that stays valid across the reload and must keep flowing; `status` is the
    handshake's answer to the session's token after the reload."""

    before: object
    after: object
    token: object
    status: int
    path: str = "/echo"
    survivor: object = None
    setup: object = None


class Ctx:
    def __init__(self, tmp_path, echo):
        self.tmp_path = tmp_path
        self.echo = echo
        self.jwks_path = tmp_path / "jwks.json"
        self.keys = {}


def _jwks_setup(ctx):
    ctx.keys["k1"] = harness.gen_key("ec256")
    ctx.keys["k2"] = harness.gen_key("rsa")
    write_jwks(ctx.jwks_path, [("k1", ctx.keys["k1"]), ("k2", ctx.keys["k2"])])


def _jwks_after(ctx):
    # The file loses k1; k2 stays. The config file itself is the same.
    write_jwks(ctx.jwks_path, [("k2", ctx.keys["k2"])])
    return config([jwks_issuer(ctx.jwks_path)], [route(ctx.echo)])


CASES = {
    # The only issuer of the new config names another `iss` (with the same
    # secret, so only the `iss` check can refuse the token).
    "issuer removed": Case(
        before=lambda c: config([hs_issuer()], [route(c.echo)]),
        after=lambda c: config([hs_issuer(iss=ISS_ELSEWHERE, id_="elsewhere")], [route(c.echo)]),
        token=lambda c: hs_token(),
        status=401,
    ),
    # Same issuer, same `iss`, a new secret: the session's signature no longer verifies.
    "HS secret rotated": Case(
        before=lambda c: config([hs_issuer()], [route(c.echo)]),
        after=lambda c: config([hs_issuer(secret=ROTATED_SECRET)], [route(c.echo)]),
        token=lambda c: hs_token(),
        status=401,
    ),
    # k1 (ES256) leaves the JWKS file; a session signed with k2 (RS256) stays.
    "JWKS key removed": Case(
        setup=_jwks_setup,
        before=lambda c: config([jwks_issuer(c.jwks_path)], [route(c.echo)]),
        after=_jwks_after,
        token=lambda c: mint(harness.claims(iss=ISS_JWKS), c.keys["k1"], "ES256", kid="k1"),
        survivor=lambda c: (
            "/echo",
            mint(harness.claims(sub="bob", iss=ISS_JWKS), c.keys["k2"], "RS256", kid="k2"),
        ),
        status=401,
    ),
    # The token's audience is dropped; a token for the remaining one stays.
    "audience removed": Case(
        before=lambda c: config([hs_issuer()], [route(c.echo)]),
        after=lambda c: config([hs_issuer(audiences=[OTHER_AUD])], [route(c.echo)]),
        token=lambda c: hs_token(),
        survivor=lambda c: ("/echo", hs_token(sub="bob", aud=OTHER_AUD)),
        status=401,
    ),
    # The route now requires roles ∋ admin; the session's token has only chat.
    "require tightened": Case(
        before=lambda c: config([hs_issuer()], [route(c.echo)]),
        after=lambda c: config(
            [hs_issuer()],
            [route(c.echo, require=[{"claim": "roles", "any_of": ["admin"]}])],
        ),
        token=lambda c: hs_token(),
        survivor=lambda c: ("/echo", hs_token(sub="bob", roles=["chat", "admin"])),
        status=403,
    ),
    # /echo leaves the config; a session of the same token on /other stays.
    "route removed": Case(
        before=lambda c: config(
            [hs_issuer()], [route(c.echo), route(c.echo, id_="other", path="/other")]
        ),
        after=lambda c: config([hs_issuer()], [route(c.echo, id_="other", path="/other")]),
        token=lambda c: hs_token(),
        survivor=lambda c: ("/other", hs_token()),
        status=404,
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_reload_revokes_the_session_its_new_config_refuses(name, start_gateway, echo, tmp_path):
    case = CASES[name]
    ctx = Ctx(tmp_path, echo)
    if case.setup:
        case.setup(ctx)
    gw = start_gateway(case.before(ctx))
    token = case.token(ctx)
    url = gw.ws_url(case.path)

    with contextlib.ExitStack() as stack:
        ws = stack.enter_context(harness.open_ws(url, token))
        echoes(ws, "before the reload")
        survivor = None
        if case.survivor:
            s_path, s_token = case.survivor(ctx)
            survivor = stack.enter_context(harness.open_ws(gw.ws_url(s_path), s_token))
            echoes(survivor, "survivor before the reload")
        assert not upstream_closes(echo, 1001)

        rewrite(gw, case.after(ctx))
        answered = reload_now(gw)
        got, gap = close_after(ws, answered)

        assert got == REVOKED, f"{name}: closed with {got}\n{gw.log()}"
        assert gap <= CLOSE_BOUND, f"{name}: close arrived {gap:.3f}s after the reload's answer"
        # The upstream leg of the revoked session is told it is going away.
        harness.wait_for(lambda: upstream_closes(echo, 1001), timeout=WAIT,
                         what="the upstream's 1001 close")

        if survivor:
            for i in range(5):
                echoes(survivor, f"survivor after the reload {i}")
            assert len(upstream_closes(echo, 1001)) == 1, "only the revoked session closed"

    # The handshake, judged by the same config, refuses the same token.
    status, headers, _ = harness.refused(url, token)
    assert status == case.status, f"{name}: a new handshake got {status}"
    if status == 401:
        assert 'error="invalid_token"' in headers.get("WWW-Authenticate", ""), headers
    if case.survivor:
        s_path, s_token = case.survivor(ctx)
        assert harness.roundtrip(gw.ws_url(s_path), s_token) == "hello"


def test_sighup_revokes_like_the_admin_reload(start_gateway, echo):
    """The other reload trigger: SIGHUP after a secret rotation. It has no
    answer to time from, so only the close and the handshake are checked."""
    gw = start_gateway(config([hs_issuer()], [route(echo)]))
    token = hs_token()
    with harness.open_ws(gw.ws_url("/echo"), token) as ws:
        echoes(ws, "before the reload")
        rewrite(gw, config([hs_issuer(secret=ROTATED_SECRET)], [route(echo)]))
        before = gw.log().count("configuration reloaded")
        gw.proc.send_signal(signal.SIGHUP)
        got, _ = close_after(ws, time.monotonic())
        assert got == REVOKED, f"closed with {got}\n{gw.log()}"
    harness.wait_for(lambda: gw.log().count("configuration reloaded") > before, timeout=WAIT,
                     what="the reload log line")
    assert harness.refused(gw.ws_url("/echo"), token)[0] == 401


# --------------------------------------------------------------------------
# The unchanged case


def test_reload_that_leaves_the_token_valid_keeps_the_session(start_gateway, echo):
    cfg = config([hs_issuer()], [route(echo)])
    gw = start_gateway(cfg)
    token = hs_token()
    with harness.open_ws(gw.ws_url("/echo"), token) as ws:
        echoes(ws, "before the reload")

        # The same file.
        reload_now(gw)
        echoes(ws, "after an identical reload")

        # Unrelated changes: a longer leeway, a new route, a new issuer.
        changed = config(
            [hs_issuer() | {"leeway": "30s"},
             hs_issuer(secret=ROTATED_SECRET, iss=ISS_ELSEWHERE, id_="elsewhere")],
            [route(echo), route(echo, id_="unrelated", path="/unrelated")],
        )
        rewrite(gw, changed)
        answered = reload_now(gw)
        for i in range(20):
            echoes(ws, f"frame {i} after an unrelated change")
        # Nothing is on its way either: no close arrives past the bound.
        with pytest.raises(TimeoutError):
            ws.recv(timeout=max(0.0, answered + CLOSE_BOUND + 0.5 - time.monotonic()))
        echoes(ws, "still flowing")

    assert not upstream_closes(echo, 1001), "the upstream leg was closed by the gateway"
    assert harness.roundtrip(gw.ws_url("/echo"), token) == "hello"
