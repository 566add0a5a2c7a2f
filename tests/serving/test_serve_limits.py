"""What a hostile or broken client may cost `ragops serve`: a real server on 127.0.0.1, real sockets.

Bodies are bounded and read only once the key is admitted, headers are bounded, a client that sends its
request too slowly is answered 408 and disconnected, and connections are bounded per client address and
in total, while a normal client goes on getting answers (docs/serving.md, "Limits").
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx
import pytest
import yaml

from rag.serving.auth import hash_key
from testkit.helpers import free_port, wait_ready
from testkit.paths import DEMO_CORPUS

pytestmark = pytest.mark.slow

RAGOPS = str(Path(sys.executable).parent / "ragops")
KEY = "rk_test_key_for_limits"
QUESTION = "how do I undo a bad promotion?"
#: the served settings: a body holds at most 4 x 600 x 6 + 64 KiB = 79,936 bytes
LIMITS = {"max_query_chars": 600, "max_batch": 4, "max_connections": 40, "max_connections_per_client": 8,
          "max_header_bytes": 16384, "header_timeout": 300}
BODY_LIMIT = 4 * 600 * 6 + 64 * 1024
MB = 1 << 20


@contextmanager
def _serving(root: Path, config: dict, *, ready: bool = True) -> Iterator[dict]:
    """``ragops serve`` on ``config`` once it answers (``ready``: once its build is loaded): its URL, port and
    process id (one worker: the server is that process)."""
    path = root / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen([RAGOPS, "serve", "--config", str(path), "--port", str(port)],
                               env={**os.environ, "PREFECT_HOME": str(root / "prefect")},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = wait_ready(port, process, timeout=240, route="/v1/readyz" if ready else "/v1/healthz")
        yield {"url": url, "port": port, "pid": process.pid}
    finally:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, prefect_harness):
    """One build of the demo corpus served with a key and small limits."""
    from flows.reindex import reindex

    root = tmp_path_factory.mktemp("limits")
    corpus = root / "corpus"
    shutil.copytree(DEMO_CORPUS, corpus)
    config = {"alias": "docs", "sources": [{"path": str(corpus), "name": "demo"}],
              "store": {"location": str(root / "store")}, "chunking": {"max_tokens": 96},
              "serve": {**LIMITS, "api_keys": [{"id": "app", "sha256": hash_key(KEY)}]}}
    (root / "build.yaml").write_text(yaml.safe_dump(config))
    reindex(config=str(root / "build.yaml"))
    with _serving(root, config) as server:
        yield server


@pytest.fixture(scope="module")
def impatient(tmp_path_factory: pytest.TempPathFactory):
    """A server that gives clients one second for their headers and one for their body (no store: these
    bounds hold before the service is ready)."""
    root = tmp_path_factory.mktemp("impatient")
    config = {"alias": "docs", "store": {"location": str(root / "no-store")},
              "serve": {"header_timeout": 1, "body_timeout": 1, "api_keys": [{"id": "app", "sha256": hash_key(KEY)}]}}
    with _serving(root, config, ready=False) as server:
        yield server


def _connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    """A connection from ``source`` (any 127.x.y.z address reaches the server: another client address)."""
    sock = socket.socket()
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    sock.settimeout(60)
    return sock


def _response(sock: socket.socket) -> bytes:
    """One response: its head and its body (b"" when the server closes without answering)."""
    received = b""
    while True:
        head, _, body = received.partition(b"\r\n\r\n")
        if _ and len(body) >= int(re.search(rb"content-length: *(\d+)", head, re.I).group(1)):
            return received
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:  # what came before the reset is the answer
            return received
        if not chunk:
            return received
        received += chunk


def _status_and_kind(response: bytes) -> tuple[int, str]:
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, httpx.Response(status, content=body).json()["error"]["kind"]


def _held_connections(port: int) -> int:
    """Client connections the server on ``port`` holds open (established, or closed by the client but not
    yet by the server), from the kernel's table."""
    held = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if int(local.split(":")[1], 16) == port and state in ("01", "08"):  # ESTABLISHED, CLOSE_WAIT
            held += 1
    return held


def _peak_rss(pid: int) -> int:
    """The server's peak resident memory so far, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def _upload(port: int, head: bytes, total: int) -> tuple[bytes, int]:
    """Send ``head`` then a chunked body of ``total`` bytes (1 MB chunks) while reading the answer; stop
    sending once the server closes. The answer and the bytes of body sent."""
    sock = _connect(port)
    sock.sendall(head + b"transfer-encoding: chunked\r\n\r\n")
    sent = [0]

    def send() -> None:
        chunk = b"%x\r\n%s\r\n" % (MB, b"a" * MB)
        try:
            while sent[0] < total:
                sock.sendall(chunk)
                sent[0] += MB
            sock.sendall(b"0\r\n\r\n")
        except OSError:  # the server closed the connection: what it wanted to say is already sent
            pass

    sender = threading.Thread(target=send)
    sender.start()
    try:
        answer = _response(sock)
    finally:
        sender.join(timeout=120)
        sock.close()
    return answer, sent[0]


def test_a_keyless_chunked_body_is_refused_before_it_is_read(served) -> None:
    """A client without a key used to make the server read its whole body (5.3 GB until the OOM killer
    came): it is answered 401 once its headers are in, and the server does not grow."""
    before = _peak_rss(served["pid"])
    head = b"POST /v1/search HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
    answer, sent = _upload(served["port"], head, 128 * MB)
    assert _status_and_kind(answer) == (401, "unauthorized"), answer[:300]
    assert b"connection: close" in answer.lower()
    grown = _peak_rss(served["pid"]) - before
    assert grown < 32 * MB, f"the server grew {grown / MB:.0f} MB while {sent / MB:.0f} MB were sent"


def test_a_body_over_the_bound_is_a_413_even_with_a_key(served) -> None:
    url, headers = served["url"], {"X-API-Key": KEY}
    declared = httpx.post(f"{url}/v1/search", headers=headers, json={"query": "x" * BODY_LIMIT})
    assert declared.status_code == 413, declared.text
    assert declared.json() == {"error": {"kind": "too_large", "message": declared.json()["error"]["message"]}}
    assert f"{BODY_LIMIT} bytes (serve.max_body_bytes)" in declared.json()["error"]["message"]
    batch = httpx.post(f"{url}/v1/search/batch", headers=headers, json={"queries": ["x" * BODY_LIMIT]})
    assert batch.status_code == 413, batch.text

    before = _peak_rss(served["pid"])
    head = f"POST /v1/search HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-api-key: {KEY}\r\n".encode()
    answer, sent = _upload(served["port"], head, 128 * MB)
    assert _status_and_kind(answer) == (413, "too_large"), answer[:300]
    grown = _peak_rss(served["pid"]) - before
    assert grown < 32 * MB, f"the server grew {grown / MB:.0f} MB while {sent / MB:.0f} MB were sent"

    # The largest legal request still fits: a full batch of the longest queries, every character escaped.
    legal = '{"queries": [%s], "k": 3}' % ", ".join(['"' + "\\u00e9" * 600 + '"'] * 4)
    answer = httpx.post(f"{url}/v1/search/batch", headers={**headers, "content-type": "application/json"},
                        content=legal.encode(), timeout=120)
    assert answer.status_code == 200, answer.text


def test_headers_over_the_bound_are_a_431(served) -> None:
    sock = _connect(served["port"])
    try:
        sock.sendall(b"GET /v1/healthz HTTP/1.1\r\nhost: x\r\nx-padding: " + b"a" * MB)
    except OSError:
        pass  # closed while sending: the answer is waiting
    assert _status_and_kind(_response(sock)) == (431, "too_large")
    sock.close()


def test_one_client_address_holds_at_most_its_share_of_connections(served) -> None:
    """Eight kept-alive connections from 127.0.0.2 (serve.max_connections_per_client): a ninth from it is
    answered 503 and closed, while another address is answered as usual. WebSocket upgrades before them
    (no route takes one) leave nothing counted."""
    for _ in range(8):
        upgrade = _connect(served["port"], "127.0.0.2")
        upgrade.sendall(b"GET /v1/healthz HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n"
                        b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n")
        upgrade.recv(65536)
        upgrade.close()
    _no_connections_left(served["port"])
    held = [_connect(served["port"], "127.0.0.2") for _ in range(8)]
    try:
        for sock in held:
            sock.sendall(b"GET /v1/healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        ninth = _connect(served["port"], "127.0.0.2")
        ninth.sendall(b"GET /v1/healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        assert _status_and_kind(_response(ninth)) == (503, "busy")
        ninth.close()
        answer = httpx.post(f"{served['url']}/v1/search", headers={"X-API-Key": KEY}, json={"query": QUESTION})
        assert answer.status_code == 200 and answer.json()["hits"], answer.text
    finally:
        for sock in held:
            sock.close()


def _no_connections_left(port: int) -> None:
    """Wait until the server has closed the connections of the tests before."""
    deadline = time.monotonic() + 60
    while _held_connections(port) and time.monotonic() < deadline:
        time.sleep(0.1)


def test_clients_holding_partial_headers_cannot_lock_others_out(served) -> None:
    """Forty-eight connections hold a half-sent request (from six addresses, eight each: within the
    per-address bound) on a server that holds 40: the oldest are answered 503 and closed as new ones
    come, and a normal client is answered."""
    _no_connections_left(served["port"])
    slow = []
    try:
        for address in ("127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6", "127.0.0.7", "127.0.0.8"):
            for _ in range(8):
                sock = _connect(served["port"], address)
                sock.sendall(b"POST /v1/search HTTP/1.1\r\nhost: x\r\n")
                slow.append(sock)
        with httpx.Client(headers={"X-API-Key": KEY}, timeout=60) as client:
            for _ in range(3):
                answer = client.post(f"{served['url']}/v1/search", json={"query": QUESTION})
                assert answer.status_code == 200 and answer.json()["hits"], answer.text
        assert _held_connections(served["port"]) <= LIMITS["max_connections"]
        evicted = 48 + 1 - LIMITS["max_connections"]  # the normal client's connection took one more place
        for sock in slow[:evicted]:
            assert _status_and_kind(_response(sock)) == (503, "busy")
        slow[-1].settimeout(0.5)
        with pytest.raises(TimeoutError):  # the youngest still waits for the rest of its headers
            slow[-1].recv(1)
    finally:
        for sock in slow:
            sock.close()


def test_bodies_held_at_once_are_bounded(served) -> None:
    """Thirty-three clients with a key each send most of a body of nearly the bound and stop: the worker
    holds 32 bodies' worth at most, so one of them is answered 503 at once; the others wait for the rest
    of their body until serve.body_timeout (30 s), then get 408. Afterwards a search is answered."""
    _no_connections_left(served["port"])
    size = BODY_LIMIT - 1000
    head = (f"POST /v1/search HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-api-key: {KEY}\r\n"
            f"content-length: {size}\r\n\r\n").encode()
    clients = []
    try:
        for index in range(33):
            sock = _connect(served["port"], f"127.0.1.{index // 8 + 1}")
            sock.sendall(head + b"a" * (size - 1000))
            clients.append(sock)
        answers = sorted(_status_and_kind(_response(sock)) for sock in clients)
    finally:
        for sock in clients:
            sock.close()
    assert answers == [(408, "timeout")] * 32 + [(503, "busy")], answers
    answer = httpx.post(f"{served['url']}/v1/search", headers={"X-API-Key": KEY}, json={"query": QUESTION})
    assert answer.status_code == 200 and answer.json()["hits"], answer.text


def test_a_client_holding_partial_headers_is_disconnected(impatient) -> None:
    sock = _connect(impatient["port"])
    sock.sendall(b"POST /v1/search HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n")
    assert _status_and_kind(_response(sock)) == (408, "timeout")
    sock.close()
    silent = _connect(impatient["port"])  # connects and sends nothing
    assert _response(silent) == b""
    silent.close()


def test_a_client_sending_its_body_too_slowly_is_answered_408(impatient) -> None:
    sock = _connect(impatient["port"])
    sock.sendall(f"POST /v1/search HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-api-key: {KEY}\r\n"
                 "content-length: 100\r\n\r\n{\"query\": ".encode())
    assert _status_and_kind(_response(sock)) == (408, "timeout")
    sock.close()


def test_no_more_connections_are_promised_than_descriptors_allow() -> None:
    """Past the open-file limit a worker could not accept at all: serve.max_connections is held under it."""
    import resource

    from rag.config import ServeSettings
    from rag.serving.limits import RESERVED_DESCRIPTORS, connection_limits

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        pytest.skip("no open-file limit here")
    limits, note = connection_limits(ServeSettings(max_connections=1_000_000))
    assert limits.max_connections == soft - RESERVED_DESCRIPTORS and "ulimit -n" in note
    assert connection_limits(ServeSettings()) == (limits, None)
    assert connection_limits(ServeSettings(max_connections=8))[0].max_connections == 8
