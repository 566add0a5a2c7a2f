"""Include/exclude glob matching shared by every connector."""

from __future__ import annotations

import fnmatch


def selected(relative: str, include: list[str], exclude: list[str]) -> bool:
    """fnmatch on the relative path: ``*`` matches across ``/`` so ``*.md`` finds Markdown at any depth."""
    if not any(fnmatch.fnmatchcase(relative, pattern) for pattern in include):
        return False
    return not any(fnmatch.fnmatchcase(relative, pattern) for pattern in exclude)
