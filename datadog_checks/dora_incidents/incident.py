"""The values that cross layers: what a source reads (in the tool's terms) and what the outputs send (Datadog's)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .evidence import Evidence


def text(value) -> str | None:
    """A field's text: a non-empty string; anything else (absent, empty, a number where text is promised) is None."""
    return value if isinstance(value, str) and value else None


@dataclass(frozen=True)
class Named:
    """A service, team or environment as the incident tool names it: its id, its display name, or both."""

    id: str | None
    name: str | None


@dataclass(frozen=True)
class SourceIncident:
    """One resolution of one incident, in the incident tool's own terms. Sources produce only this."""

    source: str  # the `source:` value, e.g. 'rootly'
    id: str  # the tool's incident id: stable across reads, unique within the tool
    number: str | None  # what people call it (PagerDuty #123, Rootly INC-42), shown in events
    title: str
    url: str | None
    started_at: datetime  # impact start where the tool records one, else creation; timezone-aware
    restored_at: datetime  # what ends the time to restore: resolution, or mitigation when configured
    resolved_at: datetime  # when it became resolved: what the cursor tracks; a re-resolution changes it
    services: tuple[Named, ...] = ()
    teams: tuple[Named, ...] = ()
    environments: tuple[Named, ...] = ()
    severity: str | None = None  # as the tool spells it (SEV1, P1, Critical)
    # The changes the record itself names as the cause (ServiceNow `caused_by`, Jira `versions`), read only
    # with `change_attribution: evidence`; None: the record names none (`Source.change_evidence`).
    evidence: Evidence | None = None

    @property
    def key(self) -> str:
        """Identifies the incident across sources."""
        return f'{self.source}:{self.id}'


@dataclass(frozen=True)
class Incident:
    """A resolution as Datadog sees it: the source's incident plus Datadog service(s), team, env, severity."""

    origin: SourceIncident
    services: tuple[str, ...]
    team: str | None
    env: str | None
    severity: str | None

    @property
    def key(self) -> str:
        return self.origin.key

    @property
    def time_to_restore(self) -> float:
        return (self.origin.restored_at - self.origin.started_at).total_seconds()


@dataclass(frozen=True)
class Skipped:
    """A record from the source that could not be turned into a SourceIncident."""

    source: str
    id: str
    reason: str


@dataclass(frozen=True)
class Batch:
    """Every resolution the source lists in [since, through): by resolve time, or for a tool that lists by
    update time, every resolution changed (resolved, corrected) in it. Each lands in exactly one batch.

    `through` is where the cursor may safely advance once the batch has been emitted. `cut`: the run's
    budget ended the read inside this batch's window; `resume` (kept in the cursor) is where the next run
    goes on (None: it reads the window again).
    """

    incidents: list[SourceIncident]
    skipped: list[Skipped]
    through: datetime
    cut: bool = False
    resume: Any = None
