"""What every source's simulator offers the conformance suite, the demo and the benchmark.

A simulator is a `ToolSimulator` (core.py: the request pipeline, rate limits, lag) holding the tool's
incidents, answering the tool's API as its published description says (validated against the derived
description in `loopback/specs/`), and driven through the methods below in the tool's own vocabulary
(abstract methods of `ToolSimulator`, so that a simulator missing one cannot be made). The suite never reaches into a
simulator's state: what it asserts is what the check emitted.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from .server import Fault

# What a default incident names, in the tool's terms; `expected_tags` says how the check must spell them.
SERVICE, TEAM, ENVIRONMENT, SEVERITY, TITLE = 'Checkout API', 'Payments Team', 'Production', 'SEV1', 'Checkout is down'


class SourceSimulator(Protocol):
    source: str  # the check's `source:` value
    token: str  # the one API token the simulator accepts
    list_path: str  # the path of the list endpoint the check reads (faults target it)
    max_page_size: int  # the most records one page of that endpoint holds
    spec_violations: list[str]  # requests (and answers) the derived API description rejects
    # The Datadog tags an incident opened with the defaults below must get, from the tool's own names
    # (`env` only when the tool has environments; otherwise the instance's `env: prod` applies).
    expected_tags: dict[str, str]

    @property
    def url(self) -> str: ...

    def instance(self, **options) -> dict:
        """The check instance for this simulator: `source`, `api_token`, `api_url` and `options`."""

    def open(
        self,
        started_at: datetime,
        *,
        title: str = TITLE,
        service: str = SERVICE,
        team: str = TEAM,
        environment: str = ENVIRONMENT,
        severity: str = SEVERITY,
    ) -> str:
        """Opens an incident (impact from `started_at`); returns the id the check reports it under."""

    def resolve(self, incident_id: str, at: datetime, *, hidden: bool = False) -> None:
        """Resolves it at `at`. `hidden`: the API does not show the resolution until `reveal` (indexing lag)."""

    def reveal(self, incident_id: str) -> None:
        """The API now shows a hidden resolution, stamped with its original time."""

    # -- late and corrected resolutions: what a tool's users do after the fact (its update time moves to now)
    def enter_resolved(self, started_at: datetime, resolved_at: datetime, **open_options) -> str:
        """Enters now an incident that already happened and was resolved at `resolved_at` (Rootly's
        retrospective incidents, FireHydrant's "Create Resolved Incident", incident.io's retrospective
        mode); returns its id."""

    def resolve_backdated(self, incident_id: str, at: datetime) -> None:
        """Resolves it now, with its resolve time set back to `at` (the responder enters when it really ended)."""

    def correct(self, incident_id: str, *, started_at: datetime | None = None, resolved_at: datetime | None = None):
        """Edits the start or resolve time of a resolved incident now (a post-incident review)."""

    def reopen(self, incident_id: str, at: datetime) -> None:
        """Back to an active state; a later `resolve` is a new resolution of the same incident."""

    def corrupt(self, incident_id: str) -> None:
        """Makes its record malformed (a timestamp that is not one), so the check must skip it by name."""

    # Why each incident `open_non_failures` makes is not a failure, in the order it returns them.
    not_failures: tuple[str, ...]

    def open_non_failures(self, started_at: datetime, resolved_at: datetime) -> list[str]:
        """Creates and closes one incident of each kind the tool records that is not a failure (cancelled,
        declined, merged, test, ...); returns their ids. The check must report none of them."""

    def rate_limited(self, seconds: int = 1) -> Fault:
        """The tool's own rate-limit answer (status and reset header) on the list endpoint."""
