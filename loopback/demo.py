"""The quick-start demo: the real check, run twice against a loopback incident tool and Datadog intake.

`dora-incidents demo --source rootly` picks the tool (default pagerduty); every simulator is seeded the
same way through the driver interface (loopback/driver.py).

Run it with `bash scripts/demo.sh` (which runs `dora-incidents demo` in the project's environment).
Outside the Agent, datadog-checks-base routes metrics, events and the persistent cache to its stubs;
this prints what landed there and what the loopback Datadog API received.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from datadog_checks.base.stubs import aggregator, datadog_agent

from .harness import new_check
from .intake import DatadogIntake
from .simulators import make_simulator

HEALTH_PREFIX = 'dora.check.'


def seed(tool, intake: DatadogIntake, now: datetime) -> None:
    # Deployments Datadog DORA knows of: v41 ran for days, v42 went out before the outage, v41 came back.
    deployments = [('v41', timedelta(days=2)), ('v42', timedelta(hours=4)), ('v41', timedelta(hours=2, minutes=20))]
    env = {'env': 'prod', **tool.expected_tags}['env']  # the tool's environment, else the instance's
    for version, age in deployments:
        intake.deploy('checkout_api', env, version, now - age - timedelta(minutes=5), now - age)
    outage = tool.open(now - timedelta(hours=3), title='Checkout returns 500s', severity='SEV1')
    tool.resolve(outage, now - timedelta(hours=2))
    tool.open_non_failures(now - timedelta(hours=3), now - timedelta(hours=2, minutes=30))
    slow_burn = tool.open(now - timedelta(days=40), title='Search index drifting', service='Search', team='Discovery',
                          severity='SEV3')  # fmt: skip
    tool.resolve(slow_burn, now - timedelta(minutes=30))
    billing = tool.open(now - timedelta(minutes=50), title='Invoices stuck', service='Legacy Billing', severity='SEV2')
    tool.resolve(billing, now - timedelta(minutes=5))
    tool.open(now - timedelta(minutes=20), title='Search slow (still open)', service='Search')


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
    print(
        f'\nDORA failures POSTed to /api/v2/dora/failure ({len(failures)}):'
        if failures
        else '\nDORA failures: none sent'
    )
    for body in failures:
        print('  ' + json.dumps(body['data']['attributes']))


def print_markings(intake: DatadogIntake) -> None:
    markings = intake.markings()
    print(f'\nDeployments marked as change failures ({len(markings)}):' if markings else '\nNo deployment marked')
    for deployment, attributes in markings.items():
        print(f'  {deployment}: {json.dumps(attributes)}')


def main(source: str = 'pagerduty') -> None:
    now = datetime.now(timezone.utc).replace(microsecond=0)
    datadog_agent.reset()
    with make_simulator(source) as tool, DatadogIntake() as intake:
        seed(tool, intake, now)
        instance = tool.instance(
            datadog_api_url=intake.url,
            datadog_api_key=intake.api_key,
            mark_change_failures=True,
            datadog_app_key=intake.app_key,
            env='prod',
            service_mapping={'Legacy Billing': {'service': 'billing', 'team': 'finance'}},
            tags=['owner:sre'],
        )
        print(f'{source} simulator:', tool.url, '| Datadog intake:', intake.url)
        print('Simulated incidents: 1 SEV1 outage (resolved 2h ago), the tool\'s kinds that are not failures,')
        print('1 opened 40 days ago and resolved 30 min ago, 1 mapped by service name to `billing`, 1 still open.')
        run_check(instance, 'First run (no cursor yet: looks back `initial_lookback` = 1 day)', intake)
        print_markings(intake)
        run_check(instance, 'Second run (after an Agent restart): nothing is re-sent', intake)
        if intake.problems:
            raise SystemExit(f'the intake rejected payloads: {intake.problems}')


if __name__ == '__main__':
    import sys

    main(*sys.argv[1:2])
