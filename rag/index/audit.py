"""The audit trail: an append-only record, per alias, of what changed what is served, by whom and why.

One entry per event, in the alias's audit table (``rag.store.names.audit_table``): every build (its sources,
model fingerprint, chunking and parsing policy, as a hash plus the content), evaluation, gate verdict,
approval, promotion (forced ones with their reason), rollback, retention delete and drift result.
Entries are keyed by time plus a random suffix, so none ever replaces another; nothing updates or
deletes them (retention leaves the table alone). A served answer names its build and model, so it
joins to the build's entry.

Who: the ``Actor`` of the code that records, set by the entry point with ``acting`` (the CLI, a flow,
the query service) and otherwise the OS user, plus the Prefect flow run and deployment when one is
running. A service's API key is named by its id, never by its value.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import os
import re
import sys
import uuid
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator, Literal

from pydantic import BaseModel, Field

from rag.errors import ConfigError, RagopsError
from rag.models import utc_now
from rag.secrets import redact_tree
from rag.store import IndexStore, Row
from rag.store.names import audit_table

log = logging.getLogger(__name__)

EventKind = Literal[
    "build", "evaluation", "gate", "approval", "promotion", "forced_promotion", "rollback", "retention_delete",
    "drift",
]


class Actor(BaseModel):
    """Who did something: a person or process, and through what."""

    user: str = Field(description="OS user of the process that acted.")
    host: str | None = Field(None, description="Machine it ran on.")
    flow_run: str | None = Field(None, description="Prefect flow run (name and id), when one ran it.")
    deployment: str | None = Field(None, description="Prefect deployment of that run, if any.")
    api_key: str | None = Field(None, description="Id of the service API key used (never the key).")
    approver: str | None = Field(None, description="Who answered an approval request, as they gave it.")


class AuditEvent(BaseModel):
    """One entry of the trail."""

    at: datetime
    alias: str
    kind: EventKind
    build: str | None = Field(None, description="The build concerned (collection name).")
    by: Actor
    why: str = Field("", description="The reason given or decided (gate verdict, forced-promotion reason, ...).")
    details: dict[str, Any] = Field(default_factory=dict)


_ACTOR: ContextVar[Actor | None] = ContextVar("ragops_actor", default=None)


@contextmanager
def acting(**fields: str | None) -> Iterator[Actor]:
    """Record whatever happens inside as done by this actor (fields of ``Actor`` over the defaults)."""
    actor = current_actor().model_copy(update={k: v for k, v in fields.items() if v is not None})
    token = _ACTOR.set(actor)
    try:
        yield actor
    finally:
        _ACTOR.reset(token)


def current_actor() -> Actor:
    """The actor set by ``acting``, or the OS user with the running Prefect flow run, if any."""
    actor = _ACTOR.get()
    if actor is not None:
        return actor
    return Actor(user=_os_user(), host=os.uname().nodename, **_prefect_run())


def policy_hash(policy: dict) -> str:
    """SHA-256 of a policy's canonical JSON: equal policies, equal hashes."""
    return hashlib.sha256(json.dumps(policy, sort_keys=True, default=str).encode()).hexdigest()


def entry(alias: str, kind: EventKind, *, build: str | None = None, why: str = "",
          details: dict[str, Any] | None = None) -> tuple[str, Row]:
    """One event as the (table, row) to write, by the current actor (secrets in URLs redacted).

    What an alias move or a build's deletion passes to the store, which writes it in the same transaction
    as the move or the deletion (``IndexStore.atomic_records``): a kill cannot separate them.
    """
    event = AuditEvent(at=utc_now(), alias=alias, kind=kind, build=build, by=current_actor(), why=why,
                       details=redact_tree(details or {}))
    key = f"{event.at.strftime('%Y%m%dT%H%M%S.%fZ')}-{uuid.uuid4().hex[:8]}"
    return audit_table(alias), Row(key, event.model_dump(mode="json"))


def record(store: IndexStore, alias: str, kind: EventKind, *, build: str | None = None, why: str = "",
           details: dict[str, Any] | None = None) -> AuditEvent | None:
    """Append one event to the alias's trail, durably, and return it.

    For what is recorded once it is done (a build, an evaluation, a gate verdict, a drift check; on a
    server, a move or a deletion), so a failure to write is logged as an error and returns None rather
    than raising: raising would report as failed an operation that happened.
    """
    table, row = entry(alias, kind, build=build, why=why, details=details)
    try:
        store.put_rows(table, [row])
    except RagopsError as exc:
        log.error("audit trail of alias %s: could not record the %s of %s: %s", alias, kind, build, exc)
        return None
    return AuditEvent.model_validate(row.payload)


def read_trail(store: IndexStore, alias: str, *, since: datetime | None = None) -> list[AuditEvent]:
    """The alias's events, oldest first (those at or after ``since`` only, when given)."""
    rows = sorted(store.scan_rows(audit_table(alias)), key=lambda row: (row.payload.get("at", ""), row.id))
    events = [AuditEvent.model_validate(row.payload) for row in rows]
    return [e for e in events if since is None or e.at >= since]


def _os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name (a container's numeric user)
        return str(os.getuid())


def _prefect_run() -> dict[str, str]:
    """The running Prefect flow run and its deployment, if this process runs one (Prefect already
    imported: a command that never started a flow does not import it for this)."""
    if "prefect.context" not in sys.modules:
        return {}
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return {}
    run = context.flow_run
    found = {"flow_run": f"{run.name} ({run.id})"}
    if run.deployment_id is not None:
        found["deployment"] = str(run.deployment_id)
    return found


def parse_since(text: str) -> datetime:
    """``--since``: an ISO 8601 time (UTC when it names no zone) or an age such as 30m, 12h, 7d.

    Raises:
        ConfigError: neither.
    """
    match = re.fullmatch(r"\s*(\d+)\s*([smhd])\s*", text)
    if match:
        seconds = int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
        return utc_now() - timedelta(seconds=seconds)
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--since {text!r} is neither an ISO 8601 time (2026-12-01T09:30Z) nor an age "
                          "(30m, 12h, 7d)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
