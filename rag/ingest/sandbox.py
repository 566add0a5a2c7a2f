"""Parsing with bounds: each document is parsed, and cut into sections, in a child process limited in
time and memory.

Parsers meet hostile input: a 1 MB .docx that inflates to 300 MB parsed for minutes past 3 GB of memory,
and a crash in a format library takes its process with it. So documents are parsed by a long-lived
child process (``python -m rag.ingest.sandbox``), one at a time. The same child cuts each parsed document into
sections (``rag.ingest.chunking.title_sections``), within the same bounds: that work grows with the document too.

- zip-based formats (OOXML, ODF, EPUB) are refused before parsing when their entries inflate past
  ``pipeline.max_inflated_mb`` (read from the zip's directory; nothing is decompressed);
- the child's address space is capped at what it uses once its parsers are imported plus
  ``pipeline.parse_memory_mb``: a document that needs more fails with MemoryError in the child. It
  imports a group of parsers (``rag.ingest.parsing.parser_group``) when the first document needing it comes,
  with the cap lifted meanwhile: a text-only corpus never pays unstructured's ~9 s of imports;
- a document whose parse uses more than ``pipeline.parse_timeout`` of CPU time (the child's and its
  subprocesses', such as pandoc's) has its child killed ("timeout");
- so does one whose parse gets less CPU than that in ``STALL_FACTOR`` times as long ("stalled"): on a
  busy machine a parse can wait for a CPU far longer than it runs, and a stopped or blocked parser uses
  none. Wall time alone would blame the document for the machine's load;
- a child that crashes (a segfault in a C library) costs that document only;
- a child that cannot start, or cannot import a group of parsers, within ``STARTUP_TIMEOUT`` of CPU time
  (and ``STALL_FACTOR`` times as long) is started again; when ``START_ATTEMPTS`` starts failed, the
  document fails with kind "sandbox" (not its doing: a later run parses it again, as after a timeout),
  and the build fails the rest of its batch the same way without trying again (rag/index/build.py).

Each of these is a ``DocumentError`` naming the bound and its kind (``rag.models.FailureKind``), so the
build quarantines the document with that reason and goes on; the next document gets a fresh child. A
timeout or a stall is not a property of the document: a later run parses it again (rag/index/build.py). The
child runs in a process group of its own, killed whole, so that a subprocess it started (pandoc) stops
with it; when its parent dies (a killed run) it is told (``PR_SET_PDEATHSIG``, SIGTERM) and kills its
group itself, and a CPU-time limit of its own stops it should nobody be left to. So a killed run leaves
no parser spinning.
"""

from __future__ import annotations

import atexit
import logging
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
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from rag.config import PipelineSettings
from rag.errors import DocumentError
from rag.ingest.chunking import Section, SectionOptions
from rag.ingest.parsing import parser_group
from rag.models import DocumentRef
from rag.runtime import die_with_parent

if TYPE_CHECKING:
    from unstructured.documents.elements import Element

log = logging.getLogger(__name__)

#: file types that are zip containers (parsers inflate every entry they read)
ZIP_SUFFIXES = {".docx", ".xlsx", ".pptx", ".docm", ".xlsm", ".pptm", ".odt", ".ods", ".odp", ".epub", ".zip"}
#: CPU seconds a new child may take to import its parsers before the sandbox gives up on it
STARTUP_TIMEOUT = 180.0
#: starts of a child (for one document) before the sandbox gives up and fails the document (kind "sandbox")
START_ATTEMPTS = 2
#: a parse (or start-up) given B seconds of CPU time is stopped as stalled after STALL_FACTOR * B seconds:
#: generous, as waiting for a CPU on a loaded machine is not the document's doing; still a bound, as a
#: parser stopped or blocked on something would otherwise hold the run for ever
STALL_FACTOR = 4
#: seconds between two looks at the child's CPU time while waiting for its answer
_POLL_SECONDS = 0.5
_FRAME = struct.Struct("!Q")
#: a parse that failed with its peak address space this close to the cap failed for want of memory
_NEAR_LIMIT = 64 * 1024 * 1024
#: what a request does, and who does it, by its stage (in reasons)
_WORK = {"parse": ("parsing", "parser"), "chunk": ("chunking", "title chunker")}


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


class SandboxStartError(RuntimeError):
    """The child did not start, or did not import a group of parsers (the message says why); it is stopped."""


class ParseSandbox:
    """Parses documents in a bounded child process; use as a context manager (or call ``close``).

    Args:
        pipeline: the bounds (``parse_timeout``, ``parse_memory_mb``, ``max_inflated_mb``).
        stall_factor: a parse is stopped as stalled after this many times ``parse_timeout`` of wall time.
        startup_timeout: CPU seconds a child may take to start, or to import a group of parsers
            (``STARTUP_TIMEOUT``); it is stopped as stalled after ``STALL_FACTOR`` times as long.
    """

    def __init__(self, pipeline: PipelineSettings, *, stall_factor: float = STALL_FACTOR,
                 startup_timeout: float = STARTUP_TIMEOUT) -> None:
        self.timeout = pipeline.parse_timeout.total_seconds()
        self.stall_factor = stall_factor
        self.startup_timeout = startup_timeout
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
        except Exception:  # interpreter shutdown
            pass

    def __enter__(self) -> ParseSandbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def parse(self, doc: DocumentRef, *, max_bytes: int) -> list[Element]:
        """``rag.ingest.parsing.parse_document`` in the child, within the bounds.

        Raises:
            DocumentError: the document is bad, or it broke a bound (the reason names which), or the
                child could not start (kind "sandbox").
        """
        if doc.path is not None:
            check_inflated_size(doc.path, self.max_inflated)
        with self._turn:
            child = self._ready_child(parser_group(doc.path or doc.doc_id, self.text_parser), "parse")
            return self._ask(child, ("parse", doc, max_bytes, self.timeout, self.text_parser), "parse")

    def sections(self, elements: list[Element], options: SectionOptions) -> list[Section]:
        """``rag.ingest.chunking.title_sections`` in the child, within the same bounds as a parse (its time
        and memory grow with the document as a parse's do).

        Raises:
            DocumentError: stage chunk: the elements are malformed, or cutting them broke a bound, or the
                child could not start (kind "sandbox").
        """
        with self._turn:
            child = self._ready_child("chunking", "chunk")
            return self._ask(child, ("sections", elements, options, self.timeout), "chunk")

    def _ask(self, child: subprocess.Popen, request: tuple, stage: str) -> Any:
        """Send a document's request to the child and wait for its answer, within the bounds."""
        doing, _ = _WORK[stage]
        try:
            try:
                _send(child.stdin, request)
            except BrokenPipeError:
                pass  # it stopped reading (a request past its memory): its answer, or its death, says why
            reply = _receive(child.stdout, Budget(child.pid, self.timeout, self.stall_factor))
        except OverBudget as over:
            self._stop()
            raise DocumentError(stage, f"{doing} {over.describe('pipeline.parse_timeout')}; not indexed for now",
                                failure=over.kind) from None
        except (EOFError, BrokenPipeError, OSError, pickle.UnpicklingError):
            raise self._death(stage) from None
        if reply[0] == "ok":
            return reply[1]
        if reply[0] == "memory":  # its heap is in an unknown state: the next document gets a new child
            self._stop()
            raise DocumentError(
                stage, f"{doing} needed more than pipeline.parse_memory_mb ({self.memory_mb} MB); not indexed",
                failure="memory",
            )
        raise DocumentError(reply[1], reply[2])

    def _ready_child(self, group: str, stage: str) -> subprocess.Popen:
        """The child, started and with ``group`` imported; one that fails to is started again, up to
        ``START_ATTEMPTS`` starts in all.

        Raises:
            DocumentError: kind "sandbox": no start succeeded (not the document's doing: retried later).
        """
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                child = self._running_child()
                self._warm(child, group)
                return child
            except SandboxStartError as exc:
                failed = exc
                log.warning("%s (start %d of %d)", exc, attempt, START_ATTEMPTS)
        raise DocumentError(stage, f"{failed}, at each of {START_ATTEMPTS} starts; not this document's doing: not "
                            "indexed for now", failure="sandbox")

    def _warm(self, child: subprocess.Popen, group: str) -> None:
        """Have the child import a group of parsers, on the startup clock rather than a document's
        ``parse_timeout``.

        Raises:
            SandboxStartError: it could not (the machine, or the installation; not a document).
        """
        if group in self._warmed:
            return
        try:
            _send(child.stdin, ("warm", group))
            reply = _receive(child.stdout, Budget(child.pid, self.startup_timeout))
        except (OverBudget, EOFError, BrokenPipeError, OSError) as exc:
            reason = self._startup_failure(exc)
            raise SandboxStartError(f"the parsing sandbox could not import the {group} parsers: {reason}") from None
        assert reply == ("warm",), reply
        self._warmed.add(group)

    def close(self) -> None:
        """Stop the child (it also exits on its own when this process ends)."""
        self._stop()

    def start(self, groups: Iterable[str] = ()) -> None:
        """Start the child now, without waiting for it: it imports the parsers of ``groups`` (see
        ``rag.ingest.parsing.parser_group``) while this process does other work. ``parse`` starts it anyway
        if needed, and has it import any other group when a document needs it."""
        if self._child is not None and self._child.poll() is None:
            return
        self._stop()
        self._log = tempfile.TemporaryFile()  # the child's stderr, for a crash's last words
        self._warmed = set(groups)
        self._child = subprocess.Popen(
            [sys.executable, "-m", "rag.ingest.sandbox", str(self.memory_mb), *sorted(self._warmed)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
            env={**os.environ, "MALLOC_ARENA_MAX": "2"},  # per-thread arenas would eat the address space
            process_group=0,  # a group of its own, which _stop kills: its subprocesses (pandoc) go with it
        )
        self._ready = False

    def _running_child(self) -> subprocess.Popen:
        """The child, started and ready.

        Raises:
            SandboxStartError: it did not start (the machine, or the installation; not a document).
        """
        try:
            self.start()
        except OSError as exc:  # no process could be made (out of memory, of processes)
            self._stop()
            raise SandboxStartError(f"the parsing sandbox (python -m rag.ingest.sandbox) did not start: {exc}") from None
        if not self._ready:
            try:
                ready = _receive(self._child.stdout, Budget(self._child.pid, self.startup_timeout))
            except (OverBudget, EOFError, OSError, pickle.UnpicklingError) as exc:
                reason = self._startup_failure(exc)
                raise SandboxStartError(f"the parsing sandbox (python -m rag.ingest.sandbox) did not start: {reason}") \
                    from None
            assert ready == ("ready",), ready
            self._ready = True
        return self._child

    def _startup_failure(self, exc: Exception) -> str:
        """Why the child did not start or import its parsers (it is stopped)."""
        if isinstance(exc, OverBudget):
            self._stop()
            return f"it {exc.describe('the start-up bound')}"
        code, tail = self._ended()
        how = ("it stopped answering" if code is None else f"it died of {signal.Signals(-code).name}" if code < 0
               else f"it exited with code {code}")
        return how + (f": {tail}" if tail else "")

    def _death(self, stage: str) -> DocumentError:
        """Why the child stopped answering, as the document's error."""
        doing, who = _WORK[stage]
        code, tail = self._ended()
        last_words = f": {tail}" if tail else ""
        if code is not None and code < 0:
            name = signal.Signals(-code).name
            if name == "SIGXCPU":  # its own CPU limit (_cap_cpu) fired before this process looked
                return DocumentError(stage, f"{doing} used more CPU time than pipeline.parse_timeout "
                                     f"({self.timeout:.0f}s) allows (SIGXCPU); not indexed for now", failure="timeout")
            why = "killed (out of memory, or by someone)" if name == "SIGKILL" else "crashed"
            return DocumentError(stage, f"the {who} {why} ({name}) on this document; not indexed{last_words}",
                                 failure="crash")
        return DocumentError(stage, f"the {who} exited with code {code} on this document; not indexed"
                             f"{last_words}", failure="crash")

    def _ended(self) -> tuple[int | None, str]:
        """The stopped child's exit code (None if it would not end) and the last line it wrote to stderr;
        it and its group are gone after."""
        child = self._child
        try:
            code = child.wait(timeout=10) if child is not None else None
        except subprocess.TimeoutExpired:  # it closed its end of the pipe but lives on: stopped below
            code = None
        tail = self._stderr_tail()
        self._stop()
        return code, tail

    def _stderr_tail(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        lines = [line for line in self._log.read().decode("utf-8", "replace").splitlines() if line.strip()]
        return lines[-1][:200] if lines else ""

    def _stop(self) -> None:
        if self._child is not None:
            try:  # the whole group: a pandoc it started would otherwise run on, orphaned, to its end
                os.killpg(self._child.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass  # gone, and nothing it started is left
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


class OverBudget(Exception):
    """The child used up its CPU time ("timeout") or took too long without doing so ("stalled")."""

    def __init__(self, kind: str, budget: float, factor: float, cpu: float, wall: float,
                 waited: float | None) -> None:
        super().__init__(kind)
        self.kind, self.budget, self.factor, self.cpu, self.wall, self.waited = kind, budget, factor, cpu, wall, waited

    def describe(self, bound: str) -> str:
        """What happened, naming the ``bound`` (a setting) that set the budget."""
        if self.kind == "timeout":
            return f"used {self.cpu:.1f}s of CPU time, over {bound} ({self.budget:g}s)"
        if self.waited is None:
            why = "a busy machine, or a stopped or blocked parser"
        elif self.waited >= self.wall / 2:
            why = f"the machine was busy: it waited {self.waited:.0f}s for a CPU"
        else:
            why = "the parser was stopped or blocked"
        return (f"got {self.cpu:.1f}s of CPU time in {self.wall:.0f}s ({why}); stopped at {self.factor:g}x "
                f"{bound} ({self.budget:g}s)")


class Budget:
    """CPU seconds a child (with its subprocesses) may use from now, and ``stall_factor`` times as many
    seconds of wall time.

    Where /proc is missing, wall time stands in for CPU time (the bound is then a plain wall-clock one).
    """

    def __init__(self, pid: int, cpu_seconds: float, stall_factor: float = STALL_FACTOR) -> None:
        self.pid, self.cpu_seconds, self.stall_factor = pid, cpu_seconds, stall_factor
        self.wall_seconds = stall_factor * cpu_seconds
        self.started, self.cpu_at_start, self.waited_at_start = time.monotonic(), tree_cpu_seconds(pid), _waited(pid)

    def next_look(self) -> float:
        """Seconds to wait for the child before looking again.

        Raises:
            OverBudget: it used up its CPU time, or its wall time.
        """
        wall = time.monotonic() - self.started
        now = tree_cpu_seconds(self.pid)
        cpu = wall if now is None or self.cpu_at_start is None else now - self.cpu_at_start
        if cpu >= self.cpu_seconds or wall >= self.wall_seconds:
            waited = _waited(self.pid)
            waited = None if waited is None or self.waited_at_start is None else waited - self.waited_at_start
            waited = waited if waited is None or waited >= 0 else None  # a thread that ended took its share along
            raise OverBudget("timeout" if cpu >= self.cpu_seconds else "stalled", self.cpu_seconds, self.stall_factor,
                             cpu, wall, waited)
        return max(0.01, min(_POLL_SECONDS, self.cpu_seconds - cpu, self.wall_seconds - wall))


def tree_cpu_seconds(pid: int) -> float | None:
    """CPU seconds used by a process and its descendants, those that ended included; None without /proc.

    Its own line is read before its children are listed, so a descendant ending meanwhile is counted at
    most once (or briefly not at all), never twice.
    """
    fields = _stat_fields(pid)
    if fields is None:
        return None
    ticks = sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
    seconds = ticks / os.sysconf("SC_CLK_TCK")
    for child in _children(pid):
        seconds += tree_cpu_seconds(child) or 0.0
    return seconds


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name (field 3, the state, first)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _children(pid: int) -> list[int]:
    children: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            children += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    except (OSError, ValueError):
        pass  # gone meanwhile, or a kernel without the file: its ended descendants are still counted
    return children


def _waited(pid: int) -> float | None:
    """Seconds the process's threads spent runnable, waiting for a CPU (schedstat); None when unknown."""
    try:
        return sum(int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[1])
                   for task in os.listdir(f"/proc/{pid}/task")) / 1e9
    except (OSError, ValueError, IndexError):
        return None


def _receive(stream, budget: Budget | None) -> Any:
    header = _read_exactly(stream, _FRAME.size, budget)
    return pickle.loads(_read_exactly(stream, _FRAME.unpack(header)[0], budget))


def _read_exactly(stream, size: int, budget: Budget | None) -> bytes:
    chunks, left = [], size
    fd = stream.fileno()
    while left:
        while budget is not None and not select.select([fd], [], [], budget.next_look())[0]:
            pass
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
    signal.signal(signal.SIGTERM, _end_group)
    die_with_parent(signal.SIGTERM)  # a SIGKILL would leave a pandoc it runs orphaned
    # A terminal's Ctrl-C reaches every process of the command's group: the command decides what stops
    # (this child ends with its stdin); a child that died of it would fail the document it was parsing.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    requests, replies = sys.stdin.buffer, os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything a library prints goes to stderr, never into the replies
    from rag.ingest.chunking import title_sections
    from rag.ingest.parsing import parse_document, warm_up

    for group in groups:  # imported before the cap, so that it is headroom for documents only
        warm_up(group)
    limit = _cap_memory(memory_mb)
    _send(replies, ("ready",))
    while True:
        try:
            kind, *request = _receive(requests, None)
        except EOFError:
            return
        except MemoryError:  # a document's elements, sent to be cut into sections, too large for the cap
            _send(replies, ("memory",))
            return
        if kind == "warm":
            _uncap_memory()  # imports are not a document's doing
            _cap_cpu(STARTUP_TIMEOUT)
            warm_up(request[0])
            limit = _cap_memory(memory_mb)
            _send(replies, ("warm",))
            continue
        if kind == "sections":
            elements, options, timeout = request
            work = partial(title_sections, elements, options)
        else:
            doc, max_bytes, timeout, text_parser = request
            work = partial(parse_document, doc, max_bytes=max_bytes, text_parser=text_parser)
        _cap_cpu(timeout)
        try:
            _send(replies, ("ok", work()))
        except MemoryError:
            _send(replies, ("memory",))
            return
        except DocumentError as exc:
            # C parsers (lxml, pdfium) report a failed allocation as some other error: the peak tells.
            if exc.reason.startswith("MemoryError") or _peak_bytes() > limit - _NEAR_LIMIT:
                _send(replies, ("memory",))
                return
            _send(replies, ("error", exc.stage, exc.reason))


def _end_group(signum: int, frame: object) -> None:
    """SIGTERM (its parent died, or someone asks): end the child's process group, the child with it, so
    that a pandoc it runs does not run on, orphaned, to its end."""
    if os.getpgrp() == os.getpid():  # started by ParseSandbox: the group is the child's own
        os.killpg(0, signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


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
    case where nobody is left to enforce the timeout; the margin lets the parent, which counts the
    subprocesses too, normally come first."""
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
