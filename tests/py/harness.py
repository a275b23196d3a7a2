"""Helpers for the Python suite: the real wsgate binary, a Python echo
upstream, token minting with PyJWT, key material and a local HTTPS server.

Everything binds 127.0.0.1 port 0; the gateway's real ports are read from its
stderr (`listener ready addr=...`), so no port is ever guessed.
"""

import base64
import datetime
import hashlib
import hmac
import http.server
import ipaddress
import json
import os
import queue
import re
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as ws_connect
from websockets.sync.server import serve as ws_serve

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30.0
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def wsgate_bin():
    path = os.environ.get("WSGATE_BIN") or str(REPO / "target" / "debug" / "wsgate")
    if not Path(path).is_file():
        raise RuntimeError(f"wsgate binary not found at {path}; build it or set WSGATE_BIN")
    return os.path.abspath(path)


def wait_for(predicate, timeout=15.0, interval=0.05, what="condition"):
    """Polls `predicate` until it returns something truthy; fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# --------------------------------------------------------------------------
# The gateway process


class Gateway:
    """One `wsgate run` process with a config written to `workdir`.

    The config is written as JSON, which is valid YAML.
    """

    def __init__(self, workdir, config, env=None, wait_admin=None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.workdir / "gateway.yaml"
        self.config_path.write_text(json.dumps(config, indent=2))
        self.lines = []
        self._lines_lock = threading.Lock()
        self._new_line = threading.Condition(self._lines_lock)
        self.listeners = []  # [(host, port, tls)]
        self.admin = None  # (host, port)
        self.demo_echo = None
        wait_admin = "admin" in config if wait_admin is None else wait_admin
        full_env = dict(os.environ)
        full_env.pop("WSGATE_CONFIG", None)
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [wsgate_bin(), "run", "-c", str(self.config_path)],
            cwd=str(self.workdir),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=full_env,
            text=True,
            errors="replace",
        )
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        n_listeners = len(config.get("listeners", []))
        wait_demo = "demo" in config
        try:
            self._wait_ready(n_listeners, wait_admin, wait_demo)
        except BaseException:
            self.stop()
            raise

    def _read_stderr(self):
        for raw in self.proc.stderr:
            line = ANSI.sub("", raw.rstrip("\n"))
            with self._new_line:
                self.lines.append(line)
                m = re.search(r"\blistener ready addr=(\S+) tls=(\w+)", line)
                if m and "admin listener" not in line:
                    host, port = m.group(1).rsplit(":", 1)
                    self.listeners.append((host, int(port), m.group(2) == "true"))
                m = re.search(r"admin listener ready addr=(\S+)", line)
                if m:
                    host, port = m.group(1).rsplit(":", 1)
                    self.admin = (host, int(port))
                m = re.search(r"demo echo upstream ready addr=(\S+)", line)
                if m:
                    host, port = m.group(1).rsplit(":", 1)
                    self.demo_echo = (host, int(port))
                self._new_line.notify_all()
        with self._new_line:
            self._new_line.notify_all()

    def _wait_ready(self, n_listeners, wait_admin, wait_demo):
        def ready():
            return (
                len(self.listeners) >= n_listeners
                and (self.admin or not wait_admin)
                and (self.demo_echo or not wait_demo)
            )

        deadline = time.monotonic() + START_TIMEOUT
        with self._new_line:
            while not ready():
                if self.proc.poll() is not None and not self._reader.is_alive():
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._new_line.wait(min(left, 0.2))
            ok = ready()
        if not ok:
            raise RuntimeError(
                f"wsgate did not become ready (exit={self.proc.poll()}):\n" + self.log()
            )

    def log(self):
        with self._lines_lock:
            return "\n".join(self.lines)

    def wait_log(self, pattern, timeout=15.0):
        rx = re.compile(pattern)
        return wait_for(lambda: any(rx.search(l) for l in list(self.lines)), timeout, what=f"log line /{pattern}/")

    @property
    def port(self):
        return self.listeners[0][1]

    def ws_url(self, path, index=0):
        host, port, tls = self.listeners[index]
        return f"{'wss' if tls else 'ws'}://{host}:{port}{path}"

    def admin_url(self, path):
        host, port = self.admin
        return f"http://{host}:{port}{path}"

    def stop(self, timeout=15.0):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(5)


def http_get(url, headers=None, timeout=10.0, context=None):
    """Returns (status, headers, body bytes); HTTP errors are answers too."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


# --------------------------------------------------------------------------
# A Python echo upstream (independent of the gateway's own echo)


class EchoUpstream:
    """A `websockets` server on 127.0.0.1:0 that echoes every message and
    records each handshake's path, headers and offered/selected subprotocols.

    `select`: "first" picks the first offered subprotocol, None picks none.
    Control messages: `__close__ CODE REASON` makes it close with that code;
    `__drop__` makes it drop the TCP connection without a close frame. The
    close each connection saw is recorded in `closes` as (code, reason).
    """

    def __init__(self, select="first"):
        self.select = select
        self.requests = []
        self.closes = []
        self._lock = threading.Lock()
        self.server = ws_serve(
            self._handler,
            "127.0.0.1",
            0,
            select_subprotocol=self._select_subprotocol,
            # Compressed random data is a little larger than the message:
            # the 1 MiB tests need room above the library's 1 MiB default.
            max_size=16 * 1024 * 1024,
        )
        self.port = self.server.socket.getsockname()[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self):
        return f"ws://127.0.0.1:{self.port}"

    def _select_subprotocol(self, connection, subprotocols):
        with self._lock:
            self.requests.append(
                {
                    "path": connection.request.path,
                    "headers": list(connection.request.headers.raw_items()),
                    "offered": list(subprotocols),
                }
            )
        if self.select == "first" and subprotocols:
            return subprotocols[0]
        return None

    def _handler(self, connection):
        try:
            for message in connection:
                if isinstance(message, str) and message.startswith("__close__ "):
                    _, code, reason = message.split(" ", 2)
                    connection.close(int(code), reason)
                    break
                if message == "__drop__":
                    connection.socket.shutdown(socket.SHUT_RDWR)
                    connection.socket.close()
                    return
                connection.send(message)
        except ConnectionClosed:
            pass
        except OSError:
            return
        rcvd = connection.protocol.close_rcvd
        with self._lock:
            self.closes.append((rcvd.code, rcvd.reason) if rcvd else (None, None))

    def last(self):
        with self._lock:
            return self.requests[-1] if self.requests else None

    def header(self, name, request=None):
        request = request or self.last()
        values = [v for k, v in request["headers"] if k.lower() == name.lower()]
        return values

    def stop(self):
        self.server.shutdown()
        self._thread.join(5)


# --------------------------------------------------------------------------
# WebSocket client helpers


def open_ws(url, token=None, source="header", headers=None, subprotocols=None, origin=None, **kw):
    """Opens a client connection, putting `token` where `source` says."""
    headers = dict(headers or {})
    if token is not None:
        if source == "header":
            headers["Authorization"] = f"Bearer {token}"
        elif source == "subprotocol":
            subprotocols = ["bearer", token] + list(subprotocols or [])
        elif source.startswith("query:"):
            sep = "&" if "?" in url else "?"
            url = f"{url}{sep}{source.split(':', 1)[1]}={token}"
        elif source.startswith("cookie:"):
            headers["Cookie"] = f"{source.split(':', 1)[1]}={token}"
        else:
            raise ValueError(source)
    kw.setdefault("open_timeout", 10)
    kw.setdefault("close_timeout", 5)
    return ws_connect(
        url,
        additional_headers=headers or None,
        subprotocols=subprotocols,
        origin=origin,
        **kw,
    )


def roundtrip(url, token=None, message="hello", **kw):
    """Connects, sends `message`, returns the echo (and closes)."""
    with open_ws(url, token, **kw) as ws:
        ws.send(message)
        return ws.recv(timeout=10)


def accepted(url, token):
    """Whether `token` opens a session that echoes; False on a 401 (any
    other refusal fails the test)."""
    try:
        return roundtrip(url, token) == "hello"
    except InvalidStatus as e:
        assert e.response.status_code == 401, e.response.status_code
        return False


def refused(url, token=None, **kw):
    """Expects the handshake to be refused; returns (status, headers, body)."""
    try:
        with open_ws(url, token, **kw):
            pass
    except InvalidStatus as e:
        r = e.response
        return r.status_code, r.headers, r.body
    raise AssertionError(f"handshake to {url} was accepted; expected a refusal")


def closed_with(ws, timeout=10.0):
    """Waits for the connection to be closed by the peer; returns (code, reason)."""
    try:
        while True:
            ws.recv(timeout=timeout)
    except ConnectionClosed as e:
        if e.rcvd is None:
            return None, None
        return e.rcvd.code, e.rcvd.reason


# --------------------------------------------------------------------------
# Tokens


HS_SECRET = "wsgate-python-suite-hmac-secret-0123456789abcdef0123456789abcdef"


# The audience every test issuer accepts (`audiences` is required) and every
# token carries unless a test sets its own `aud`.
AUD = "wsgate-python-suite"


def claims(sub="alice", ttl=300, **extra):
    now = int(time.time())
    c = {"sub": sub, "aud": AUD, "iat": now, "exp": now + ttl}
    c.update(extra)
    return c


def mint(payload, key, alg, kid=None, headers=None):
    h = dict(headers or {})
    if kid is not None:
        h["kid"] = kid
    return jwt.encode(payload, key, algorithm=alg, headers=h or None)


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header, payload, signer=None):
    """A JWS built by hand (for tokens no library will produce)."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
    sig = signer(signing_input.encode()) if signer else b""
    return f"{signing_input}.{b64url(sig)}"


def hmac_signer(secret_bytes, digest=hashlib.sha256):
    return lambda data: hmac.new(secret_bytes, data, digest).digest()


# --------------------------------------------------------------------------
# Keys


def gen_key(kind):
    """kind: rsa | ec256 | ec384 | ed25519 → private key object."""
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "ec256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "ec384":
        return ec.generate_private_key(ec.SECP384R1())
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(kind)


def public_pem(private_key):
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def private_pem(private_key):
    return private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def jwk(private_key, kid, alg=None):
    """The public JWK of `private_key`, with `kid` (and `alg` when given)."""
    pub = private_key.public_key()
    if isinstance(pub, rsa.RSAPublicKey):
        d = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(pub))
    elif isinstance(pub, ec.EllipticCurvePublicKey):
        d = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(pub))
    else:
        d = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(pub))
    d["kid"] = kid
    d["use"] = "sig"
    if alg:
        d["alg"] = alg
    return d


# --------------------------------------------------------------------------
# TLS: a throwaway CA and a server certificate for 127.0.0.1


class TestCA:
    def __init__(self, workdir):
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "wsgate test CA")])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        self.ca_path = workdir / "ca.pem"
        self.ca_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

        leaf_key = ec.generate_private_key(ec.SECP256R1())
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(name)
            .public_key(leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
                ),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        self.cert_path = workdir / "server.pem"
        self.key_path = workdir / "server.key"
        self.cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
        self.key_path.write_bytes(private_pem(leaf_key))

    def server_context(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(self.cert_path), str(self.key_path))
        return ctx

    def client_context(self):
        ctx = ssl.create_default_context(cafile=str(self.ca_path))
        return ctx


class DocServer:
    """An HTTP(S) server on 127.0.0.1:0 serving mutable documents.

    `routes[path] = (status, body_bytes_or_obj, headers)`; every GET is
    counted per path in `hits`. `down = True` makes it answer 503 everywhere.
    """

    def __init__(self, tls_context=None):
        self.routes = {}
        self.hits = {}
        self.lock = threading.Lock()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                path = self.path.split("?", 1)[0]
                with owner.lock:
                    owner.hits[path] = owner.hits.get(path, 0) + 1
                    entry = owner.routes.get(path)
                if entry is None:
                    status, body, headers = 404, b"not found", {}
                else:
                    status, body, headers = entry
                if not isinstance(body, (bytes, str)):
                    body = json.dumps(body)
                if isinstance(body, str):
                    body = body.encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.tls = tls_context is not None
        if tls_context is not None:
            self.httpd.socket = tls_context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def base(self):
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def set(self, path, body, status=200, headers=None):
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        with self.lock:
            self.routes[path] = (status, body, h)

    def count(self, path):
        with self.lock:
            return self.hits.get(path, 0)

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)


# --------------------------------------------------------------------------
# Config building


ADMIN_TOKEN = "admin-token-for-python-tests"


def base_config(routes, issuers, token_sources=None, admin=False, **extra):
    cfg = {
        "log": {"level": "info", "format": "text"},
        "listeners": [{"bind": "127.0.0.1:0"}],
        "issuers": issuers,
        "routes": routes,
        "revocation": {"store": "memory"},
        "limits": {"handshake_timeout": "10s", "auth_timeout": "10s", "shutdown_grace": "2s"},
    }
    if token_sources is not None:
        cfg["token_sources"] = token_sources
    if admin:
        # A different loopback address than the listener: see test_startup.py
        # for the case where both use 127.0.0.1:0.
        cfg["admin"] = {"bind": "127.0.0.2:0", "token": ADMIN_TOKEN}
    cfg.update(extra)
    return cfg
