"""The one value every incident source produces, and the only one the outputs consume."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Incident:
    """One resolution of one incident, already mapped to Datadog's service, team and env."""

    source: str
    id: str
    number: int | None
    title: str
    url: str | None
    started_at: datetime  # timezone-aware
    resolved_at: datetime  # timezone-aware, never before started_at
    service: str | None
    team: str | None
    env: str | None
    severity: str | None

    @property
    def key(self) -> str:
        """Identifies the incident across sources."""
        return f'{self.source}:{self.id}'

    @property
    def time_to_restore(self) -> float:
        return (self.resolved_at - self.started_at).total_seconds()


@dataclass(frozen=True)
class Skipped:
    """An object from the source that could not be turned into an Incident."""

    source: str
    id: str
    reason: str


@dataclass(frozen=True)
class Batch:
    """Every resolution the source holds with a resolve time in [since, through).

    `through` is where the cursor may safely advance once the batch has been emitted.
    """

    incidents: list[Incident]
    skipped: list[Skipped]
    through: datetime
