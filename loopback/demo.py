"""The quick-start demo: the real check, run twice against the loopback PagerDuty simulator and intake.

Run it with `bash scripts/demo.sh` (which runs `dora-incidents demo` in the project's environment).
Outside the Agent, datadog-checks-base routes metrics, events and the persistent cache to its stubs;
this prints what landed there and what the loopback Datadog API received.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from datadog_checks.base.stubs import aggregator, datadog_agent

from .harness import instance_for, new_check
from .intake import DatadogIntake
from .pagerduty import PagerDutySimulator

HEALTH_PREFIX = 'dora_incidents.'


def seed(pagerduty: PagerDutySimulator, now: datetime) -> None:
    pagerduty.add_service('PCHKOUT', 'Checkout API', teams=[('PTEAM01', 'Payments')])
    pagerduty.add_service('PSEARCH', 'Search', teams=[('PTEAM02', 'Discovery')])
    pagerduty.add_service('PLEGACY', 'Legacy Billing')
    outage = pagerduty.trigger('PCHKOUT', now - timedelta(hours=3), 'Checkout returns 500s', priority='P1')
    pagerduty.resolve(outage, now - timedelta(hours=2))
    duplicate = pagerduty.trigger('PCHKOUT', now - timedelta(hours=3), 'Checkout latency high')
    pagerduty.resolve(duplicate, now - timedelta(hours=2, minutes=30), merged_into=outage)
    slow_burn = pagerduty.trigger('PSEARCH', now - timedelta(days=40), 'Search index drifting', urgency='low')
    pagerduty.resolve(slow_burn, now - timedelta(minutes=30))
    billing = pagerduty.trigger('PLEGACY', now - timedelta(minutes=50), 'Invoices stuck', priority='P2')
    pagerduty.resolve(billing, now - timedelta(minutes=5))
    pagerduty.trigger('PSEARCH', now - timedelta(minutes=20), 'Search slow (still open)')


def run_check(instance: dict, label: str, intake: DatadogIntake) -> None:
    aggregator.reset()
    sent_before = len(intake.failures)
    check = new_check(instance)  # a new object each time: an Agent restart
    error = check.run()
    print(f'\n=== {label} ===')
    if error:
        print('check error:', json.loads(error)[0]['message'])
    for warning in check.warnings:
        print('warning:', warning)
    print_metrics()
    print_events()
    print_failures(intake.failures[sent_before:])


def print_metrics() -> None:
    rows = [
        (name, stub.value, ', '.join(stub.tags))
        for name in sorted(aggregator.metric_names)
        for stub in aggregator.metrics(name)
    ]
    dora = [row for row in rows if not row[0].startswith(HEALTH_PREFIX)]
    print(f'\nDORA metrics ({len(dora)}):' if dora else '\nDORA metrics: none (nothing newly resolved)')
    for name, value, tags in dora:
        print(f'  {name:<22} {value:>10.0f}  {tags}')
    print('Check health:')
    for name, value, _ in rows:
        if name.startswith(HEALTH_PREFIX):
            print(f'  {name:<36} {value:g}')


def print_events() -> None:
    print(f'\nEvents ({len(aggregator.events)}):' if aggregator.events else '\nEvents: none')
    for event in aggregator.events:
        stamp = datetime.fromtimestamp(event['timestamp'], timezone.utc).isoformat()
        print(f'  [{stamp}] {event["msg_title"]}')


def print_failures(failures: list[dict]) -> None:
    print(f'\nDORA failures POSTed to /api/v2/dora/failure ({len(failures)}):' if failures else '\nDORA failures: none sent')
    for body in failures:
        print('  ' + json.dumps(body['data']['attributes']))


def main() -> None:
    now = datetime.now(timezone.utc).replace(microsecond=0)
    datadog_agent.reset()
    with PagerDutySimulator() as pagerduty, DatadogIntake() as intake:
        seed(pagerduty, now)
        instance = instance_for(
            pagerduty,
            intake,
            env='prod',
            service_mapping={'Legacy Billing': {'service': 'billing', 'team': 'finance'}},
            tags=['owner:sre'],
        )
        print('PagerDuty simulator:', pagerduty.url, '| Datadog intake:', intake.url)
        print('Simulated incidents: 1 P1 outage (resolved 2h ago), 1 merged into it, 1 opened 40 days ago and')
        print('resolved 30 min ago, 1 mapped by service name to `billing`, 1 still open.')
        run_check(instance, 'First run (no cursor yet: looks back `initial_lookback` = 1 day)', intake)
        run_check(instance, 'Second run (after an Agent restart): nothing is re-sent', intake)
        if intake.problems:
            raise SystemExit(f'the intake rejected payloads: {intake.problems}')


if __name__ == '__main__':
    main()
