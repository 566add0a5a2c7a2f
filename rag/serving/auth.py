"""API keys for the query service: kept as SHA-256 hashes, checked in constant time.

Keys come from ``serve.api_keys`` (each an id, the key's SHA-256 and the aliases it may query) and
from ``serve.api_key`` (one plain key, typically ``RAGOPS_SERVE__API_KEY``; hashed as soon as it is
read, with id ``env`` and access to every alias). A request carries its key as
``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. No key configured: the service is open (it
binds to 127.0.0.1 by default, and warns when bound elsewhere without a key), but for the audit trail
when it listens beyond loopback: who promoted what and why is for a key with the ``audit`` scope. Keys
are never logged; the id of the key that made a request is what logs and the audit name.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from dataclasses import dataclass

from rag.config import ServeSettings


@dataclass(frozen=True)
class Key:
    """A key as the service holds it: never the key itself."""

    id: str
    sha256: str
    aliases: tuple[str, ...]
    scopes: tuple[str, ...] = ("search",)

    def allows(self, alias: str) -> bool:
        return "*" in self.aliases or alias in self.aliases


class Denied(Exception):
    """A request without access: ``status`` 401 (no key, or an unknown one) or 403 (not for this alias)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def hash_key(key: str) -> str:
    """The SHA-256 of a key, as ``serve.api_keys[].sha256`` holds it."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    """A fresh random key (32 bytes, URL-safe)."""
    return "rk_" + secrets.token_urlsafe(32)


class KeyRing:
    """The configured keys; ``check`` finds the key a request presents."""

    def __init__(self, serve: ServeSettings) -> None:
        self.host = serve.host
        keys = [Key(k.id, k.sha256.lower(), tuple(k.aliases), tuple(k.scopes)) for k in serve.api_keys]
        if serve.api_key is not None:
            keys.append(Key("env", hash_key(serve.api_key.get_secret_value()), ("*",)))
        self.keys = keys

    @property
    def enabled(self) -> bool:
        """True when at least one key is configured: every request then needs one."""
        return bool(self.keys)

    def check(self, presented: str | None, alias: str, scope: str | None = "search") -> Key | None:
        """The key ``presented`` if it may do ``scope`` on ``alias`` (None: any scope); None when no key is
        configured.

        Raises:
            Denied: no key presented, an unknown key (401), or a key without access to ``alias`` or
                without the scope (403); with no key configured, the ``audit`` scope on a service that
                listens beyond loopback (403).
        """
        if not self.keys:
            if scope == "audit" and not is_loopback(self.host):
                raise Denied(403, f"the audit trail is not served on {self.host} without API keys (only on a loopback "
                                  "address): add a key with the 'audit' scope to serve.api_keys (ragops "
                                  "serve --new-key ID), or read it with `ragops audit`")
            return None
        if not presented:
            raise Denied(401, "this service needs an API key: send `Authorization: Bearer <key>` or `X-API-Key`")
        digest = hash_key(presented)
        found = None
        for key in self.keys:  # compare with every key, in constant time each
            if hmac.compare_digest(key.sha256, digest):
                found = key
        if found is None:
            raise Denied(401, "unknown API key")
        if not found.allows(alias):
            raise Denied(403, f"API key {found.id!r} has no access to alias {alias!r}")
        if scope is not None and scope not in found.scopes:
            raise Denied(403, f"API key {found.id!r} lacks the {scope!r} scope (serve.api_keys[].scopes)")
        return found


def presented_key(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key a request carries, from ``Authorization: Bearer`` or ``X-API-Key``."""
    if x_api_key:
        return x_api_key.strip()
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return None


def is_loopback(host: str) -> bool:
    """True when ``host`` (``serve.host``) is a loopback address: only this machine can connect."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
