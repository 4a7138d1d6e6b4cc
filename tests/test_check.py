"""The core contract: each resolution is reported once, with the metrics, event and DORA failure it owes."""

from datadog_checks.dev.utils import get_metadata_metrics

from loopback.server import Fault

from .common import INCIDENTS_COUNT, TIME_TO_RESTORE, ago, counted, dora_ids, restores, stored_cursor


def test_first_run_reports_what_was_resolved_within_the_lookback(
    aggregator, make_check, run, instance, pagerduty, intake, now
):
    old_open = pagerduty.trigger('PCHKOUT', ago(now, days=3), title='Checkout 500s', priority='P1')
    pagerduty.resolve(old_open, ago(now, hours=1))
    too_old = pagerduty.trigger('PSEARCH', ago(now, days=3))
    pagerduty.resolve(too_old, ago(now, days=2))
    still_open = pagerduty.trigger('PSEARCH', ago(now, hours=2))

    assert run(make_check(instance)) == []

    tags = [
        'service:checkout_api',
        'team:payments_team',
        'env:prod',
        'severity:p1',
        'source:pagerduty',
        'team_owner:sre',
    ]
    restore = (3 * 24 - 1) * 3600
    aggregator.assert_metric(TIME_TO_RESTORE, value=restore, tags=tags + [f'incident_id:{old_open}'], count=1)
    aggregator.assert_metric(INCIDENTS_COUNT, value=1, tags=tags, count=1)
    assert set(restores(aggregator)) == {old_open}
    assert still_open not in restores(aggregator)
    aggregator.assert_metrics_using_metadata(get_metadata_metrics())

    [event] = aggregator.events
    assert event['timestamp'] == int(ago(now, hours=1).timestamp())
    assert event['alert_type'] == 'success'
    assert event['aggregation_key'] == f'dora_incidents:pagerduty:{old_open}'
    assert '#1' in event['msg_title'] and 'Checkout 500s' in event['msg_title']
    assert pagerduty.incidents[old_open]['html_url'] in event['msg_text'] and 'checkout_api' in event['msg_text']
    assert set(tags) <= set(event['tags'])

    [failure] = intake.failures
    attributes = failure['data']['attributes']
    assert attributes['id'] == f'pagerduty:{old_open}'
    assert attributes['started_at'] == int(ago(now, days=3).timestamp()) * 10**9
    assert attributes['finished_at'] == int(ago(now, hours=1).timestamp()) * 10**9
    assert attributes['services'] == ['checkout_api']
    assert (attributes['team'], attributes['env'], attributes['severity']) == ('payments_team', 'prod', 'p1')
    assert attributes['name'] == 'Checkout 500s'
    assert 'source:pagerduty' in attributes['custom_tags']


def test_a_run_with_nothing_new_emits_nothing_and_remembers_the_same_incidents(
    aggregator, datadog_agent, make_check, run, instance, pagerduty, intake, now
):
    incident = pagerduty.trigger('PCHKOUT', ago(now, hours=5))
    pagerduty.resolve(incident, ago(now, hours=4))
    check = make_check(instance)
    run(check)
    reported = stored_cursor(datadog_agent)['reported']
    aggregator.reset()

    assert run(check) == []

    assert aggregator.metrics(TIME_TO_RESTORE) == [] and aggregator.metrics(INCIDENTS_COUNT) == []
    assert aggregator.events == []
    assert len(intake.failures) == 1
    assert (
        stored_cursor(datadog_agent)['reported']
        == reported
        == {f'pagerduty:{incident}': [ms(ago(now, hours=4)), ms(ago(now, hours=5)), ms(ago(now, hours=4))]}
    )


def test_incident_created_40_days_ago_resolved_while_the_agent_was_stopped(
    aggregator, make_check, run, instance, pagerduty, intake, now
):
    incident = pagerduty.trigger('PSEARCH', ago(now, days=40), priority='P2')
    run(make_check(instance))  # sees it open: nothing to report
    assert restores(aggregator) == {}

    pagerduty.resolve(incident, ago(now, seconds=1))  # the Agent is down meanwhile
    assert run(make_check(instance)) == []  # a new check object over the same cache: a restart

    assert restores(aggregator) == {incident: [40 * 86400 - 1]}
    assert counted(aggregator) == 1
    assert dora_ids(intake) == [f'pagerduty:{incident}']


def test_restart_between_runs_reports_each_resolution_once(
    aggregator, make_check, run, instance, pagerduty, intake, now
):
    first = pagerduty.trigger('PCHKOUT', ago(now, hours=3))
    pagerduty.resolve(first, ago(now, hours=2))
    run(make_check(instance))

    second = pagerduty.trigger('PCHKOUT', ago(now, minutes=30))
    pagerduty.resolve(second, ago(now, seconds=2))
    run(make_check(instance))
    run(make_check(instance))

    assert restores(aggregator) == {first: [3600], second: [30 * 60 - 2]}
    assert counted(aggregator) == 2
    assert sorted(dora_ids(intake)) == sorted([f'pagerduty:{first}', f'pagerduty:{second}'])


def test_more_than_the_offset_cap_of_resolutions_are_all_read(
    aggregator, make_check, run, instance, pagerduty, intake, now
):
    # 12,000 resolutions plus their trigger entries: 24,000 log entries, far past PagerDuty's 10,000 offset cap.
    incidents = []
    for n in range(12_000):
        incident = pagerduty.trigger('PSEARCH', ago(now, hours=20, seconds=n))
        pagerduty.resolve(incident, ago(now, hours=10, seconds=n))
        incidents.append(incident)

    assert run(make_check({**instance, 'send_events': False})) == []

    assert sorted(restores(aggregator)) == sorted(incidents)
    assert all(values == [36_000] for values in restores(aggregator).values())
    assert counted(aggregator) == 12_000
    assert sorted(dora_ids(intake)) == sorted(f'pagerduty:{i}' for i in incidents)
    assert all(int(dict(r.query)['offset']) + int(dict(r.query)['limit']) <= 10_000 for r in pagerduty.requests)


def test_two_incidents_with_identical_tags_in_one_run_are_two_points(
    aggregator, make_check, run, instance, pagerduty, now
):
    one = pagerduty.trigger('PCHKOUT', ago(now, minutes=50))
    two = pagerduty.trigger('PCHKOUT', ago(now, minutes=20))
    pagerduty.resolve(one, ago(now, minutes=10))
    pagerduty.resolve(two, ago(now, minutes=10))

    run(make_check(instance))

    # The Agent keeps only the last gauge value per context (name + tags + host) per flush.
    contexts = {frozenset(metric.tags) for metric in aggregator.metrics(TIME_TO_RESTORE)}
    assert len(contexts) == 2
    assert restores(aggregator) == {one: [40 * 60], two: [10 * 60]}
    assert counted(aggregator) == 2


def test_merged_incidents_are_not_restores(aggregator, make_check, run, instance, pagerduty, intake, now):
    survivor = pagerduty.trigger('PCHKOUT', ago(now, hours=2))
    duplicate = pagerduty.trigger('PCHKOUT', ago(now, hours=2))
    pagerduty.resolve(duplicate, ago(now, hours=1), merged_into=survivor)
    pagerduty.resolve(survivor, ago(now, minutes=1))

    run(make_check(instance))

    assert set(restores(aggregator)) == {survivor}
    assert counted(aggregator) == 1
    assert dora_ids(intake) == [f'pagerduty:{survivor}']
    assert [event['aggregation_key'] for event in aggregator.events] == [f'dora_incidents:pagerduty:{survivor}']


def test_reopened_incident_updates_its_failure_without_counting_twice(
    aggregator, make_check, run, instance, pagerduty, intake, now
):
    incident = pagerduty.trigger('PCHKOUT', ago(now, hours=3))
    pagerduty.resolve(incident, ago(now, hours=2))
    run(make_check(instance))

    pagerduty.reopen(incident, ago(now, hours=1))
    run(make_check(instance))  # open again: nothing new
    pagerduty.resolve(incident, ago(now, seconds=1))
    run(make_check(instance))

    first, second = intake.failures
    assert first['data']['attributes']['id'] == second['data']['attributes']['id'] == f'pagerduty:{incident}'
    assert first['data']['attributes']['started_at'] == second['data']['attributes']['started_at']
    assert second['data']['attributes']['finished_at'] == int(ago(now, seconds=1).timestamp()) * 10**9
    assert counted(aggregator) == 1
    # The gauge gets a point per resolution; the later one is the true time to restore.
    assert restores(aggregator) == {incident: [3600, 3 * 3600 - 1]}
    assert ['resolved' in e['msg_title'] and 'again' in e['msg_title'] for e in aggregator.events] == [False, True]


def test_a_429_mid_read_is_waited_out(aggregator, make_check, run, instance, pagerduty, intake, now):
    incidents = [pagerduty.trigger('PSEARCH', ago(now, hours=3, minutes=n)) for n in range(150)]
    for incident in incidents:
        pagerduty.resolve(incident, ago(now, hours=1))
    pagerduty.inject(Fault(status=429, headers={'ratelimit-reset': '1'}, path='/log_entries', skip=2))

    assert run(make_check(instance)) == []

    assert sorted(restores(aggregator)) == sorted(incidents)
    offsets = [dict(r.query)['offset'] for r in pagerduty.requests]
    assert len(offsets) == len(set(offsets)) + 1  # exactly one page was asked twice


def test_a_long_rate_limit_ends_the_run_and_the_next_run_catches_up(
    aggregator, datadog_agent, make_check, run, instance, pagerduty, intake, now
):
    incidents = [pagerduty.trigger('PSEARCH', ago(now, hours=3, minutes=n)) for n in range(150)]
    for incident in incidents:
        pagerduty.resolve(incident, ago(now, hours=1))
    pagerduty.inject(Fault(status=429, headers={'ratelimit-reset': '3600'}, path='/log_entries', skip=2))

    warnings = run(make_check(instance))

    assert any('rate limit' in warning for warning in warnings)
    assert restores(aggregator) == {} and intake.failures == []
    aggregator.assert_metric('dora.check.source.can_connect', value=0)
    assert stored_cursor(datadog_agent)['watermark'] is None  # nothing was fully read: the cursor did not move

    aggregator.reset()
    assert run(make_check(instance)) == []
    assert sorted(restores(aggregator)) == sorted(incidents)
    aggregator.assert_metric('dora.check.source.can_connect', value=1)


def test_changing_tags_between_runs_re_emits_nothing(aggregator, make_check, run, instance, pagerduty, intake, now):
    incident = pagerduty.trigger('PCHKOUT', ago(now, hours=2))
    pagerduty.resolve(incident, ago(now, hours=1))
    run(make_check(instance))
    aggregator.reset()

    run(make_check({**instance, 'tags': ['team_owner:platform', 'new:tag'], 'min_collection_interval': 300}))

    assert restores(aggregator) == {} and counted(aggregator) == 0
    assert len(intake.failures) == 1


def test_every_request_sends_explicit_utc(make_check, run, instance, pagerduty, now):
    run(make_check(instance))
    queries = [dict(r.query) for r in pagerduty.requests]
    assert queries
    for query in queries:
        assert query['time_zone'] == 'UTC'
        assert query['since'].endswith('Z') and query['until'].endswith('Z')


def test_dora_api_answering_202_is_success(
    aggregator, datadog_agent, make_check, run, instance, pagerduty, intake, now
):
    intake.status = 202
    incident = pagerduty.trigger('PCHKOUT', ago(now, hours=2))
    pagerduty.resolve(incident, ago(now, hours=1))

    assert run(make_check(instance)) == []
    aggregator.assert_metric('dora.check.outbox.pending', value=0)


def ms(moment):
    return int(moment.timestamp()) * 1000
