"""Parsing with bounds: each document is parsed in a child process limited in time and memory.

Parsers meet hostile input: a 1 MB .docx that inflates to 300 MB parsed for minutes past 3 GB of memory,
and a crash in a format library takes its process with it. So documents are parsed by a long-lived
child process (``python -m rag.sandbox``), one at a time:

- zip-based formats (OOXML, ODF, EPUB) are refused before parsing when their entries inflate past
  ``pipeline.max_inflated_mb`` (read from the zip's directory; nothing is decompressed);
- the child's address space is capped at what it uses once its parsers are imported plus
  ``pipeline.parse_memory_mb``: a document that needs more fails with MemoryError in the child. It
  imports a group of parsers (``rag.parsing.parser_group``) when the first document needing it comes,
  with the cap lifted meanwhile: a text-only corpus never pays unstructured's ~9 s of imports;
- a document not parsed within ``pipeline.parse_timeout`` has its child killed;
- a child that crashes (a segfault in a C library) costs that document only.

Each of these is a ``DocumentError`` naming the bound, so the build quarantines the document with that
reason and goes on; the next document gets a fresh child. The child also dies with its parent
(``PR_SET_PDEATHSIG``) and under a CPU-time limit, so a killed run leaves no parser spinning.
"""

from __future__ import annotations

import atexit
import os
import pickle
import resource
import select
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from rag.config import PipelineSettings
from rag.errors import DocumentError
from rag.models import DocumentRef
from rag.parsing import parser_group
from rag.runtime import die_with_parent

if TYPE_CHECKING:
    from unstructured.documents.elements import Element

#: file types that are zip containers (parsers inflate every entry they read)
ZIP_SUFFIXES = {".docx", ".xlsx", ".pptx", ".docm", ".xlsm", ".pptm", ".odt", ".ods", ".odp", ".epub", ".zip"}
#: seconds a new child may take to import its parsers before the sandbox gives up on it
STARTUP_TIMEOUT = 180.0
_FRAME = struct.Struct("!Q")
#: a parse that failed with its peak address space this close to the cap failed for want of memory
_NEAR_LIMIT = 64 * 1024 * 1024


def check_inflated_size(path: Path, limit_bytes: int) -> None:
    """Refuse a zip-based document whose entries inflate past ``limit_bytes`` (a "zip bomb").

    Reads the zip's central directory only. Not a zip at all is left to the parser to judge.

    Raises:
        DocumentError: the declared inflated size is over the limit, or the entries are unreadable.
    """
    if path.suffix.lower() not in ZIP_SUFFIXES and not _starts_like_zip(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            inflated = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # not a readable zip: the parser gives the precise reason
    if inflated > limit_bytes:
        raise DocumentError(
            "parse",
            f"its zip entries inflate to {inflated / 1e6:.0f} MB, over pipeline.max_inflated_mb "
            f"({limit_bytes / 1e6:.0f} MB): likely a zip bomb; not parsed",
        )


class ParseSandbox:
    """Parses documents in a bounded child process; use as a context manager (or call ``close``).

    Args:
        pipeline: the bounds (``parse_timeout``, ``parse_memory_mb``, ``max_inflated_mb``).
    """

    def __init__(self, pipeline: PipelineSettings) -> None:
        self.timeout = pipeline.parse_timeout.total_seconds()
        self.memory_mb = pipeline.parse_memory_mb
        self.max_inflated = int(pipeline.max_inflated_mb * 1_000_000)
        self.text_parser = pipeline.text_parser
        self._child: subprocess.Popen | None = None
        self._ready = False
        self._warmed: set[str] = set()  # parser groups the child has imported
        self._log: Any = None
        self._turn = threading.Lock()  # one request at a time on the pipe

    def __getstate__(self) -> dict:
        # Sent to a Dask worker: the copy starts its own child there.
        return {**self.__dict__, "_child": None, "_log": None, "_ready": False, "_turn": None, "_warmed": set()}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _turn=threading.Lock())

    def __del__(self) -> None:
        try:
            self._stop()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def __enter__(self) -> ParseSandbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def parse(self, doc: DocumentRef, *, max_bytes: int) -> list[Element]:
        """``rag.parsing.parse_document`` in the child, within the bounds.

        Raises:
            DocumentError: the document is bad, or it broke a bound (the reason names which).
        """
        if doc.path is not None:
            check_inflated_size(doc.path, self.max_inflated)
        with self._turn:
            return self._parse(doc, max_bytes)

    def _parse(self, doc: DocumentRef, max_bytes: int) -> list[Element]:
        child = self._running_child()
        self._warm(child, parser_group(doc.path or doc.doc_id, self.text_parser))
        try:
            _send(child.stdin, ("parse", doc, max_bytes, self.timeout, self.text_parser))
            reply = _receive(child.stdout, time.monotonic() + self.timeout)
        except TimeoutError:
            self._stop()
            raise DocumentError(
                "parse", f"parsing took longer than {self.timeout:.0f}s (pipeline.parse_timeout); not indexed"
            ) from None
        except (EOFError, BrokenPipeError, OSError, pickle.UnpicklingError):
            raise DocumentError("parse", self._death()) from None
        if reply[0] == "ok":
            return reply[1]
        if reply[0] == "memory":  # its heap is in an unknown state: the next document gets a new child
            self._stop()
            raise DocumentError(
                "parse", f"parsing needed more than pipeline.parse_memory_mb ({self.memory_mb} MB); not indexed"
            )
        raise DocumentError(reply[1], reply[2])

    def _warm(self, child: subprocess.Popen, group: str) -> None:
        """Have the child import a group of parsers, on the startup clock rather than a document's
        ``parse_timeout``.

        Raises:
            RuntimeError: it could not (an installation problem, not a document's).
        """
        if group in self._warmed:
            return
        try:
            _send(child.stdin, ("warm", group))
            reply = _receive(child.stdout, time.monotonic() + STARTUP_TIMEOUT)
        except (TimeoutError, EOFError, BrokenPipeError, OSError) as exc:
            reason = self._death() if not isinstance(exc, TimeoutError) else "it took too long"
            self._stop()
            raise RuntimeError(f"the parsing sandbox could not import the {group} parsers: {reason}") from None
        assert reply == ("warm",), reply
        self._warmed.add(group)

    def close(self) -> None:
        """Stop the child (it also exits on its own when this process ends)."""
        self._stop()

    def start(self, groups: Iterable[str] = ()) -> None:
        """Start the child now, without waiting for it: it imports the parsers of ``groups`` (see
        ``rag.parsing.parser_group``) while this process does other work. ``parse`` starts it anyway
        if needed, and has it import any other group when a document needs it."""
        if self._child is not None and self._child.poll() is None:
            return
        self._stop()
        self._log = tempfile.TemporaryFile()  # the child's stderr, for a crash's last words
        self._warmed = set(groups)
        self._child = subprocess.Popen(
            [sys.executable, "-m", "rag.sandbox", str(self.memory_mb), *sorted(self._warmed)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
            env={**os.environ, "MALLOC_ARENA_MAX": "2"},  # per-thread arenas would eat the address space
        )
        self._ready = False

    def _running_child(self) -> subprocess.Popen:
        """The child, started and ready.

        Raises:
            RuntimeError: it cannot start at all (an installation problem, not a document's).
        """
        self.start()
        if not self._ready:
            try:
                ready = _receive(self._child.stdout, time.monotonic() + STARTUP_TIMEOUT)
            except (TimeoutError, EOFError, OSError) as exc:
                reason = self._death() if not isinstance(exc, TimeoutError) else "it did not start in time"
                self._stop()
                raise RuntimeError(f"cannot start the parsing sandbox (python -m rag.sandbox): {reason}") from None
            assert ready == ("ready",), ready
            self._ready = True
        return self._child

    def _death(self) -> str:
        """Why the child stopped answering, as a quarantine reason."""
        child = self._child
        code = child.wait(timeout=10) if child is not None else None
        tail = self._stderr_tail()
        self._stop()
        if code is not None and code < 0:
            name = signal.Signals(-code).name
            why = {"SIGKILL": "killed (out of memory, or by someone)", "SIGXCPU": "out of CPU time"}.get(
                name, "crashed")
            return f"the parser {why} ({name}) on this document; not indexed" + (f": {tail}" if tail else "")
        return f"the parser exited with code {code} on this document; not indexed" + (f": {tail}" if tail else "")

    def _stderr_tail(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        lines = [line for line in self._log.read().decode("utf-8", "replace").splitlines() if line.strip()]
        return lines[-1][:200] if lines else ""

    def _stop(self) -> None:
        if self._child is not None:
            if self._child.poll() is None:
                self._child.kill()
            self._child.wait()
            for stream in (self._child.stdin, self._child.stdout):
                if stream is not None:
                    stream.close()
            self._child = None
        if self._log is not None:
            self._log.close()
            self._log = None


_SHARED: dict[tuple, ParseSandbox] = {}


def shared_sandbox(pipeline: PipelineSettings) -> ParseSandbox:
    """This process's sandbox for these bounds, kept for later runs in the same process.

    A child's imports cost up to ~9 s (unstructured's parsers, spaCy, torch); a process that runs many
    builds (tests, an application calling the flow) pays them once. Closed when the process exits.
    """
    key = (pipeline.parse_timeout, pipeline.parse_memory_mb, pipeline.max_inflated_mb, pipeline.text_parser)
    if key not in _SHARED:
        if not _SHARED:
            atexit.register(lambda: [sandbox.close() for sandbox in _SHARED.values()])
        _SHARED[key] = ParseSandbox(pipeline)
    return _SHARED[key]


def _send(stream, message: object) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_FRAME.pack(len(data)) + data)
    stream.flush()


def _receive(stream, deadline: float | None) -> Any:
    header = _read_exactly(stream, _FRAME.size, deadline)
    return pickle.loads(_read_exactly(stream, _FRAME.unpack(header)[0], deadline))


def _read_exactly(stream, size: int, deadline: float | None) -> bytes:
    chunks, left = [], size
    fd = stream.fileno()
    while left:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise TimeoutError
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _starts_like_zip(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == b"PK\x03\x04"
    except OSError:
        return False


# --- the child ------------------------------------------------------------------------------------


def _child_main(memory_mb: int, groups: list[str]) -> None:
    """Serve parse requests on stdin/stdout until stdin closes."""
    die_with_parent()
    # A terminal's Ctrl-C reaches every process of the command's group: the command decides what stops
    # (this child ends with its stdin); a child that died of it would fail the document it was parsing.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    requests, replies = sys.stdin.buffer, os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything a library prints goes to stderr, never into the replies
    from rag.parsing import parse_document, warm_up

    for group in groups:  # imported before the cap, so that it is headroom for documents only
        warm_up(group)
    limit = _cap_memory(memory_mb)
    _send(replies, ("ready",))
    while True:
        try:
            kind, *request = _receive(requests, None)
        except EOFError:
            return
        if kind == "warm":
            _uncap_memory()  # imports are not a document's doing
            _cap_cpu(STARTUP_TIMEOUT)
            warm_up(request[0])
            limit = _cap_memory(memory_mb)
            _send(replies, ("warm",))
            continue
        doc, max_bytes, timeout, text_parser = request
        _cap_cpu(timeout)
        try:
            _send(replies, ("ok", parse_document(doc, max_bytes=max_bytes, text_parser=text_parser)))
        except MemoryError:
            _send(replies, ("memory",))
            return
        except DocumentError as exc:
            # C parsers (lxml, pdfium) report a failed allocation as some other error: the peak tells.
            if exc.reason.startswith("MemoryError") or _peak_bytes() > limit - _NEAR_LIMIT:
                _send(replies, ("memory",))
                return
            _send(replies, ("error", exc.stage, exc.reason))


def _cap_memory(memory_mb: int) -> int:
    """Limit the address space to what is mapped now plus ``memory_mb``; returns the limit in bytes.

    The soft limit only: the child lifts it itself to import more parsers (``_uncap_memory``); a
    document cannot make it do so.
    """
    limit = _status_bytes("VmSize") + memory_mb * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
    return limit


def _uncap_memory() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (hard, hard))


def _cap_cpu(timeout: float) -> None:
    """CPU seconds for the next document: used so far plus the timeout (SIGXCPU past it). Guards the
    case where nobody is left to enforce the wall-clock timeout."""
    used = resource.getrusage(resource.RUSAGE_SELF)
    spent = used.ru_utime + used.ru_stime
    soft = int(spent + timeout + 5)
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    resource.setrlimit(resource.RLIMIT_CPU, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))


def _peak_bytes() -> int:
    return _status_bytes("VmPeak")


def _status_bytes(field: str) -> int:
    """A size from /proc/self/status (VmSize, VmPeak) in bytes."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 2 * 1024**3  # no /proc: assume a warmed-up parser's typical size


if __name__ == "__main__":
    _child_main(int(sys.argv[1]), sys.argv[2:])
