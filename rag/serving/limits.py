"""What a client may cost the query service: bounds on request sizes, on the time to send a request, and on
connections (``serve.max_body_bytes``, ``max_header_bytes``, ``header_timeout``, ``body_timeout``,
``max_connections``, ``max_connections_per_client``).

Two layers, because uvicorn bounds none of these:

- ``LimitedHttpToolsProtocol``, uvicorn's httptools protocol with the connection-level bounds: the request
  line and headers must arrive within ``header_timeout`` and ``max_header_bytes`` (httptools buffers a
  header however long it is: a 300 MB header grew uvicorn by 540 MB), and connections are counted, in total and per
  client address. At the total bound a new connection closes the connection that has waited longest on
  its client (still sending its request, or idle between requests), so clients that hold connections
  open without finishing a request cannot lock the others out, and the worker never runs out of file
  descriptors (an ``accept`` that fails leaves every new client waiting).
- ``BodyGuard``, an ASGI middleware in front of every route: the key is checked before a body is read,
  and the body is read up to ``max_body_bytes`` within ``body_timeout``, then handed on whole.

Refusals are in the service's one error shape, ``{"error": {"kind", "message"}}``, with
``Connection: close``: the rest of what the client sends is never read.
"""

from __future__ import annotations

import asyncio
import json
import resource
import weakref
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Callable

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from rag.config import ServeSettings

#: descriptors kept free of client connections: the store's files, the model, the catalog, logs, pipes
RESERVED_DESCRIPTORS = 128
#: request bodies (of serve.max_body_bytes each) a worker holds at once, from their first byte to their answer
BODIES_AT_ONCE = 32


@dataclass(frozen=True)
class ConnectionLimits:
    """The connection-level bounds one worker applies (picklable: uvicorn hands it to each worker)."""

    header_timeout: float
    max_header_bytes: int
    max_connections: int
    max_connections_per_client: int | None


def descriptor_room() -> int:
    """Client connections this process can hold: its open-file limit (soft) less the reserved descriptors."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1_000_000
    return max(8, soft - RESERVED_DESCRIPTORS)


def connection_limits(serve: ServeSettings) -> tuple[ConnectionLimits, str | None]:
    """The bounds for ``serve``, and a note when ``max_connections`` was lowered to what descriptors allow."""
    room = descriptor_room()
    bound, note = serve.max_connections or room, None
    if bound > room:
        note = (f"serve.max_connections {bound} is more than the open-file limit allows (ulimit -n, less "
                f"{RESERVED_DESCRIPTORS} for the store and the model): holding at most {room} connections; "
                "raise ulimit -n for more")
        bound = room
    return ConnectionLimits(serve.header_timeout, serve.max_header_bytes, bound, serve.max_connections_per_client), note


def error_bytes(status: int, kind: str, message: str) -> bytes:
    """A whole HTTP response in the service's error shape that closes the connection."""
    body = json.dumps({"error": {"kind": kind, "message": message}}, separators=(",", ":")).encode()
    return b"".join([STATUS_LINE[status], b"content-type: application/json\r\n",
                     b"content-length: %d\r\n" % len(body), b"connection: close\r\n\r\n", body])


class _Connections:
    """One server's open connections: how many, per client address, and those waiting on their client, the
    one that has waited longest first."""

    def __init__(self) -> None:
        self.open = 0
        self.per_client: Counter[str] = Counter()
        self.waiting: OrderedDict[LimitedHttpToolsProtocol, None] = OrderedDict()


_servers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # uvicorn's ServerState -> _Connections


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with the connection-level bounds of ``limits``.

    uvicorn builds one per connection: ``functools.partial(LimitedHttpToolsProtocol, limits=...)`` is what
    ``uvicorn.run(http=...)`` takes.
    """

    def __init__(self, config, server_state, app_state, _loop=None, *, limits: ConnectionLimits) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        self.counted = self.in_headers = False
        self.header_bytes = 0
        self.header_timer: asyncio.TimerHandle | None = None
        state = _servers.get(server_state)
        if state is None:
            state = _servers[server_state] = _Connections()
        self.state: _Connections = state

    @property
    def address(self) -> str:
        return self.client[0] if self.client else ""

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        limits, state = self.limits, self.state
        per_client = limits.max_connections_per_client
        if per_client is not None and state.per_client[self.address] >= per_client:
            self.refuse(503, "busy", f"this address holds {per_client} connections already, the most one client "
                        "may (serve.max_connections_per_client): reuse them, or wait for one to close")
            return
        if state.open >= limits.max_connections and not self._evict_longest_waiting():
            self.refuse(503, "busy", f"the service holds {limits.max_connections} connections, all of them being "
                        "answered (serve.max_connections): retry in a moment")
            return
        self.counted = True
        state.open += 1
        state.per_client[self.address] += 1
        self._wait_on_client()
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        if self.counted:
            self.counted = False
            state = self.state
            state.open -= 1
            state.per_client[self.address] -= 1
            if state.per_client[self.address] <= 0:
                del state.per_client[self.address]
            state.waiting.pop(self, None)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.in_headers and not self.transport.is_closing():
            # Bytes that arrived while the headers were incomplete; a packet that also ends the previous
            # request's body counts whole, which only a pipelining client sending large bodies can notice.
            self.header_bytes += len(data)
            if self.header_bytes > self.limits.max_header_bytes:
                self.refuse(431, "too_large", f"the request line and headers are over "
                            f"{self.limits.max_header_bytes} bytes (serve.max_header_bytes)")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.in_headers, self.header_bytes = True, 0
        if self.header_timer is None:  # a request on a kept-alive connection: the keep-alive timer stopped
            self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self.in_headers = False
        self._disarm_header_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.state.waiting.pop(self, None)  # the whole request is in: being answered, not waiting on the client

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.counted and not self.transport.is_closing() and self.cycle.response_complete:
            self._wait_on_client()  # idle until the next request (none pipelined behind it)

    def refuse(self, status: int, kind: str, message: str) -> None:
        """Answer ``status`` in the error shape and close the connection, reading nothing more."""
        self._disarm_header_timer()
        if not self.transport.is_closing():
            self.transport.write(error_bytes(status, kind, message))
            self.transport.close()

    def _wait_on_client(self) -> None:
        self.state.waiting[self] = None
        self.state.waiting.move_to_end(self)

    def _evict_longest_waiting(self) -> bool:
        """Close the connection that has waited longest on its client, for this new one; False if none waits."""
        waiting = self.state.waiting
        while waiting:
            victim, _ = waiting.popitem(last=False)
            if victim.transport.is_closing():
                continue
            if victim.in_headers or (victim.cycle is not None and not victim.cycle.response_complete):
                victim.refuse(503, "busy", f"the service holds {self.limits.max_connections} connections "
                              "(serve.max_connections) and this one waited longest for its request: retry")
            else:  # idle between requests: closed as the keep-alive timeout would
                victim._disarm_header_timer()
                victim.transport.close()
            return True
        return False

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self.header_timer = self.loop.call_later(self.limits.header_timeout, self._headers_too_slow)

    def _disarm_header_timer(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def _headers_too_slow(self) -> None:
        self.header_timer = None
        if self.transport.is_closing():
            return
        if not self.in_headers:  # nothing of a request sent: nobody to answer
            self.transport.close()
            return
        self.refuse(408, "timeout", f"the request's line and headers took over {self.limits.header_timeout:g} s "
                    "(serve.header_timeout)")


class BodyGuard:
    """The body of every request, bounded: the key checked before it is read (``refuse_early``), at most
    ``limit`` bytes read, within ``timeout`` seconds; the app then gets it whole. Bodies held at once, from
    their first byte until their answer, take at most ``BODIES_AT_ONCE`` x ``limit`` bytes together: past
    that, 503 (clients with large bodies cannot make the worker hold one per connection).

    ``refuse_early(scope, headers)`` returns the response for a request the route would refuse before
    reading its body (a missing or refused key), or None. ``error(status, kind, message)`` builds an error
    response (and counts it).
    """

    def __init__(self, app, *, limit: int, timeout: float, refuse_early: Callable, error: Callable) -> None:
        self.app, self.limit, self.timeout = app, limit, timeout
        self.refuse_early, self.error = refuse_early, error
        self.budget, self.held = BODIES_AT_ONCE * limit, 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name, value)
        declared = headers.get(b"content-length")
        if (declared is None or declared.strip() == b"0") and b"transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # no body
            return
        response = self.refuse_early(scope, headers)
        if response is None and declared is not None and int(declared) > self.limit:  # httptools checked it
            response = self._too_large()
        if response is not None:
            await self._closing(response)(scope, receive, send)
            return
        held = [0]  # what this request adds to self.held
        try:
            try:
                async with asyncio.timeout(self.timeout):
                    body, response = await self._read(receive, held)
            except TimeoutError:
                body, response = None, self.error(408, "timeout", f"the request body took over {self.timeout:g} s "
                                                  "(serve.body_timeout)")
            if response is not None:
                self.held -= held[0]  # before answering: a body refused holds nothing while it is
                held[0] = 0
                await self._closing(response)(scope, receive, send)
            elif body is not None:  # None: the client went away, nobody to answer
                await self.app(scope, replay(body, receive), send)
        finally:
            self.held -= held[0]

    async def _read(self, receive, held: list[int]) -> tuple[bytes | None, object | None]:
        """The body, or the response refusing it (over the limit, or over the budget of bodies at once)."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None, None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                return None, self._too_large()
            if self.held + len(chunk) > self.budget:
                return None, self.error(503, "busy", f"the service holds {BODIES_AT_ONCE} bodies' worth of large "
                                        "requests already: retry in a moment")
            self.held += len(chunk)
            held[0] += len(chunk)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), None

    def _too_large(self):
        return self.error(413, "too_large", f"the request body is over {self.limit} bytes (serve.max_body_bytes): "
                          f"send fewer or shorter queries")

    @staticmethod
    def _closing(response):
        # What the client sends after this is never read: the connection closes once it is answered.
        response.headers["connection"] = "close"
        return response


def replay(body: bytes, receive) -> Callable:
    """A receive channel that gives ``body`` whole, then what ``receive`` gives (a disconnect)."""
    return replay_message({"type": "http.request", "body": body, "more_body": False}, receive)


def replay_message(first: dict, receive) -> Callable:
    """A receive channel that gives ``first``, then what ``receive`` gives."""
    sent = False

    async def replayed():
        nonlocal sent
        if not sent:
            sent = True
            return first
        return await receive()

    return replayed
