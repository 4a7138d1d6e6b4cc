"""The quick-start demo: the real check, run twice against a loopback incident tool and Datadog intake.

`dora-incidents demo --source rootly` picks the tool (default pagerduty); every simulator is seeded the
same way through the driver interface (loopback/driver.py).

Run it with `bash scripts/demo.sh` (which runs `dora-incidents demo` in the project's environment).
Outside the Agent, datadog-checks-base routes metrics, events and the persistent cache to its stubs;
this prints what landed there and what the loopback Datadog API received.
"""

from __future__ import annotations

import csv
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

from datadog_checks.base.stubs import aggregator, datadog_agent

from .harness import new_check, restores
from .intake import DatadogIntake
from .simulators import make_simulator

HEALTH_PREFIX = 'dora.check.'
METADATA = Path(__file__).resolve().parents[1] / 'metadata.csv'
# How metadata.csv's units read after a value.
FOUND_BY = {'evidence': "the incident tool's evidence", 'window': 'the time window'}
UNITS = {'second': 's', 'occurrence': 'incident(s)', 'event': 'event(s)', 'item': 'incident(s)'}


def name_cause(tool, incident_id: str, version: str, commit: str | None = None, change: str | None = None) -> bool:
    """Has the tool record a change as the incident's cause, in its own terms (PagerDuty and FireHydrant by commit
    when given, else version; ServiceNow by change number; Jira by "Affects version"). False: the tool records
    none (its incidents are attributed by the window)."""
    if tool.source == 'pagerduty':
        tool.relate_change(incident_id, custom_details={'revision': commit} if commit else {'version': version})
    elif tool.source == 'firehydrant':
        tool.relate_change(
            incident_id, 'caused', identities=[('commit_sha', commit) if commit else ('version', version)]
        )
    elif tool.source == 'servicenow' and change:
        tool.relate_change(incident_id, change)
    elif tool.source == 'jira':
        tool.relate_change(incident_id, version)
    else:
        return False
    return True


def seed(tool, intake: DatadogIntake, now: datetime) -> list[str]:
    """The incidents of the README's story; returns the ids of those that are not failures."""
    # Deployments Datadog DORA knows of: v41 ran for days, v42 went out before the outage, v41 came back.
    deployments = [('v41', timedelta(days=2)), ('v42', timedelta(hours=4)), ('v41', timedelta(hours=2, minutes=20))]
    env = {'env': 'prod', **tool.expected_tags}['env']  # the tool's environment, else the instance's
    for version, age in deployments:
        intake.deploy('checkout_api', env, version, now - age - timedelta(minutes=5), now - age)
    outage = tool.open(now - timedelta(hours=3), title='Checkout returns 500s', severity='SEV1')
    tool.resolve(outage, now - timedelta(hours=2))
    # Search: s7 went out 6h ago, s8 5h ago; the tool records s7 as the cause of the next outage (the window
    # alone would charge s8, the latest before it).
    for version, age in (('s7', timedelta(hours=6)), ('s8', timedelta(hours=5))):
        tags = [f'change_request:CHG00300{version[1:]}']
        intake.deploy('search', env, version, now - age - timedelta(minutes=5), now - age, custom_tags=tags)
    search = tool.open(now - timedelta(hours=4), title='Search returns stale results', service='Search',
                       team='Discovery', severity='SEV2')  # fmt: skip
    name_cause(tool, search, 's7', change='CHG003007')
    tool.resolve(search, now - timedelta(hours=3))
    not_failures = tool.open_non_failures(now - timedelta(hours=3), now - timedelta(hours=2, minutes=30))
    slow_burn = tool.open(now - timedelta(days=40), title='Search index drifting', service='Search', team='Discovery',
                          severity='SEV3')  # fmt: skip
    tool.resolve(slow_burn, now - timedelta(minutes=30))
    billing = tool.open(now - timedelta(minutes=50), title='Invoices stuck', service='Legacy Billing', severity='SEV2')
    tool.resolve(billing, now - timedelta(minutes=5))
    tool.open(now - timedelta(minutes=20), title='Search slow (still open)', service='Search')
    return not_failures


def run_check(instance: dict, label: str, intake: DatadogIntake) -> set[str]:
    """One run by a new check object (an Agent restart); returns the ids of the incidents it reported."""
    aggregator.reset()
    sent_before = len(intake.failures)
    check = new_check(instance)
    error = check.run()
    print(f'\n=== {label} ===')
    if error:
        print('check error:', json.loads(error)[0]['message'])
    for warning in check.warnings:
        print('warning:', warning)
    print_metrics()
    print_events()
    print_failures(intake.failures[sent_before:])
    return set(restores(aggregator))


def print_metrics() -> None:
    units = {row['metric_name']: row['unit_name'] for row in csv.DictReader(METADATA.open())}
    rows = [
        (name, with_unit(stub.value, units.get(name, '')), ', '.join(stub.tags))
        for name in sorted(aggregator.metric_names)
        for stub in aggregator.metrics(name)
    ]
    dora = [row for row in rows if not row[0].startswith(HEALTH_PREFIX)]
    print(f'\nDORA metrics ({len(dora)}):' if dora else '\nDORA metrics: none (nothing newly resolved)')
    for name, value, tags in dora:
        print(f'  {name:<22} {value:>22}  {tags}')
    print('Check health:')
    for name, value, _ in rows:
        if name.startswith(HEALTH_PREFIX):
            print(f'  {name:<42} {value}')


def with_unit(value: float, unit: str) -> str:
    if unit == 'second':
        return f'{value:.0f} s ({duration(value)})' if value >= 60 else f'{value:.1f} s'
    if not unit:  # a yes/no gauge
        return f'{value:g} (1 = yes)'
    return f'{value:g} {UNITS.get(unit, unit)}'


def duration(seconds: float) -> str:
    minutes, _ = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return ' '.join(f'{n}{u}' for n, u in ((days, 'd'), (hours, 'h'), (minutes, 'min')) if n) or '0min'


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


def print_not_failures(tool, ids: list[str], reported: set[str]) -> None:
    reasons = tool.not_failures
    if len(reasons) != len(ids):  # the simulator changed its kinds: show them undescribed rather than wrongly
        reasons = ['(kind not described here)'] * len(ids)
    print(f'\nFiltered out: the tool\'s kinds that are not failures ({len(ids)}):')
    for incident_id, reason in zip(ids, reasons):
        outcome = 'REPORTED (a bug)' if incident_id in reported else 'not reported'
        print(f'  {incident_id}: {reason}: {outcome}')


def print_markings(intake: DatadogIntake, since: int = 0) -> None:
    """The deployments marked from the `since`-th marking on, by version: the failure, how it was found (the
    incident tool's evidence or the time window: `attribution` of the run's change failure counts) and its
    remediation."""
    found_by = {
        tag.split(':', 1)[1]: next((t.split(':', 1)[1] for t in stub.tags if t.startswith('attribution:')), '?')
        for stub in aggregator.metrics('dora.change_failures.count')
        for tag in stub.tags
        if tag.startswith('service:')
    }
    markings = intake.patches[since:]
    if not markings:
        print('\nDeployments marked as change failures: none' + (' (nothing marked again)' if since else ''))
        return
    print(f'\nDeployments marked as change failures ({len(markings)}):')
    for deployment_id, attributes in markings:
        failed = intake.deployments[deployment_id]
        line = f'  {failed["service"]} {failed["version"]} in {failed["env"]} ({deployment_id}): change failure'
        remediation = attributes.get('remediation')
        if remediation:
            fix = intake.deployments[remediation['id']]
            line += f', remediated by the {remediation["type"]} to {fix["version"]} ({remediation["id"]})'
        print(f'{line}; found by {FOUND_BY.get(found_by.get(failed["service"]), "?")}')


def main(source: str = 'pagerduty') -> None:
    now = datetime.now(timezone.utc).replace(microsecond=0)
    datadog_agent.reset()
    with make_simulator(source) as tool, DatadogIntake() as intake:
        not_failures = seed(tool, intake, now)
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
        print('Deployments of checkout_api: v41 (2 days ago), v42 (4h ago, before the outage), v41 again (2h20 ago).')
        print('Deployments of search: s7 (6h ago) and s8 (5h ago); a SEV2 on Search from 4h ago, whose cause the')
        print('tool records as s7 where it can (evidence); the window alone would charge s8.')
        reported = run_check(instance, 'First run (no cursor yet: looks back `initial_lookback` = 1 day)', intake)
        print_not_failures(tool, not_failures, reported)
        print_markings(intake)
        sent, marked = len(intake.failures), len(intake.patches)
        reported = run_check(instance, 'Second run (after an Agent restart): nothing is re-sent', intake)
        print_markings(intake, since=marked)
        again = len(intake.failures) - sent + len(intake.patches) - marked + len(reported)
        print(
            f'\nSent again: {"nothing" if not again else again} (DORA failures, metrics and markings of the first run)'
        )
        if intake.problems:
            raise SystemExit(f'the intake rejected payloads: {intake.problems}')


if __name__ == '__main__':
    import sys

    main(*sys.argv[1:2])
