"""Fixtures: a Python echo upstream, a test CA with an HTTPS identity
provider, and a factory that starts wsgate."""

import pytest

import harness


@pytest.fixture
def echo():
    server = harness.EchoUpstream()
    yield server
    server.stop()


@pytest.fixture
def ca(tmp_path):
    """A throwaway CA and its server certificate for 127.0.0.1, in `tmp_path`."""
    return harness.TestCA(tmp_path)


@pytest.fixture
def idp(ca):
    """An HTTPS document server (the identity provider serving JWKS and
    discovery documents) with a certificate from `ca`."""
    server = harness.DocServer(ca.server_context())
    yield server
    server.stop()


@pytest.fixture
def start_gateway(tmp_path):
    """`start_gateway(config, **kw)` → a running `harness.Gateway`; all are
    stopped (SIGTERM to their own PID) at teardown."""
    started = []

    def start(config, name="gw", **kw):
        gw = harness.Gateway(tmp_path / name, config, **kw)
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()
