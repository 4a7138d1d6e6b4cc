"""The only place that names Datadog things: a tool's incident becomes Datadog service(s), team, env, severity.

Also the common filters (`services`, `teams`, `severities`), which match the tool's own ids or names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from .incident import Incident, Named, SourceIncident

# Datadog tag values: lowercase letters (any script), digits and `_ - : . /`; anything else becomes `_`.
_NOT_TAG = re.compile(r'[^\w\-:./]+')


def as_tag_value(name: str | None) -> str | None:
    """How Datadog spells a free-text name as a tag value: `Checkout API` -> `checkout_api`, `Zürich` -> `zürich`."""
    if not name:
        return None
    return _NOT_TAG.sub('_', name.strip().lower()).strip('_') or None


class Mapper:
    """Applies the instance's filters and `service_mapping` to what a source read."""

    def __init__(self, config):
        self._mapping: Mapping[str, Any] = config.service_mapping or {}
        self._default_env = config.env
        self._services = _wanted(config.services, config.service_ids)
        self._teams = _wanted(config.teams)
        self._severities = _wanted(config.severities)

    def selects(self, incident: SourceIncident) -> bool:
        return (
            _matches(self._services, incident.services)
            and _matches(self._teams, incident.teams)
            and _matches(self._severities, [Named(None, incident.severity)])
        )

    def to_datadog(self, incident: SourceIncident) -> Incident:
        targets = [self._target(service) for service in incident.services]
        services = _unique(
            target.get('service') or as_tag_value(s.name or s.id) for s, target in zip(incident.services, targets)
        )
        first = targets[0] if targets else {}
        team = first.get('team') or _first_tag(incident.teams)
        env = first.get('env') or _first_tag(incident.environments) or self._default_env
        return Incident(incident, tuple(services), team, env, as_tag_value(incident.severity))

    def _target(self, service: Named) -> Mapping[str, Any]:
        # The id wins over the name when both are mapped.
        return self._mapping.get(service.id or '') or self._mapping.get(service.name or '') or {}


def _wanted(*option_values: Iterable[str] | None) -> frozenset[str] | None:
    values = {value for values in option_values if values for value in values}
    return frozenset(values) if values else None


def _matches(wanted: frozenset[str] | None, refs: Iterable[Named]) -> bool:
    return wanted is None or any(ref.id in wanted or ref.name in wanted for ref in refs)


def _first_tag(refs: tuple[Named, ...]) -> str | None:
    return as_tag_value(refs[0].name or refs[0].id) if refs else None


def _unique(values: Iterable[str | None]) -> list[str]:
    return list(dict.fromkeys(value for value in values if value))
