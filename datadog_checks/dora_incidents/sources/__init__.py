"""Incident sources. Adding one = a module that yields `Batch`es of `Incident`s, registered below."""

from .base import IncidentSource, ServiceMapping, SourceError
from .pagerduty import PagerDutySource

SOURCES = {
    PagerDutySource.name: PagerDutySource,
}


def make_source(config, http) -> IncidentSource:
    mapping = ServiceMapping(config.service_mapping, config.env)
    return SOURCES[config.source](config, http, mapping)


__all__ = ['IncidentSource', 'SourceError', 'make_source']
