"""A lost cursor: the DORA failures this instance already sent, so that a run without a cursor counts nothing twice.

Beside the cursor, for a run that starts without one (first run, a cluster check re-dispatched to another node):
what Datadog already holds from this instance is adopted as reported. Needs the application key.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from .datadog import DatadogApi
from .datadog.reads import LIST_LIMIT, datadog_time, search_query

FAILURES_PATH = '/api/v2/dora/failures'
# A failure is listed by its start; one resolved in the recovered window may have started this long
# before it (as long as the cursor remembers an incident).
INCIDENT_DURATION = timedelta(days=30)


def recover_reported(api: DatadogApi, source: str, env: str | None, since: datetime, until: datetime) -> dict[str, int]:
    """The DORA failures this instance already sent for resolutions in [since, until]: DORA failure id ->
    `finished_at` in epoch ms.

    Failures are found by the `source:` tag the check puts in `custom_tags`, and by env when given (None:
    every env). Note that `finished_at` is the incident's restore time, and the id is
    `outputs.dora_id(incident)`, which is the incident key unless that key had to be hashed. Raises DatadogError.
    """
    query = search_query(source=source, env=env)
    items, _ = api.lists.list_events(
        FAILURES_PATH, 'dora_failures_list_request', query, since - INCIDENT_DURATION, until, limit=LIST_LIMIT
    )
    reported = {}
    for item in items:
        attributes = item['attributes']
        finished = datadog_time(attributes.get('finished_at'))
        tags = attributes.get('custom_tags')
        if finished is None or (isinstance(tags, list) and f'source:{source}' not in tags):
            continue
        if env and attributes.get('env') not in (None, env):
            continue
        reported[str(item['id'])] = int(finished.timestamp() * 1000)
    return reported
