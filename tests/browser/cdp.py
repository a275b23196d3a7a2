"""A minimal headless-Chromium driver over the DevTools protocol, using only
the `websockets` library.

    with Browser(workdir) as browser:
        value = browser.run_page(url, "JSON.stringify(window.__result || null)")

Chromium is started with `--remote-debugging-port=0`; the real port is read
from the `DevToolsActivePort` file it writes into its user-data-dir.
"""

import contextlib
import itertools
import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

from websockets.sync.client import connect

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium():
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    def __init__(self, workdir, binary=None, start_timeout=60.0):
        self.workdir = Path(workdir)
        self.profile = self.workdir / "chromium-profile"
        self.profile.mkdir(parents=True, exist_ok=True)
        self.binary = binary or find_chromium()
        if not self.binary:
            raise RuntimeError("chromium not found")
        self.log_path = self.workdir / "chromium.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--no-first-run",
                "--no-default-browser-check",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                f"--user-data-dir={self.profile}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._ids = itertools.count(1)
        self.ws = None
        self._stack = contextlib.ExitStack()
        try:
            port, path = self._devtools_endpoint(start_timeout)
            self.ws = self._stack.enter_context(
                connect(f"ws://127.0.0.1:{port}{path}", max_size=None, open_timeout=30)
            )
        except BaseException:
            self.close()
            raise

    def _devtools_endpoint(self, timeout):
        marker = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.proc.returncode}: {self.log()}")
            if marker.exists():
                lines = marker.read_text().split("\n")
                if len(lines) >= 2 and lines[0].strip() and lines[1].strip():
                    return int(lines[0]), lines[1].strip()
            time.sleep(0.05)
        raise RuntimeError(f"chromium wrote no DevToolsActivePort within {timeout}s: {self.log()}")

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def call(self, method, params=None, session=None, timeout=30.0):
        """Sends one command and returns its result (events are skipped)."""
        msg_id = next(self._ids)
        msg = {"id": msg_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self.ws.send(json.dumps(msg))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no answer to {method}")
            reply = json.loads(self.ws.recv(timeout=left))
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def run_page(self, url, expression, timeout=30.0):
        """Opens `url` in a new tab and polls `expression` until it yields a
        non-empty value; returns that value, closing the tab."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        try:
            self.call("Page.navigate", {"url": url}, session=session)
            deadline = time.monotonic() + timeout
            while True:
                result = self.call(
                    "Runtime.evaluate",
                    {"expression": expression, "returnByValue": True},
                    session=session,
                )
                value = result.get("result", {}).get("value")
                if value:
                    return value
                if time.monotonic() > deadline:
                    raise TimeoutError(f"page {url} produced no result in {timeout}s")
                time.sleep(0.1)
        finally:
            try:
                self.call("Target.closeTarget", {"targetId": target})
            except Exception:
                pass

    def close(self):
        if self.ws is not None:
            try:
                self.call("Browser.close", timeout=5)
            except Exception:
                pass
            try:
                self._stack.close()
            except Exception:
                pass
            self.ws = None
        if self.proc.poll() is None:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
        self._log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
