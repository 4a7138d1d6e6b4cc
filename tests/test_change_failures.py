"""Deployments marked as change failures, and a lost cursor that no longer re-counts (issue 9).

Over HTTP against the loopback intake, which holds deployments (`intake.deploy`), validates every list
and PATCH body with `datadog-api-client`'s models and checks both keys; the pure choices are tested
without HTTP at the end.
"""

import math
from datetime import datetime, timedelta, timezone

import pytest
import requests
from datadog_checks.dev.utils import get_metadata_metrics

from datadog_checks.dora_incidents import change_failures, recovery
from datadog_checks.dora_incidents.change_failures import (
    ChangeFailures,
    Deployment,
    causing_deployment,
    deployment_link,
    first_remediation,
    remediation_type,
)
from datadog_checks.dora_incidents.datadog import datadog_api as dora_api
from datadog_checks.dora_incidents.datadog import outbox
from datadog_checks.dora_incidents.datadog.reads import search_query
from datadog_checks.dora_incidents.incident import Incident, SourceIncident
from datadog_checks.dora_incidents.recovery import recover_reported
from loopback.intake import DEPLOYMENTS_PATH, FAILURES_PATH
from loopback.server import Fault

from .common import ago, counted, dora_ids, restores

MARKED = 'dora.check.change_failures.marked'
UNMATCHED = 'dora.check.change_failures.unmatched'
REPO = 'https://github.com/acme/checkout'
SHA = {version: (version.encode().hex() * 40)[:40] for version in ('v1', 'v2', 'v3')}


@pytest.fixture
def marking(instance, intake):
    return {**instance, 'mark_change_failures': True, 'datadog_app_key': intake.app_key}


@pytest.fixture
def incident(pagerduty, now):
    """On Checkout API (Datadog service `checkout_api`, env `prod`): started 2 hours ago, resolved 1 hour ago."""
    incident = pagerduty.trigger('PCHKOUT', ago(now, hours=2), title='Checkout 500s')
    pagerduty.resolve(incident, ago(now, hours=1))
    return incident


@pytest.fixture
def no_backoff(monkeypatch):
    monkeypatch.setattr(outbox, 'MIN_BACKOFF', 0)


def deploy(intake, now, version, hours_ago, service='checkout_api', env='prod', git=True):
    """A deployment that took ten minutes and finished `hours_ago`; with its git info unless `git` is False."""
    finished = ago(now, hours=hours_ago)
    info = {'commit_sha': SHA.get(version, SHA['v3']), 'repository_url': REPO} if git else None
    return intake.deploy(service, env, version, finished - timedelta(minutes=10), finished, git=info)


def requests_to(intake, method, path):
    return [r for r in intake.requests if r.method == method and r.path.startswith(path)]


def failure_attributes(intake) -> dict:
    [failure] = intake.latest_by_id().values()
    return failure


# -- marking ------------------------------------------------------------------------------------------
def test_the_deployment_before_the_incident_is_marked_and_the_next_one_remediates_it(
    aggregator, make_check, run, marking, intake, incident, now
):
    deploy(intake, now, 'v1', 30)  # before the window (24 hours before the start)
    failed = deploy(intake, now, 'v2', 3)
    fix = deploy(intake, now, 'v3', 1.5)
    deploy(intake, now, 'v4', 0.5)  # after the resolution

    assert run(make_check(marking)) == []

    assert intake.markings() == {failed: {'change_failure': True, 'remediation': {'id': fix, 'type': 'rollforward'}}}
    attributes = failure_attributes(intake)
    assert attributes['version'] == 'v2'
    assert attributes['git'] == {'commit_sha': SHA['v2'], 'repository_url': REPO}
    assert counted(aggregator) == 1 and set(restores(aggregator)) == {incident}
    aggregator.assert_metric(MARKED, value=1, count=1)
    aggregator.assert_metric(UNMATCHED, value=0, count=1)
    aggregator.assert_metrics_using_metadata(get_metadata_metrics())


@pytest.mark.parametrize('page', [change_failures.LIST_LIMIT, 2], ids=['one page', 'paged by time'])
def test_a_redeploy_of_what_ran_before_is_a_rollback_even_from_before_the_window(
    make_check, run, marking, intake, incident, now, monkeypatch, page
):
    monkeypatch.setattr(change_failures, 'LIST_LIMIT', page)
    deploy(intake, now, 'v1', 24 * 3)  # three days before: outside the window, found when looking further back
    for hours in (60, 50, 40, 30):
        deploy(intake, now, f'v1.{hours}', hours, git=False)
    failed = deploy(intake, now, 'v2', 3)
    rollback = deploy(intake, now, 'v1', 1.5)

    assert run(make_check(marking)) == []

    assert intake.markings() == {failed: {'change_failure': True, 'remediation': {'id': rollback, 'type': 'rollback'}}}
    if page == 2:
        assert len(requests_to(intake, 'POST', DEPLOYMENTS_PATH)) > 2


def test_other_services_and_environments_are_never_touched(aggregator, make_check, run, marking, intake, incident, now):
    failed = deploy(intake, now, 'v2', 3)
    deploy(intake, now, 'v3', 2.5, env='staging')  # later, but another env
    deploy(intake, now, 'v4', 1.5, env='staging')
    deploy(intake, now, 's9', 2.5, service='search')  # later, but another service
    deploy(intake, now, 's10', 1.5, service='search')

    assert run(make_check(marking)) == []

    # No later prod deployment of checkout_api: marked without a remediation.
    assert intake.markings() == {failed: {'change_failure': True}}
    assert failure_attributes(intake)['version'] == 'v2'
    aggregator.assert_metric(MARKED, value=1)


def test_no_deployment_in_the_window_marks_nothing_and_is_counted(
    aggregator, make_check, run, marking, intake, incident, now
):
    deploy(intake, now, 'v1', 30)
    deploy(intake, now, 'v2', 1.5)  # during the incident: not its cause

    assert run(make_check(marking)) == []

    assert intake.markings() == {}
    assert 'version' not in failure_attributes(intake) and 'git' not in failure_attributes(intake)
    assert counted(aggregator) == 1
    aggregator.assert_metric(UNMATCHED, value=1, count=1)
    aggregator.assert_metric(MARKED, value=0, count=1)


def test_a_deployment_is_marked_once_across_runs_restarts_and_a_reopen(
    aggregator, make_check, run, marking, intake, incident, pagerduty, now
):
    failed = deploy(intake, now, 'v2', 3)
    check = make_check(marking)

    run(check)
    run(check)
    run(make_check(marking))  # an Agent restart

    assert [r.path for r in requests_to(intake, 'PATCH', DEPLOYMENTS_PATH)] == [f'{DEPLOYMENTS_PATH}/{failed}']

    pagerduty.reopen(incident, ago(now, seconds=30))
    pagerduty.resolve(incident, ago(now, seconds=1))
    run(check)

    # The reopened incident finds its deployment marked already (by this check): it is left as it is.
    assert len(requests_to(intake, 'PATCH', DEPLOYMENTS_PATH)) == 1
    assert intake.markings() == {failed: {'change_failure': True}}
    assert sum(value for value in _values(aggregator, 'dora.check.change_failures.already_marked')) == 1
    assert sum(_values(aggregator, 'dora.change_failures.count')) == 1


def _values(aggregator, name):
    return [metric.value for metric in aggregator.metrics(name)]


def test_one_list_per_service_covers_the_incidents_of_a_run(make_check, run, marking, intake, pagerduty, now):
    failed = deploy(intake, now, 'v2', 5)
    incidents = [pagerduty.trigger('PCHKOUT', ago(now, hours=4, minutes=10 * n)) for n in range(4)]
    for n, incident in enumerate(incidents):
        pagerduty.resolve(incident, ago(now, hours=1, minutes=n))

    run(make_check(marking))

    assert len(requests_to(intake, 'POST', DEPLOYMENTS_PATH)) == 1
    assert intake.markings() == {failed: {'change_failure': True}}
    assert len(requests_to(intake, 'PATCH', DEPLOYMENTS_PATH)) == 1  # the same deployment, once per run


def test_marking_is_off_by_default(aggregator, make_check, run, instance, intake, incident, now):
    deploy(intake, now, 'v2', 3)

    run(make_check({**instance, 'datadog_app_key': intake.app_key}))

    assert requests_to(intake, 'POST', DEPLOYMENTS_PATH) == [] and requests_to(intake, 'PATCH', DEPLOYMENTS_PATH) == []
    assert 'version' not in failure_attributes(intake)
    assert aggregator.metrics(MARKED) == [] and counted(aggregator) == 1


def test_marking_without_sending_failures(make_check, run, marking, intake, incident, now):
    failed = deploy(intake, now, 'v2', 3)

    run(make_check({**marking, 'send_dora_failures': False}))

    assert intake.markings() == {failed: {'change_failure': True}}
    assert intake.failures == []


def test_a_missing_application_key_is_a_configuration_error(make_check, instance, intake, incident):
    error = make_check({**instance, 'mark_change_failures': True}).run()

    assert 'datadog_app_key' in error and 'ConfigurationError' in error
    assert requests_to(intake, 'POST', DEPLOYMENTS_PATH) == []


def test_the_agents_application_key_is_the_default(datadog_agent, make_check, run, instance, intake, incident, now):
    failed = deploy(intake, now, 'v2', 3)
    datadog_agent._config['app_key'] = intake.app_key

    assert run(make_check({**instance, 'mark_change_failures': True})) == []

    assert intake.markings() == {failed: {'change_failure': True}}


def test_a_rejected_application_key_is_named_and_incidents_are_still_reported(
    aggregator, make_check, run, marking, intake, incident, now
):
    deploy(intake, now, 'v2', 3)

    warnings = run(make_check({**marking, 'datadog_app_key': 'revoked-app-key'}))

    assert warnings and all('datadog_app_key' in warning and '403' in warning for warning in warnings)
    assert 'revoked-app-key' not in ''.join(warnings)
    assert intake.markings() == {}
    assert counted(aggregator) == 1 and set(restores(aggregator)) == {incident}
    assert [body['data']['attributes']['id'] for body in intake.failures] == [f'pagerduty:{incident}']
    aggregator.assert_metric('dora.check.change_failures.lookup_failed', value=1)


def test_a_marking_that_fails_waits_in_the_outbox(
    aggregator, make_check, run, marking, intake, incident, now, no_backoff
):
    failed = deploy(intake, now, 'v2', 3)
    intake.inject(Fault(status=503, path=f'{DEPLOYMENTS_PATH}/{failed}'))

    run(make_check(marking))

    assert intake.markings() == {}
    aggregator.assert_metric('dora.check.outbox.pending', value=1)
    assert len(intake.failures) == 1  # the failure itself went out

    aggregator.reset()
    run(make_check(marking))  # after a restart, too

    assert intake.markings() == {failed: {'change_failure': True}}
    aggregator.assert_metric('dora.check.outbox.pending', value=0)
    aggregator.assert_metric(MARKED, value=0)  # nothing newly resolved: the queued marking is not counted twice


def test_each_service_of_an_incident_has_its_causing_deployment_marked(make_check, marking, intake, now):
    checkout = deploy(intake, now, 'v2', 3)
    search = deploy(intake, now, 's7', 4, service='search', git=False)
    deploy(intake, now, 's8', 1.5, service='search', git=False)
    check = make_check(marking)
    check.run_check_initializations()
    api = dora_api(check)
    api.begin(math.inf)
    marker = ChangeFailures(api, timedelta(days=1), check.warning)

    incident = _incident(('checkout_api', 'search'), 'prod', ago(now, hours=2), ago(now, hours=1))
    causing = marker.causing(incident)
    marker.mark(incident)
    api.finish()

    assert set(intake.markings()) == {checkout, search}
    assert intake.markings()[search]['remediation']['type'] == 'rollforward'
    assert causing.id == checkout  # the latest of them names the failure's version


# -- a lost cursor ------------------------------------------------------------------------------------
@pytest.mark.parametrize('page', [change_failures.LIST_LIMIT, 2], ids=['one page', 'paged by time'])
def test_the_failures_already_sent_are_recovered(make_check, run, marking, intake, pagerduty, now, monkeypatch, page):
    incidents = [pagerduty.trigger('PCHKOUT', ago(now, hours=5, minutes=n)) for n in range(5)]
    for n, incident in enumerate(incidents):
        pagerduty.resolve(incident, ago(now, hours=1, minutes=n))
    check = make_check(marking)
    run(check)
    _send_foreign_failures(intake, now)
    monkeypatch.setattr(recovery, 'LIST_LIMIT', page)
    listed_before = len(requests_to(intake, 'POST', FAILURES_PATH))  # the check's own, at its first run

    recovered = recover_reported(dora_api(check), 'pagerduty', 'prod', ago(now, days=1), now)

    expected = {f'pagerduty:{i}': int(ago(now, hours=1, minutes=n).timestamp() * 1000) for n, i in enumerate(incidents)}
    assert recovered == expected
    listed = len(requests_to(intake, 'POST', FAILURES_PATH)) - listed_before
    assert listed == (1 if page > 5 else 5)  # each page repeats the last one's oldest


def test_a_re_dispatched_cluster_check_counts_nothing_twice(
    aggregator, datadog_agent, make_check, run, marking, intake, incident, pagerduty, now
):
    run(make_check(marking))
    assert counted(aggregator) == 1
    aggregator.reset()
    datadog_agent._cache.clear()  # another node: no cursor, no outbox
    later = pagerduty.trigger('PSEARCH', ago(now, minutes=50))
    pagerduty.resolve(later, ago(now, minutes=20))

    run(make_check(marking))

    assert counted(aggregator) == 1 and set(restores(aggregator)) == {later}


# -- the intake itself --------------------------------------------------------------------------------
def test_the_intake_checks_both_keys_and_every_body(intake, now):
    deployment = deploy(intake, now, 'v2', 3)
    url = f'{intake.url}{DEPLOYMENTS_PATH}'
    keys = {'DD-API-KEY': intake.api_key, 'DD-APPLICATION-KEY': intake.app_key}
    listing = {
        'data': {'type': 'dora_deployments_list_request', 'attributes': {'query': 'service:checkout_api', 'limit': 10}}
    }

    assert requests.post(url, json=listing, headers={'DD-API-KEY': intake.api_key}).status_code == 403
    [listed] = requests.post(url, json=listing, headers=keys).json()['data']
    assert listed['id'] == deployment and listed['attributes']['git']['repository_id'] == 'github.com/acme/checkout'
    patch = {
        'data': {
            'id': deployment,
            'type': 'dora_deployment_patch_request',
            'attributes': {'change_failure': True, 'remediation': {'type': 'revert'}},
        }
    }
    answer = requests.patch(f'{url}/{deployment}', json=patch, headers=keys)
    assert answer.status_code == 400
    [error] = answer.json()['errors']  # Datadog's JSON:API error object
    assert error['status'] == '400' and error['title'] == 'Bad Request' and 'revert' in error['detail']
    assert len(intake.problems) == 1 and 'revert' in intake.problems[0]  # Datadog's description rejects it
    intake.problems.clear()


# -- the choices, without HTTP ------------------------------------------------------------------------
T0 = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)
WINDOW = timedelta(days=1)


def _deployment(id, hours, version=None, service='checkout', env='prod', commit=None, repository=None):
    finished = T0 + timedelta(hours=hours)
    return Deployment(id, service, env, version, commit, repository, finished - timedelta(minutes=5), finished)


def _incident(services, env, started_at, resolved_at) -> Incident:
    origin = SourceIncident('pagerduty', 'Q1', '#1', 'Down', None, started_at, resolved_at, resolved_at)
    return Incident(origin, tuple(services), None, env, None)


def test_the_cause_is_the_latest_deployment_of_the_service_and_env_in_the_window():
    deployments = [
        _deployment('old', -30),
        _deployment('cause', -3),
        _deployment('cause-before', -4),
        _deployment('staging', -1, env='staging'),
        _deployment('other', -1, service='search'),
        _deployment('during', 1),
    ]
    assert causing_deployment(deployments, 'checkout', 'prod', T0, WINDOW).id == 'cause'
    # No env: one environment's deployments are unambiguous, several are not (never a staging one by chance).
    assert causing_deployment(deployments, 'checkout', None, T0, WINDOW) is None
    prod_only = [d for d in deployments if d.env == 'prod']
    assert causing_deployment(prod_only, 'checkout', None, T0, WINDOW).id == 'cause'
    assert causing_deployment(deployments, 'checkout', 'prod', T0, timedelta(hours=2)) is None


def test_the_remediation_is_the_first_later_deployment_during_the_incident():
    failed = _deployment('failed', -3, 'v2')
    deployments = [
        failed,
        _deployment('fix', 1, 'v3'),
        _deployment('later', 2, 'v4'),
        _deployment('after', 9, 'v5'),
        _deployment('staging', 0.5, 'v3', env='staging'),
    ]
    assert first_remediation(deployments, failed, T0, T0 + timedelta(hours=4)).id == 'fix'
    assert first_remediation(deployments, failed, T0, T0 + timedelta(minutes=30)) is None


@pytest.mark.parametrize(
    'fix, expected',
    [
        ({'version': 'v1'}, 'rollback'),  # V1 -> V2 (failed) -> V1
        ({'version': 'v1-rebuild', 'commit': 'A' * 40}, 'rollback'),  # the same commit as what ran before
        ({'version': 'v3'}, 'rollforward'),
        ({'version': 'v2'}, 'rollforward'),  # the failed version again: a retry, not a return
        ({}, 'rollforward'),
    ],
)
def test_a_rollback_redeploys_what_ran_before_the_failed_deployment(fix, expected):
    before = _deployment('before', -30, 'v1', commit='a' * 40)
    failed = _deployment('failed', -3, 'v2', commit='b' * 40)
    later_v1 = _deployment('later-unrelated', 5, 'v3')
    assert remediation_type([before, failed, later_v1], failed, _deployment('fix', 1, **fix)) == expected


def test_the_failure_links_the_deployment_only_with_complete_git_info():
    assert deployment_link(None) == {}
    assert deployment_link(_deployment('d', 0, 'v2', commit='a' * 40, repository='github.com/acme/x')) == {
        'version': 'v2',
        'git': {'commit_sha': 'a' * 40, 'repository_url': 'https://github.com/acme/x'},
    }
    assert deployment_link(_deployment('d', 0, 'v2', commit='abc123', repository='github.com/acme/x')) == {
        'version': 'v2'
    }
    assert deployment_link(_deployment('d', 0, None, commit='a' * 40)) == {}


def test_search_values_are_quoted_when_needed():
    assert search_query(service='checkout_api', env=None) == 'service:checkout_api'
    assert search_query(source='pagerduty', env='prod-eu') == 'source:pagerduty env:"prod-eu"'


def _send_foreign_failures(intake, now):
    """Failures another instance sent (another source, another env): never recovered as this one's."""
    for source, env in (('rootly', 'prod'), ('pagerduty', 'staging')):
        ns = int(ago(now, hours=2).timestamp()) * 10**9
        body = {
            'data': {
                'attributes': {
                    'id': f'{source}:{env}:0000000000000001',
                    'services': ['checkout_api'],
                    'env': env,
                    'started_at': ns,
                    'finished_at': ns,
                    'custom_tags': [f'source:{source}'],
                }
            }
        }
        assert requests.post(f'{intake.url}/api/v2/dora/failure', json=body, headers={'DD-API-KEY': intake.api_key}).ok


def test_a_refused_application_key_holds_back_markings_only(
    aggregator, make_check, run, marking, intake, pagerduty, now, no_backoff
):
    incidents = [pagerduty.trigger('PCHKOUT', ago(now, hours=3, minutes=n)) for n in range(3)]
    for incident in incidents:
        pagerduty.resolve(incident, ago(now, hours=1))
    failed = deploy(intake, now, 'v2', 4)
    intake.inject(Fault(status=403, path=f'{DEPLOYMENTS_PATH}/{failed}', times=10))  # the PATCH, not the list

    error = make_check({**marking, 'dora_concurrency': 1}).run()  # one at a time: the PATCH goes first

    assert 'datadog_app_key' in error
    assert sorted(dora_ids(intake)) == sorted(f'pagerduty:{i}' for i in incidents)  # failures were not held back
    aggregator.assert_metric('dora.check.outbox.pending', value=1)  # the marking waits for a fixed key


def test_a_marking_of_a_deployment_that_is_gone_is_dropped_not_retried(
    aggregator, make_check, run, marking, intake, incident, now
):
    failed = deploy(intake, now, 'v2', 3)
    intake.inject(Fault(status=404, path=f'{DEPLOYMENTS_PATH}/{failed}', times=5))

    warnings = run(make_check(marking))

    assert any(failed in warning and 'dropping' in warning for warning in warnings)
    aggregator.assert_metric('dora.check.outbox.pending', value=0)
