"""GraphQL subscriptions over graphql-ws, with the official `graphql-ws`
server and client (Node.js), through wsgate: the token travels in
`connection_init` (read at a JSON pointer), and the server still receives
that message, since its protocol needs it."""

import json
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

import harness
from harness import HS_SECRET, claims, mint

NODE_DIR = Path(__file__).resolve().parent.parent / "node"
ISS = "https://graphql.test"
AUD = "graphql"


def node():
    exe = shutil.which("node")
    if exe is None or not (NODE_DIR / "node_modules" / "graphql-ws").is_dir():
        raise RuntimeError(
            "Node.js and tests/node/node_modules are needed: `npm ci --prefix tests/node` (tests/run does it)"
        )
    return exe


class GraphqlServer:
    """`graphql_server.mjs` in a child process; its output lines are kept."""

    def __init__(self):
        self.proc = subprocess.Popen(
            [node(), str(NODE_DIR / "graphql_server.mjs")],
            cwd=str(NODE_DIR),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        line = harness.wait_for(
            lambda: next((l for l in list(self.lines) if l.startswith("listening ")), None),
            what="the graphql-ws server",
        )
        self.port = int(line.split()[1])

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def inits(self):
        return [json.loads(l[len("init "):]) for l in list(self.lines) if l.startswith("init ")]

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def graphql_server():
    server = GraphqlServer()
    yield server
    server.stop()


def run_client(url, token):
    out = subprocess.run(
        [node(), str(NODE_DIR / "graphql_client.mjs"), url, token],
        cwd=str(NODE_DIR),
        capture_output=True,
        text=True,
        timeout=30,
    )
    return out.returncode, out.stdout.splitlines()


def config(port):
    route = {
        "id": "graphql",
        "path": "/graphql",
        "upstream": f"ws://127.0.0.1:{port}",
        "token_sources": [{"first_message": {"pointer": "/payload/Authorization", "forward": True}}],
        "forward": {"headers": {"X-User-Id": "{claims.sub}"}},
    }
    issuer = {
        "id": "gql",
        "issuer": ISS,
        "audiences": [AUD],
        "algorithms": ["HS256"],
        "keys": {"secret": HS_SECRET},
    }
    return harness.base_config([route], [issuer])


def test_a_graphql_ws_subscription_is_authenticated_by_connection_init(graphql_server, start_gateway):
    gw = start_gateway(config(graphql_server.port))
    token = mint(claims(sub="alice", iss=ISS, aud=AUD), HS_SECRET, "HS256")
    code, lines = run_client(gw.ws_url("/graphql"), token)
    assert code == 0, lines
    results = [json.loads(l) for l in lines if l.startswith("{")]
    assert [r["data"]["greetings"] for r in results] == [
        "hello a from alice",
        "hello b from alice",
        "hello c from alice",
    ]
    assert lines[-1] == "complete"
    # The server got connection_init (its protocol needs it), token included.
    assert graphql_server.inits() == [{"Authorization": f"Bearer {token}"}]


def test_a_bad_token_in_connection_init_is_closed_4401(graphql_server, start_gateway):
    gw = start_gateway(config(graphql_server.port))
    forged = mint(claims(sub="mallory", iss=ISS, aud=AUD), "x" * 64, "HS256")
    code, lines = run_client(gw.ws_url("/graphql"), forged)
    assert code == 2, lines
    assert lines[-1] == "closed 4401 invalid signature"
    assert graphql_server.inits() == []
