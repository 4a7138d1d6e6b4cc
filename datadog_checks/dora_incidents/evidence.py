"""Change evidence: the changes an incident tool records as the cause (or the fix) of an incident.

Each tool reads its own evidence (`Source.change_evidence`, in the tool's module); how a tool's key/value
pairs and links identify a change is the same for every tool, and lives here. Keys ignore case: `commit`,
`commit_sha`, `sha`, `git_sha` and `revision` holding 40 hex digits are a commit SHA; `version`, and a
`revision` that is not a SHA, are a version; a link `.../commit/<40 hex>` is a commit SHA. Short SHAs, compare
links, build numbers and summaries identify nothing. Which deployment a change is, and marking it, is
`change_failures.py`'s.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

COMMIT_KEYS = frozenset({'commit', 'commit_sha', 'sha', 'git_sha', 'revision'})
VERSION_KEYS = frozenset({'version', 'revision'})
_SHA = re.compile(r'[0-9a-fA-F]{40}')
_COMMIT_LINK = re.compile(r'/commit/([0-9a-fA-F]{40})(?![0-9a-zA-Z])')
EVIDENCE = 'evidence'
WINDOW = 'window'


@dataclass(frozen=True)
class Change:
    """What identifies one change: commit SHAs (lower case), versions, and Datadog deployment custom tags
    (`change_request:chg0030042`, lower case) a deployment of that change carries."""

    commits: frozenset[str] = frozenset()
    versions: frozenset[str] = frozenset()
    tags: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.commits or self.versions or self.tags)


@dataclass(frozen=True)
class Evidence:
    """The identified changes a tool names as the incident's causes, and as its fixes (FireHydrant)."""

    causes: tuple[Change, ...]
    fixes: tuple[Change, ...] = ()


def change(pairs: Iterable[tuple[Any, Any]] = (), links: Iterable[Any] = ()) -> Change:
    """The identity of a change from its key/value pairs and links (anything not a string is ignored)."""
    commits, versions = set(), set()
    for key, value in pairs:
        if not isinstance(key, str) or not isinstance(value, str) or not value.strip():
            continue
        key, value = key.strip().lower(), value.strip()
        if key in COMMIT_KEYS and _SHA.fullmatch(value):
            commits.add(value.lower())
        elif key in VERSION_KEYS and not _SHA.fullmatch(value):
            versions.add(value)
    for link in links:
        found = _COMMIT_LINK.search(link) if isinstance(link, str) else None
        if found:
            commits.add(found.group(1).lower())
    return Change(frozenset(commits), frozenset(versions))


def evidence(causes: Iterable[Change], fixes: Iterable[Change] = ()) -> Evidence | None:
    """The evidence of identified changes; None ("no evidence": the time window decides) when no cause
    identifies a change."""
    causes = tuple(dict.fromkeys(c for c in causes if c))
    return Evidence(causes, tuple(dict.fromkeys(f for f in fixes if f))) if causes else None


def wanted(config) -> bool:
    """Whether the evidence is read: only when marking change failures by it (`change_attribution: evidence`)."""
    return bool(config.mark_change_failures) and attribution(config) == EVIDENCE


def attribution(config) -> str:
    return config.change_attribution or EVIDENCE
