"""The script a new user would write instead of the check: the baseline of `python -m loopback.bench`.

    python -m loopback.naive PAGERDUTY_URL PAGERDUTY_TOKEN DATADOG_URL DATADOG_API_KEY [--lookback SECONDS]

It reads the resolutions of the last `--lookback` seconds with PagerDuty's official client (`iter_all` over
`/log_entries`; `/incidents` filters on creation, not resolution) and posts each as a DORA failure with
`datadog-api-client`'s `create_dora_failure`, one after the other, as both clients' documentation shows.
Only the happy path: no cursor, no outbox, no metrics, no events. Both clients keep their connection
alive. Prints how many failures it posted.
"""

from __future__ import annotations

import argparse
from datetime import datetime, timedelta, timezone

import pagerduty
from datadog_api_client import ApiClient, Configuration
from datadog_api_client.v2.api.dora_metrics_api import DORAMetricsApi
from datadog_api_client.v2.model.dora_failure_request import DORAFailureRequest
from datadog_api_client.v2.model.dora_failure_request_attributes import DORAFailureRequestAttributes
from datadog_api_client.v2.model.dora_failure_request_data import DORAFailureRequestData


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('pagerduty_url')
    parser.add_argument('pagerduty_token')
    parser.add_argument('datadog_url')
    parser.add_argument('datadog_api_key')
    parser.add_argument('--lookback', type=int, default=86_400)
    args = parser.parse_args()

    until = datetime.now(timezone.utc)
    since = until - timedelta(seconds=args.lookback)
    source = pagerduty.RestApiV2Client(args.pagerduty_token)
    source._url = args.pagerduty_url  # the client insists on https://; the loopback server speaks plain HTTP
    configuration = Configuration(host=args.datadog_url)
    configuration.api_key['apiKeyAuth'] = args.datadog_api_key
    posted = 0
    with ApiClient(configuration) as api_client:
        dora = DORAMetricsApi(api_client)
        entries = source.iter_all(
            'log_entries',
            params={
                'since': since.isoformat(),
                'until': until.isoformat(),
                'is_overview': 'true',
                'include[]': ['incidents'],
            },
        )
        for entry in entries:
            if entry['type'] != 'resolve_log_entry' or entry['incident']['status'] != 'resolved':
                continue
            incident = entry['incident']
            attributes = DORAFailureRequestAttributes(
                id=f'pagerduty:{incident["id"]}',
                name=incident['title'],
                services=[incident['service']['summary']],
                started_at=_ns(incident['created_at']),
                finished_at=_ns(incident['resolved_at']),
                env='prod',
            )
            dora.create_dora_failure(body=DORAFailureRequest(data=DORAFailureRequestData(attributes=attributes)))
            posted += 1
    print(posted)


def _ns(timestamp: str) -> int:
    return int(datetime.fromisoformat(timestamp.replace('Z', '+00:00')).timestamp()) * 1_000_000_000


if __name__ == '__main__':
    main()
