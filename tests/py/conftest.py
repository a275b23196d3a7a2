"""Fixtures: a Python echo upstream, a test CA with an HTTPS identity
provider, a factory that starts wsgate, and headless Chromium."""

import sys

import pytest

import harness

# The Chromium driver (tests/browser/cdp.py) is importable as `cdp`.
sys.path.insert(0, str(harness.REPO / "tests" / "browser"))


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


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """One headless Chromium per test module, driven over CDP."""
    import cdp

    b = cdp.Browser(tmp_path_factory.mktemp("chromium"))
    yield b
    b.close()
