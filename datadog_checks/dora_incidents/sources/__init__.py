"""Incident sources: the `source:` value -> the module and class that read that tool.

Adding a tool = one module subclassing `Source`, one line here, one simulator in `loopback/`.
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
    'github': ('github', 'GitHubSource'),
    'datadog_incidents': ('datadog_incidents', 'DatadogIncidentsSource'),
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


def make_source(config, configured: set[str], http, monotonic=time.monotonic) -> Source:
    """The configured tool's source; an option of another tool is a `ConfigurationError` naming it."""
    cls = source_class(config.source)
    if cls.needs_api_token and not config.api_token:
        raise ConfigurationError(f'`api_token` is required with `source: {config.source}`: {cls.api_token_help}')
    for option, owners in sorted(tool_options().items()):
        if option in configured and config.source not in owners:
            raise ConfigurationError(
                f'`{option}` is an option of {", ".join(sorted(owners))}, not of `source: {config.source}`; remove it'
            )
    return cls(config, http, config.api_url or cls.default_api_url, monotonic=monotonic)


__all__ = ['CredentialsRejected', 'Source', 'SourceError', 'make_source', 'source_class']
