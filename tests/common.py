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


def cursor_keys(datadog_agent):
    return [key for key in datadog_agent._cache if f'_{CACHE_KEY}_' in key]


def stored_cursor(datadog_agent):
    """The newest cursor document the check left in the Agent's persistent cache, or None."""
    stored = []
    for key in cursor_keys(datadog_agent):
        try:
            slot = json.loads(datadog_agent._cache[key])
            stored.append((int(slot['sequence']), slot['document']))
        except (ValueError, TypeError, KeyError):
            continue  # a torn or corrupted slot; the other one holds the cursor
    return max(stored, key=lambda s: s[0])[1] if stored else None
