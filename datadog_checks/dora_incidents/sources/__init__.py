"""Incident sources: the `source:` value -> the module and class that read that tool.

Adding a tool = one module subclassing `Source`, one line here, its simulator in `loopback/`, its API description,
its options, its doc page (CONTRIBUTING.md, "Adding a tool"). Everything else that depends on the tools reads this
registry.
"""

from __future__ import annotations

import time
from importlib import import_module

from datadog_checks.base import ConfigurationError

from .base import Source
from .http import CredentialsRejected, SourceError

SOURCES = {
    'pagerduty': ('pagerduty', 'PagerDutySource'),
    'rootly': ('rootly', 'RootlySource'),
    'firehydrant': ('firehydrant', 'FireHydrantSource'),
    'incident_io': ('incident_io', 'IncidentIoSource'),
    'servicenow': ('servicenow', 'ServiceNowSource'),
    'jira': ('jira', 'JiraSource'),
    'github': ('github', 'GitHubSource'),
    'datadog_incidents': ('datadog_incidents', 'DatadogIncidentsSource'),
    'grafana_irm': ('grafana_irm', 'GrafanaIrmSource'),
    'opsgenie': ('opsgenie', 'OpsgenieSource'),
    'statuspage': ('statuspage', 'StatuspageSource'),
    'splunk_oncall': ('splunk_oncall', 'SplunkOnCallSource'),
}


def source_class(name: str) -> type[Source]:
    module, cls = SOURCES[name]
    return getattr(import_module(f'{__name__}.{module}'), cls)


def tool_options() -> dict[str, set[str]]:
    """Each tool-specific option -> the tools that accept it."""
    owners: dict[str, set[str]] = {}
    for name in SOURCES:
        for option in source_class(name).options:
            owners.setdefault(option, set()).add(name)
    return owners


# Options of every tool that select which incidents are read (mapping.py applies them).
COMMON_SCOPE = frozenset({'services', 'teams', 'severities'})
# The filters every cursor scope has named since 0.1.0, set or not: naming them keeps existing cursors.
NAMED_SCOPE = COMMON_SCOPE | {'service_ids', 'team_ids', 'urgencies'}


def scope_filters(config) -> dict[str, list[str]]:
    """The options that select which incidents are read, normalised: part of the cursor's scope. A tool's
    `scope_options` count once set, so that adding a tool never changes another tool's cursor."""
    names = set(COMMON_SCOPE).union(*(source_class(name).scope_options for name in SOURCES))
    values = {name: sorted(set(_listed(getattr(config, name)))) for name in names}
    return {name: value for name, value in values.items() if value or name in NAMED_SCOPE}


def _listed(value) -> list:
    """An option's values: a list as is, one string (GitHub's `label`) as one value, not its letters."""
    return [value] if isinstance(value, str) else list(value or ())


def make_source(config, configured: set[str], http, monotonic=time.monotonic) -> Source:
    """The configured tool's source; an option of another tool is a `ConfigurationError` naming it."""
    cls = source_class(config.source)
    if cls.credentials.needs_api_token and not config.api_token:
        needed = cls.credentials.api_token_help
        raise ConfigurationError(f'`api_token` is required with `source: {config.source}`: {needed}')
    for option, owners in sorted(tool_options().items()):
        if option in configured and config.source not in owners:
            raise ConfigurationError(
                f'`{option}` is an option of {", ".join(sorted(owners))}, not of `source: {config.source}`; remove it'
            )
    return cls(config, http, config.api_url or cls.default_api_url, monotonic=monotonic)


__all__ = ['CredentialsRejected', 'Source', 'SourceError', 'make_source', 'scope_filters', 'source_class']
