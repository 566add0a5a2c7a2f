"""An HTTP proxy in front of a real S3 server that injects faults on a script: 503 SlowDown, 500
InternalError, or no answer at all (a read timeout). Shared by tests/scenarios/test_faults.py and bench/faults.py."""

from __future__ import annotations

import http.client
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import urlsplit

#: fault kinds, and the S3 error body of each HTTP one
ERRORS = {
    "503": (503, b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"),
    "500": (500, b"<Error><Code>InternalError</Code><Message>We encountered an internal error.</Message></Error>"),
}
#: a request that gets a "timeout" is held this long with no answer (set the client's read timeout lower)
HOLD_SECONDS = 3.0

Script = Callable[[int, str, str], str]  # (request number from 1, method, path) -> "pass" | "503" | "500" | "timeout"


def every_nth(n: int, kinds: tuple[str, ...] = ("503", "500", "timeout")) -> Script:
    """Every n-th request fails, cycling through ``kinds``."""
    def script(number: int, method: str, path: str) -> str:
        return kinds[(number // n) % len(kinds)] if number % n == 0 else "pass"
    return script


class FaultProxy:
    """Forwards to ``upstream`` (http://host:port) except where ``script`` says to fail; counts what it did."""

    def __init__(self, upstream: str, script: Script):
        self.upstream, self.script = urlsplit(upstream).netloc, script
        self.lock, self.requests, self.injected = threading.Lock(), 0, {"503": 0, "500": 0, "timeout": 0}
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                with proxy.lock:
                    proxy.requests += 1
                    action = proxy.script(proxy.requests, self.command, self.path)
                    if action != "pass":
                        proxy.injected[action] += 1
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if action == "timeout":
                    time.sleep(HOLD_SECONDS)
                    self.close_connection = True
                    return
                if action in ERRORS:
                    status, payload = ERRORS[action]
                    self.send_response(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                upstream = http.client.HTTPConnection(proxy.upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection",)}
                upstream.request(self.command, self.path, body=body, headers=headers)
                answer = upstream.getresponse()
                data = answer.read()
                self.send_response(answer.status)
                dropped = ("transfer-encoding", "connection") + (() if self.command == "HEAD" else ("content-length",))
                for key, value in answer.getheaders():
                    if key.lower() not in dropped:
                        self.send_header(key, value)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                upstream.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _any

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FaultProxy:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
