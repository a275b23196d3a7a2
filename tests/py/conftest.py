"""Fixtures: a Python echo upstream and a factory that starts wsgate."""

import pytest

import harness


@pytest.fixture
def echo():
    server = harness.EchoUpstream()
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
