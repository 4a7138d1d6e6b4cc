"""Malformed data from the source is skipped by name and never stalls the others; secrets never leak."""

import logging

import pytest
import requests

from datadog_checks.dora_incidents.sources.pagerduty import describe_error
from loopback.server import Fault

from .common import ago, dora_ids, restores, stored_cursor


@pytest.mark.parametrize(
    'fields, reason',
    [
        ({'created_at': None}, 'created_at'),
        ({'created_at': 'last tuesday'}, 'created_at'),
        ({'resolved_at': '2026-11-26T07:00:00'}, 'no time zone'),
        ({'created_at': '2099-01-01T00:00:00Z'}, 'before it started'),
        ({'service': 'not an object'}, 'str'),
        ({'teams': ['Payments']}, '`teams`'),
        ({'status': 'snoozed'}, 'unknown status'),
        ({'resolved_at': '2099-01-01T00:00:00Z'}, 'in the future'),
    ],
)
def test_malformed_incident_is_skipped_by_name(
    aggregator, datadog_agent, make_check, run, instance, pagerduty, now, fields, reason
):
    bad = pagerduty.trigger('PCHKOUT', ago(now, hours=3))
    good = pagerduty.trigger('PCHKOUT', ago(now, hours=3))
    for incident in (bad, good):
        pagerduty.resolve(incident, ago(now, hours=1))
    pagerduty.corrupt(bad, **fields)

    warnings = run(make_check(instance))

    assert len(warnings) == 1 and bad in warnings[0] and reason in warnings[0]
    assert set(restores(aggregator)) == {good}
    aggregator.assert_metric('dora.check.incidents.skipped', value=1)
    assert stored_cursor(datadog_agent)['watermark'] is not None  # the cursor moved on


def test_log_entry_without_an_embedded_incident_is_skipped(aggregator, make_check, run, instance, pagerduty, now):
    incident = pagerduty.trigger('PCHKOUT', ago(now, hours=3))
    pagerduty.resolve(incident, ago(now, hours=1))
    pagerduty.corrupt(incident, status=None)
    del pagerduty.incidents[incident]['status']

    warnings = run(make_check(instance))

    assert len(warnings) == 1 and 'embeds no incident' in warnings[0]


@pytest.mark.parametrize(
    'fault, cause',
    [
        (Fault(status=500, times=3, path='/log_entries'), 'HTTP 500'),
        (Fault(status=200, body=b'<html>Bad gateway</html>', headers={'Content-Type': 'text/html'}), 'not JSON'),
        (Fault(truncate=True, path='/log_entries'), 'not JSON'),
        (Fault(reset=True, path='/log_entries'), 'broke in the middle'),
        (Fault(delay=10, path='/log_entries'), 'did not answer in time'),
        (Fault(status=429, headers={'ratelimit-reset': '900'}, path='/log_entries'), 'rate limit'),
    ],
)
def test_source_faults_warn_with_the_cause_and_never_leak_secrets(
    aggregator, make_check, run, instance, pagerduty, intake, now, caplog, capsys, fault, cause
):
    caplog.set_level(logging.DEBUG)
    incident = pagerduty.trigger('PCHKOUT', ago(now, hours=3))
    pagerduty.resolve(incident, ago(now, hours=1))
    pagerduty.inject(fault)
    # Only the delay is about the timeout: half the delay, not so short that a busy machine misses it elsewhere.
    instance.update(log_requests=True, **({'timeout': fault.delay / 2} if fault.delay else {}))

    warnings = run(make_check(instance))

    assert len(warnings) == 1 and cause in warnings[0]
    assert restores(aggregator) == {}
    run(make_check(instance))  # the fault has cleared
    assert set(restores(aggregator)) == {incident} and dora_ids(intake) == [f'pagerduty:{incident}']
    output = caplog.text + ''.join(capsys.readouterr()) + ''.join(warnings)
    assert pagerduty.token not in output and intake.api_key not in output


@pytest.mark.parametrize('status, cause', [(401, 'api_url'), (403, 'read access')])
def test_a_rejected_token_ends_the_run_with_an_error_after_the_health_metrics(
    aggregator, make_check, instance, pagerduty, intake, now, caplog, status, cause
):
    caplog.set_level(logging.DEBUG)
    incident = pagerduty.trigger('PCHKOUT', ago(now, hours=3))
    pagerduty.resolve(incident, ago(now, hours=1))
    pagerduty.inject(Fault(status=status, path='/log_entries'))

    error = make_check(instance).run()

    assert cause in error and 'api_token' in error and 'PagerDuty' in error
    aggregator.assert_metric('dora.check.source.can_connect', value=0)
    assert pagerduty.token not in error + caplog.text
    run_again = make_check(instance).run()  # the token is fixed: nothing was lost
    assert run_again == '' and set(restores(aggregator)) == {incident}


@pytest.mark.parametrize(
    'url, other_region',
    [
        ('https://api.pagerduty.com/log_entries', 'api_url: https://api.eu.pagerduty.com'),
        ('https://api.eu.pagerduty.com/log_entries', 'api_url: https://api.pagerduty.com`'),
    ],
)
def test_a_rejected_token_points_at_the_other_service_region(url, other_region):
    response = requests.Response()
    response.status_code, response.url = 401, url
    response._content = b'{"error": {"message": "Authentication failed", "code": 2006}}'

    message = describe_error(response)

    assert other_region in message and 'Authentication failed' in message and 'api_token' in message
