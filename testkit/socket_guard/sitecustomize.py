"""A socket guard for every Python process a test starts (on ``PYTHONPATH``, Python imports this at
startup): each connection or name lookup that leaves the machine is refused and written, one JSON line
per attempt with the process and a short stack, to the file named by ``SOCKET_GUARD_LOG``.

Loopback (127.0.0.0/8, ::1, localhost) and Unix sockets pass: the Prefect API, the query service and
the S3 test server listen there. tests/scenarios/test_offline.py reads the file.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import sys
import traceback

_LOG = os.environ.get("SOCKET_GUARD_LOG")
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", ""}


def _is_local(host: object) -> bool:
    if host is None:
        return True
    text = host.decode() if isinstance(host, bytes) else str(host)
    if text.lower() in _LOCAL_NAMES:
        return True
    try:
        address = ipaddress.ip_address(text.split("%")[0])
    except ValueError:
        return False  # a name that is not localhost: resolving it is already a network request
    return address.is_loopback or address.is_unspecified


def _is_address(host: object) -> bool:
    try:
        ipaddress.ip_address((host.decode() if isinstance(host, bytes) else str(host)).split("%")[0])
    except ValueError:
        return False
    return True


def _command_line() -> list[str]:
    # sys.argv is not set yet when this runs (``-m module`` shows as "-m"): ask the kernel.
    try:
        with open("/proc/self/cmdline", "rb") as handle:
            return [part.decode(errors="replace") for part in handle.read().split(b"\0")[:6]]
    except OSError:
        return list(sys.argv[:4])


def _write(record: dict) -> None:
    with open(_LOG, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"pid": os.getpid(), **record}) + "\n")


def _refuse(what: str, target: object) -> None:
    _write({"what": what, "target": repr(target), "stack": traceback.format_stack(limit=8)[:-2]})
    raise OSError(f"outbound network blocked by the test suite's socket guard: {what} {target!r}")


def _install() -> None:
    original_connect, original_connect_ex = socket.socket.connect, socket.socket.connect_ex
    original_getaddrinfo = socket.getaddrinfo

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address[0]):
            _refuse("connect", address)
        return original_connect(self, address)

    def connect_ex(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address[0]):
            _refuse("connect", address)
        return original_connect_ex(self, address)

    def getaddrinfo(host, *args, **kwargs):
        if not _is_local(host) and not _is_address(host):  # a numeric address resolves without asking anyone
            _refuse("getaddrinfo", host)
        return original_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo


if _LOG:
    _install()
    _write({"what": "guarded", "argv": _command_line()})  # which processes ran under the guard
