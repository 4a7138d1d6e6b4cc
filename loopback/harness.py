"""Running the real check outside the Agent against the loopback servers, and reading what it emitted.

Shared by the tests, the demo, the fault matrix and the benchmark.
"""

from __future__ import annotations

import os
from collections import Counter

# `dora.*` metrics carry `service` and `env` on purpose, like Datadog's own DORA metrics. The stub
# aggregator refuses these "generic" tags unless told otherwise; the real Agent accepts them.
os.environ.setdefault('DDEV_SKIP_GENERIC_TAGS_CHECK', '1')

TIME_TO_RESTORE = 'dora.time_to_restore'
INCIDENTS_COUNT = 'dora.incidents.count'


def instance_for(pagerduty, intake, **options) -> dict:
    return {
        'source': 'pagerduty',
        'api_token': pagerduty.token,
        'api_url': pagerduty.url,
        'datadog_api_url': intake.url,
        'datadog_api_key': intake.api_key,
        **options,
    }


def new_check(instance: dict, check_id: str = 'dora_incidents:loopback'):
    """A check object as the Agent makes one; a new one over the same cache is an Agent restart."""
    from datadog_checks.dora_incidents import DoraIncidentsCheck

    check = DoraIncidentsCheck('dora_incidents', {}, [instance])
    check.check_id = check_id
    return check


def restores(aggregator) -> dict[str, list[float]]:
    """incident id -> the time-to-restore values submitted for it."""
    points: dict[str, list[float]] = {}
    for metric in aggregator.metrics(TIME_TO_RESTORE):
        incident_id = next(tag.split(':', 1)[1] for tag in metric.tags if tag.startswith('incident_id:'))
        points.setdefault(incident_id, []).append(metric.value)
    return points


def counted(aggregator) -> float:
    return sum(metric.value for metric in aggregator.metrics(INCIDENTS_COUNT))


def dora_ids(intake) -> list[str]:
    return [body['data']['attributes']['id'] for body in intake.failures]


def tally(resolved: list[str], aggregator, intake) -> dict:
    """Reported / lost / duplicated over everything resolved, from the metrics and the DORA API's view."""
    points = restores(aggregator)
    posts = Counter(dora_ids(intake))
    wanted = {f'pagerduty:{incident}' for incident in resolved}
    return {
        'resolved': len(resolved),
        'reported': len(set(points) & set(resolved)),
        'lost': len(set(resolved) - set(points)) + len(wanted - set(posts)),
        'duplicated': sum(len(values) - 1 for values in points.values()),
        'dora_resends': sum(times - 1 for times in posts.values()),
    }
