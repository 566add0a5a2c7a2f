"""One writer per alias, with a lock kept beside the store: a dead holder never keeps it.

Every run that writes an alias's builds, ledger or alias holds the alias's lock for its whole run; a
second run on the same alias waits for it, then runs against what the first left. Two kinds, picked
from the store's location, because each store kind has its own notion of "the holder died":

- **Embedded store** (a folder): an OS file lock (``flock``) on ``<store>/ragops-locks/<alias>.lock``.
  The kernel drops it when the holding process ends, however it ends (``kill -9``, the OOM killer,
  a power cut), so a dead holder never blocks anyone and there is nothing to expire. Every writer of
  an embedded store runs on the machine that has the folder, so a host-local lock is enough.
- **Qdrant server or cluster**: a lease record in the store's ``_ragops_locks`` table (holder, expiry),
  renewed by a heartbeat thread every ``ttl / 3``. It is stale once its expiry passed (the holder
  stopped renewing), or at once when its holder ran on this host and that process is gone. Qdrant has
  no conditional write, so a lease is taken by writing it, waiting ``settle`` seconds and reading it
  back: of two runs that raced, only the one whose record survived goes on. The alias move itself
  stays compare-and-swap (``IndexStore.swap_alias``), so even a lost race is refused, never applied.

Both write who holds the lock (run, host, pid, since): a waiting run logs what it waits for and since
when, and ``ragops unlock`` shows the holder and frees a stale lease.

Why not Prefect's global concurrency limits: Prefect keeps their leases in the API server's memory.
The ephemeral API (the CLI default) runs no repossessor, and a server forgets leases when it restarts,
so a slot taken by a killed run stayed taken forever.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable, Iterator, Literal

from pydantic import BaseModel, Field

from rag.config import StoreSettings
from rag.errors import LockHeld, LockTimeout, StoreError
from rag.models import utc_now

log = logging.getLogger(__name__)

#: folder inside an embedded store that holds one lock file per alias (Qdrant ignores it)
LOCK_FOLDER = "ragops-locks"
#: seconds between "still waiting" messages
REPORT_EVERY = 30.0


class LockHolder(BaseModel):
    """Who holds an alias's lock: enough to tell whether it is still alive, and to say so."""

    token: str = Field(description="Random id of this holding; a lease is ours only while it carries it.")
    alias: str
    run: str = Field("", description="What holds it: the Prefect flow run's name and id, or a command.")
    host: str = Field(default_factory=socket.gethostname)
    boot_id: str = Field(default_factory=lambda: _boot_id())
    pid: int = Field(default_factory=os.getpid)
    pid_started: str = Field(default_factory=lambda: _process_start(os.getpid()))
    since: datetime = Field(default_factory=utc_now)
    expires_at: datetime | None = Field(None, description="Lease expiry (server stores); None for file locks.")

    def describe(self) -> str:
        """One line for a waiting run's log and ``ragops unlock``."""
        what = self.run or "a ragops process"
        return f"{what} (pid {self.pid} on {self.host}, since {self.since:%Y-%m-%d %H:%M:%S} UTC)"

    def on_this_machine(self) -> bool:
        """True when the holder ran on this host since its last boot (its pid means something here)."""
        return self.host == socket.gethostname() and self.boot_id == _boot_id()

    def process_gone(self) -> bool:
        """True when the holder ran on this machine and its process no longer exists (pid reuse checked)."""
        return self.on_this_machine() and _process_start(self.pid) != self.pid_started

    def stale(self, now: datetime) -> bool:
        """A holder that can no longer be holding: its process is gone, or its lease expired."""
        if self.process_gone():
            return True
        return self.expires_at is not None and self.expires_at <= now


class AliasLock:
    """The alias's lock for one store; ``with lock.held(run=...)`` holds it, waiting as long as needed.

    Args:
        store: the store whose alias is locked (its kind decides the lock's kind).
        alias: the alias.
        ttl: lease length on a server store (renewed every ``ttl / 3`` while held).
        settle: seconds between writing a lease and reading it back (server stores).
        poll: seconds between attempts while waiting.
        kind: "file" or "lease"; default: "lease" for a server store, else "file". (Tests run the
            lease on an embedded store: the server's code path through the same client API.)
    """

    def __init__(self, store: StoreSettings, alias: str, *, ttl: float = 60.0, settle: float = 1.0,
                 poll: float = 1.0, kind: Literal["file", "lease"] | None = None) -> None:
        self.store, self.alias = store, alias
        self.ttl, self.settle, self.poll = ttl, settle, poll
        self.kind = kind or ("lease" if store.is_remote else "file")
        self._io = threading.Lock()  # the renewer thread and this one take turns with the store

    @contextmanager
    def held(self, *, run: str = "", report: Callable[[str], None] | None = None,
             timeout: float | None = None) -> Iterator[LockHolder]:
        """Hold the lock for the ``with`` block; wait for a live holder to finish first.

        Args:
            run: what is holding it, for others' messages (the Prefect run's name and id).
            report: where "waiting for …" lines go (a run logger); default: this module's logger.
            timeout: give up after this many seconds (None: wait as long as the holder lives).

        Raises:
            LockTimeout: ``timeout`` passed with the lock still held by someone else.
            StoreError: a server store could not be reached to read or write the lease.
        """
        report = report or log.info
        holder = LockHolder(token=uuid.uuid4().hex, alias=self.alias, run=run)
        if self.kind == "lease":
            with self._lease(holder, report, timeout):
                yield holder
        else:
            with self._file_lock(holder, report, timeout):
                yield holder

    def current(self) -> LockHolder | None:
        """Who holds the lock now (None: nobody, or a holder that is gone)."""
        if self.kind == "lease":
            holder = self._read_lease()
            return holder if holder and not holder.stale(utc_now()) else None
        path = self.path
        if not path.exists():
            return None
        try:
            handle = open(path)  # reading is enough to test a flock, also on a read-only store
        except OSError as exc:
            raise StoreError(f"cannot read the lock file {path}: {exc.strerror}") from None
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return _read_holder(path) or LockHolder(token="?", alias=self.alias, run="unknown", pid=0)
            fcntl.flock(handle, fcntl.LOCK_UN)
        return None

    def break_stale(self, *, force: bool = False) -> LockHolder | None:
        """Free a lease whose holder is gone (or any lease, with ``force``); returns the holder removed.

        A file lock cannot be stale (the kernel frees it with its process), so this only ever frees
        server leases; for a live file-lock holder it raises with the process to stop.

        Raises:
            LockHeld: the holder is alive (and ``force`` is not set, or the lock is a file lock).
        """
        if self.kind == "file":
            holder = self.current()
            if holder is not None:
                raise LockHeld(
                    f"alias {self.alias!r} is held by {holder.describe()}, a live process; stop it "
                    f"(kill {holder.pid}) if it is stuck: the lock is freed when it exits"
                )
            return None
        holder = self._read_lease()
        if holder is None:
            return None
        if not force and not holder.stale(utc_now()):
            raise LockHeld(
                f"alias {self.alias!r} is held by {holder.describe()}, whose lease runs until "
                f"{holder.expires_at:%H:%M:%S} UTC and is being renewed; pass --force if you know it is dead"
            )
        self._delete_lease(holder.token)
        return holder

    # --- embedded store: a file lock --------------------------------------------------------------

    @property
    def path(self) -> Path:
        """The lock file of an embedded store's alias."""
        return Path(self.store.location) / LOCK_FOLDER / f"{self.alias}.lock"

    @contextmanager
    def _file_lock(self, holder: LockHolder, report: Callable[[str], None], timeout: float | None):
        path = self.path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(path, "a+")  # never truncate before holding it: the file names the holder
        except OSError as exc:
            raise StoreError(f"cannot create the lock file {path}: {exc.strerror}") from None
        try:
            waiting = _Waiting(self.alias, report, timeout)
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    waiting.tick(_read_holder(path))
                    time.sleep(self.poll)
            handle.seek(0)
            handle.truncate()
            handle.write(holder.model_dump_json())
            handle.flush()
            waiting.done()
            try:
                yield
            finally:
                handle.seek(0)
                handle.truncate()  # an empty file: nobody holds it
                handle.flush()
                fcntl.flock(handle, fcntl.LOCK_UN)
        finally:
            handle.close()

    # --- server store: a lease record -------------------------------------------------------------

    @contextmanager
    def _lease(self, holder: LockHolder, report: Callable[[str], None], timeout: float | None):
        waiting = _Waiting(self.alias, report, timeout)
        while True:
            current = self._read_lease()
            if current is None or current.stale(utc_now()):
                if current is not None:
                    report(f"alias {self.alias!r}: taking over the stale lock of {current.describe()}")
                self._write_lease(holder)
                time.sleep(self.settle)
                current = self._read_lease()
                if current is not None and current.token == holder.token:
                    break
            waiting.tick(current)
            time.sleep(self.poll)
        waiting.done()
        lost = threading.Event()
        stop = threading.Event()
        renewer = threading.Thread(target=self._renew, args=(holder, stop, lost), daemon=True,
                                   name=f"ragops-lock-{self.alias}")
        renewer.start()
        try:
            yield
        finally:
            stop.set()
            renewer.join(timeout=10)
            if not lost.is_set():
                self._delete_lease(holder.token)

    def _renew(self, holder: LockHolder, stop: threading.Event, lost: threading.Event) -> None:
        """Push the lease's expiry forward every ttl/3 until stopped; note it if someone took it over."""
        while not stop.wait(self.ttl / 3):
            try:
                current = self._extend_lease(holder)
                if current is None or current.token != holder.token:
                    log.error("the lock of alias %r was taken over by %s; this run no longer holds it",
                              self.alias, current.describe() if current else "nobody")
                    lost.set()
                    return
            except StoreError as exc:  # a blip: the lease outlives a few missed renewals
                log.warning("renewing the lock of alias %r failed: %s", self.alias, exc)

    def _extend_lease(self, holder: LockHolder) -> LockHolder | None:
        """Push the expiry of ``holder``'s lease forward if the lease is still its own; returns the holder
        found. One opening of the store for the read and the write: opening a store is the cost of a
        renewal (a connection to a server, or the catalog and a readers folder of an embedded store)."""
        with self._open() as store:
            data = store.read_lock(self.alias)
            current = LockHolder.model_validate(data) if data else None
            if current is not None and current.token == holder.token:
                store.write_lock(self.alias, self._stamped(holder))
        return current

    def _write_lease(self, holder: LockHolder) -> None:
        with self._open() as store:
            store.write_lock(self.alias, self._stamped(holder))

    def _stamped(self, holder: LockHolder) -> dict:
        """The lease record of ``holder``, expiring ``ttl`` from now."""
        holder.expires_at = utc_now() + timedelta(seconds=self.ttl)
        return holder.model_dump(mode="json")

    def _read_lease(self) -> LockHolder | None:
        with self._open() as store:
            data = store.read_lock(self.alias)
        return LockHolder.model_validate(data) if data else None

    def _delete_lease(self, token: str) -> None:
        with self._open() as store:
            data = store.read_lock(self.alias)
            if data and data.get("token") == token:
                store.delete_lock(self.alias)

    @contextmanager
    def _open(self):
        from rag.store import open_store  # lazily: the store's package imports nothing from here

        with self._io, open_store(self.store) as store:
            yield store


class _Waiting:
    """Says what a run waits for and since when, every ``REPORT_EVERY`` seconds; enforces a timeout."""

    def __init__(self, alias: str, report: Callable[[str], None], timeout: float | None) -> None:
        self.alias, self.report, self.timeout = alias, report, timeout
        self.since = utc_now()
        self.started = time.monotonic()
        self.last_report: float | None = None

    def tick(self, holder: LockHolder | None) -> None:
        now = time.monotonic()
        waited = now - self.started
        who = holder.describe() if holder else "another run"
        if self.timeout is not None and waited >= self.timeout:
            raise LockTimeout(
                f"alias {self.alias!r} is still held by {who} after {waited:.0f}s of waiting; "
                f"`ragops unlock --alias {self.alias}` shows the holder and frees a stale lock"
            )
        if self.last_report is None or now - self.last_report >= REPORT_EVERY:
            self.last_report = now
            self.report(
                f"waiting since {self.since:%H:%M:%S} UTC ({waited:.0f}s) for the lock of alias {self.alias!r}, "
                f"held by {who} (one run per alias). If that run is gone, `ragops unlock --alias {self.alias}` "
                "frees it"
            )

    def done(self) -> None:
        if self.last_report is not None:
            self.report(f"lock of alias {self.alias!r} taken after {time.monotonic() - self.started:.0f}s of waiting")


def _read_holder(path: Path) -> LockHolder | None:
    try:
        text = path.read_text()
        return LockHolder.model_validate(json.loads(text)) if text.strip() else None
    except (OSError, ValueError):  # being rewritten this instant, or not ours
        return None


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _process_start(pid: int) -> str:
    """The process's start time in clock ticks since boot ("" when it does not exist): pid + start time
    names one process even after its pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the command name may hold spaces and ")"
