"""Helpers shared by the test modules: reading what the check emitted."""

import json
from datetime import timedelta

from datadog_checks.dora_incidents.cursor import CACHE_KEY

TIME_TO_RESTORE = 'dora.time_to_restore'
INCIDENTS_COUNT = 'dora.incidents.count'


def ago(now, **delta):
    return now - timedelta(**delta)


def restores(aggregator):
    """incident_id -> time-to-restore values submitted for it."""
    points = {}
    for metric in aggregator.metrics(TIME_TO_RESTORE):
        incident_id = next(tag.split(':', 1)[1] for tag in metric.tags if tag.startswith('incident_id:'))
        points.setdefault(incident_id, []).append(metric.value)
    return points


def counted(aggregator):
    return sum(metric.value for metric in aggregator.metrics(INCIDENTS_COUNT))


def dora_ids(intake):
    return [body['data']['attributes']['id'] for body in intake.failures]


def stored_cursor(datadog_agent):
    """The cursor JSON the check left in the Agent's persistent cache, or None."""
    values = [value for key, value in datadog_agent._cache.items() if key.endswith('_' + CACHE_KEY)]
    assert len(values) <= 1, f'expected at most one cursor in the cache, found {len(values)}'
    return json.loads(values[0]) if values else None
