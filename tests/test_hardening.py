"""What a real Agent, a second Datadog org and a hostile environment find: each case failed before the fix."""

import logging

from datadog_checks.dora_incidents.config_models import defaults

from loopback.intake import DatadogIntake

from .common import ago, counted, restores


def test_two_datadog_organisations_reading_one_scope_each_get_every_incident(
    aggregator, make_check, run, instance, pagerduty, intake, now
):
    incident = pagerduty.trigger('PCHKOUT', ago(now, hours=2))
    pagerduty.resolve(incident, ago(now, hours=1))
    with DatadogIntake(api_key='second-org-key') as second_org:
        run(make_check(instance, 'dora_incidents:first'))
        run(make_check({**instance, 'datadog_api_url': second_org.url, 'datadog_api_key': second_org.api_key},
                       'dora_incidents:second'))  # fmt: skip

        assert len(intake.failures) == 1 and len(second_org.failures) == 1
    assert counted(aggregator) == 2  # once per organisation's instance


def test_spelling_out_the_default_or_a_trailing_slash_keeps_the_cursor(make_check, run, instance, pagerduty, now):
    base = make_check(instance)
    run(base)
    for spelling in (instance['api_url'] + '/', instance['api_url'].upper().replace('HTTP://', 'http://')):
        check = make_check({**instance, 'api_url': spelling})
        run(check)
        assert check.persistent_cache_id() == base.persistent_cache_id()
    without_url = {key: value for key, value in instance.items() if key != 'api_url'}
    explicit = make_check({**without_url, 'api_url': 'https://api.pagerduty.com'})
    implicit = make_check(without_url)
    for check in (explicit, implicit):
        check.load_configuration_models()
    assert explicit.persistent_cache_id() == implicit.persistent_cache_id()


def test_service_and_team_filters_with_the_same_id_do_not_share_a_cursor(make_check, instance):
    by_service, by_team = make_check({**instance, 'service_ids': ['X']}), make_check({**instance, 'team_ids': ['X']})
    for check in (by_service, by_team):
        check.load_configuration_models()
    assert by_service.persistent_cache_id() != by_team.persistent_cache_id()


def test_no_event_is_dated_older_than_datadog_keeps(aggregator, make_check, run, instance, pagerduty, now):
    old = pagerduty.trigger('PCHKOUT', ago(now, hours=22))
    pagerduty.resolve(old, ago(now, hours=20))  # within the 24-hour lookback, past Datadog's 18 hours
    recent = pagerduty.trigger('PCHKOUT', ago(now, hours=2))
    pagerduty.resolve(recent, ago(now, hours=1))

    run(make_check(instance))

    events = {event['aggregation_key'].rsplit(':', 1)[1]: event for event in aggregator.events}
    assert events[recent]['timestamp'] == int(ago(now, hours=1).timestamp())
    assert events[old]['timestamp'] >= int(now.timestamp()) and 'Reported late' in events[old]['msg_text']
    assert set(restores(aggregator)) == {old, recent}  # metrics and DORA failures are unaffected


def test_http_options_for_the_source_are_not_sent_to_datadog(make_check, run, instance, pagerduty, intake, now):
    incident = pagerduty.trigger('PCHKOUT', ago(now, hours=2))
    pagerduty.resolve(incident, ago(now, hours=1))

    run(make_check({**instance, 'headers': {'X-Proxy-Auth': 'for-pagerduty-only'}}))

    assert all(request.headers.get('x-proxy-auth') == 'for-pagerduty-only' for request in pagerduty.requests)
    assert intake.requests and all('x-proxy-auth' not in request.headers for request in intake.requests)


def test_the_default_run_budget_fits_the_default_collection_interval():
    assert defaults.instance_max_run_time() < defaults.instance_min_collection_interval() * 0.75


def test_lost_cache_writes_never_count_twice_and_say_so(
    aggregator, datadog_agent, make_check, run, instance, pagerduty, now, monkeypatch
):
    monkeypatch.setattr(datadog_agent, 'write_persistent_cache', lambda key, value: None)  # read-only run dir
    incidents = [pagerduty.trigger('PCHKOUT', ago(now, hours=3, minutes=n)) for n in range(3)]
    for incident in incidents:
        pagerduty.resolve(incident, ago(now, hours=1))
    check = make_check(instance)

    warnings = [warning for _ in range(3) for warning in run(check)]

    assert counted(aggregator) == 3 and all(len(values) == 1 for values in restores(aggregator).values())
    assert any('could not be saved' in warning for warning in warnings)
    aggregator.assert_metric('dora.check.cursor.save_failed', value=1)


def test_a_host_clock_ahead_of_the_source_delays_but_never_loses(
    aggregator, make_check, run, instance, pagerduty, now, caplog
):
    caplog.set_level(logging.WARNING)
    pagerduty.clock_offset = -600  # the source's clock is 10 minutes behind this host's
    check = make_check(instance)
    warnings = run(check)
    assert any('ahead' in warning for warning in warnings)
    later = [pagerduty.trigger('PCHKOUT', ago(now, minutes=30)) for _ in range(3)]
    for n, incident in enumerate(later):  # resolved "now" by the source's clock
        pagerduty.resolve(incident, ago(now, minutes=9 - n))

    run(check)

    assert set(restores(aggregator)) == set(later)


def test_metric_namespace_keeps_the_checks_points_apart_from_datadogs_own(
    aggregator, make_check, run, instance, pagerduty, now
):
    incident = pagerduty.trigger('PCHKOUT', ago(now, hours=2))
    pagerduty.resolve(incident, ago(now, hours=1))

    run(make_check({**instance, 'metric_namespace': 'dora_incidents'}))

    aggregator.assert_metric('dora_incidents.time_to_restore', value=3600, count=1)
    aggregator.assert_metric('dora_incidents.incidents.count', value=1, count=1)
    assert not aggregator.metrics('dora.time_to_restore') and not aggregator.metrics('dora.incidents.count')
    assert '`metric_namespace`' in make_check({**instance, 'metric_namespace': 'Not A Prefix!'}).run()


def test_an_error_body_echoing_the_token_never_reaches_a_warning(make_check, run, instance, pagerduty, now):
    from loopback.server import Fault

    echo = ('{"error": {"message": "bad request for token %s"}}' % pagerduty.token).encode()
    pagerduty.inject(Fault(status=400, body=echo, path='/log_entries'))

    warnings = run(make_check(instance))

    assert warnings and 'bad request for token' in warnings[0] and pagerduty.token not in ''.join(warnings)


def test_rotating_the_agents_api_key_keeps_the_cursor(make_check, datadog_agent, instance, monkeypatch):
    without_key = {key: value for key, value in instance.items() if key != 'datadog_api_key'}
    ids = []
    for agent_key in ('agent-key-before-rotation', 'agent-key-after-rotation'):
        monkeypatch.setitem(datadog_agent._config, 'api_key', agent_key)
        check = make_check(without_key)
        check.load_configuration_models()
        ids.append(check.persistent_cache_id())
    assert ids[0] == ids[1]
