"""Filters decide which incidents count; the mapping decides how they are named in Datadog."""

from .common import ago, dora_ids, restores


def test_filters_by_service_team_and_urgency(aggregator, make_check, run, instance, pagerduty, now):
    wanted = pagerduty.trigger('PCHKOUT', ago(now, hours=2), urgency='high')
    low = pagerduty.trigger('PCHKOUT', ago(now, hours=2), urgency='low')
    other_service = pagerduty.trigger('PSEARCH', ago(now, hours=2), urgency='high')
    for incident in (wanted, low, other_service):
        pagerduty.resolve(incident, ago(now, hours=1))

    instance.update(service_ids=['PCHKOUT'], team_ids=['PTEAM01'], urgencies=['high'])
    assert run(make_check(instance)) == []

    assert set(restores(aggregator)) == {wanted}
    assert all(r.query.count(('team_ids[]', 'PTEAM01')) == 1 for r in pagerduty.requests)


def test_team_filter_is_applied_by_pagerduty(aggregator, make_check, run, instance, pagerduty, now):
    payments = pagerduty.trigger('PCHKOUT', ago(now, hours=2))
    discovery = pagerduty.trigger('PSEARCH', ago(now, hours=2))
    for incident in (payments, discovery):
        pagerduty.resolve(incident, ago(now, hours=1))

    run(make_check({**instance, 'team_ids': ['PTEAM02']}))

    assert set(restores(aggregator)) == {discovery}


def test_team_filter_without_the_teams_ability_names_the_filter(aggregator, make_check, run, instance, pagerduty, now):
    pagerduty.abilities.discard('teams')

    warnings = run(make_check({**instance, 'team_ids': ['PTEAM02']}))

    assert len(warnings) == 1 and 'team_ids' in warnings[0] and 'HTTP 402' in warnings[0]
    aggregator.assert_metric('dora.check.source.can_connect', value=0)


def test_service_mapping_by_id_or_name_and_fallbacks(aggregator, make_check, run, instance, pagerduty, intake, now):
    by_id = pagerduty.trigger('PCHKOUT', ago(now, hours=2), priority='P1')
    by_name = pagerduty.trigger('PLEGACY', ago(now, hours=2))
    unmapped = pagerduty.trigger('PSEARCH', ago(now, hours=2), urgency='low')
    for incident in (by_id, by_name, unmapped):
        pagerduty.resolve(incident, ago(now, hours=1))
    instance['service_mapping'] = {
        'PCHKOUT': {'service': 'checkout', 'team': 'payments', 'env': 'prod-eu'},
        'Checkout API': {'service': 'loses-to-the-id'},
        'Legacy Billing': {'service': 'billing'},
    }

    run(make_check(instance))

    attributes = {a['id'].split(':')[1]: a for a in intake.latest_by_id().values()}
    assert (attributes[by_id]['services'], attributes[by_id]['team'], attributes[by_id]['env']) == (
        ['checkout'],
        'payments',
        'prod-eu',
    )
    assert attributes[by_id]['severity'] == 'p1'
    # Mapped by name; the service has no team in PagerDuty, and the instance env applies.
    assert (attributes[by_name]['services'], attributes[by_name].get('team'), attributes[by_name]['env']) == (
        ['billing'],
        None,
        'prod',
    )
    # Unmapped: PagerDuty's service name and first team, spelled as Datadog tags; urgency as severity.
    assert (attributes[unmapped]['services'], attributes[unmapped]['team'], attributes[unmapped]['severity']) == (
        ['search'],
        'discovery',
        'low',
    )
    aggregator.assert_metric(
        'dora.incidents.count',
        tags=['service:checkout', 'team:payments', 'env:prod-eu', 'severity:p1', 'source:pagerduty', 'team_owner:sre'],
    )


def test_disable_generic_tags_renames_service_and_env(aggregator, make_check, run, instance, pagerduty, intake, now):
    incident = pagerduty.trigger('PCHKOUT', ago(now, hours=2))
    pagerduty.resolve(incident, ago(now, hours=1))

    run(make_check({**instance, 'disable_generic_tags': True}))

    [metric] = aggregator.metrics('dora.incidents.count')
    assert 'dora_incidents_service:checkout_api' in metric.tags and 'dora_incidents_env:prod' in metric.tags
    assert dora_ids(intake) == [f'pagerduty:{incident}']
