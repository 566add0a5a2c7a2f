"""Keeping secrets out of what ragops shows: messages, logs, manifests, Prefect's parameters and states.

Two helpers, no project imports (anything may use them):

- ``redact_url`` replaces the password of every ``scheme://user:password@host`` in a text with ``***``.
  The client that connects still gets the real URL; only the displayed form is redacted.
- ``mask`` replaces known secret values (API keys) with ``***``, and redacts URLs too.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

REDACTED = "***"

# The password runs to the last "@" before whitespace: a raw "@" or "/" in a password (which should
# be percent-encoded, but often is not) must not leave part of it visible. The price is that a URL
# with a port and an "@" in its path shows less than it could; it is only ever a displayed form.
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^\s:/?#@]*):\S*@")


def redact_url(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***`` (the user name is kept).

    ``http://user:pass@qdrant:6333`` -> ``http://user:***@qdrant:6333``; text without a password in a
    URL comes back unchanged.
    """
    return _USERINFO.sub(rf"\g<head>:{REDACTED}@", text)


def mask(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with every occurrence of each non-empty secret replaced by ``***``, URLs redacted."""
    # Longest first, so a secret that contains another one is masked whole.
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return redact_url(text)


def redact_tree(value: Any) -> Any:
    """A copy of JSON-like data (dicts, lists, strings) with ``redact_url`` applied to every string."""
    if isinstance(value, str):
        return redact_url(value)
    if isinstance(value, dict):
        return {key: redact_tree(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_tree(item) for item in value]
    return value
