"""The gateway starts from a port-0 config and reports its real ports."""

import harness


def test_listener_admin_and_demo_echo_all_on_port_zero(start_gateway, tmp_path):
    # Tests (and users running several instances) bind every socket to port 0
    # and read the real ports from the log: the same "127.0.0.1:0" on several
    # sockets is not a clash, since the kernel gives each its own port.
    cfg = harness.base_config(
        routes=[{"id": "public", "path": "/public/*", "upstream": "ws://127.0.0.1:9", "auth": "none"}],
        issuers=[],
    )
    del cfg["issuers"]
    cfg["admin"] = {"bind": "127.0.0.1:0", "token": "admin-token-for-python-tests"}
    cfg["demo"] = {"echo": "127.0.0.1:0"}
    gw = start_gateway(cfg)
    assert gw.admin and gw.demo_echo
    assert len({gw.port, gw.admin[1], gw.demo_echo[1]}) == 3
    status, _, _ = harness.http_get(gw.admin_url("/healthz"))
    assert status == 200


def test_demo_echo_behind_a_public_route(start_gateway):
    # Two phases: the demo echo's port is known only once it is bound.
    cfg = harness.base_config(
        routes=[{"id": "public", "path": "/public/*", "upstream": "ws://127.0.0.1:9", "auth": "none"}],
        issuers=[],
    )
    del cfg["issuers"]
    cfg["demo"] = {"echo": "127.0.0.3:0"}
    first = start_gateway(cfg, name="first")
    host, port = first.demo_echo
    # The demo echo is an ordinary WebSocket server: talk to it directly.
    assert harness.roundtrip(f"ws://{host}:{port}/x", message="direct") == "direct"
    # And through a route.
    cfg2 = harness.base_config(
        routes=[{"id": "public", "path": "/public/*", "upstream": f"ws://{host}:{port}", "auth": "none"}],
        issuers=[],
    )
    del cfg2["issuers"]
    second = start_gateway(cfg2, name="second")
    assert harness.roundtrip(second.ws_url("/public/a"), message="via") == "via"
