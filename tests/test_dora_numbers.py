"""Issue 15: Datadog's own markings are respected; the DORA numbers Datadog does not graph, as metrics, once.

Over HTTP against the loopback intake (validated against Datadog's published description): `intake.mark` is a
marking made by Datadog itself (rollback detection, a rollforward rule, a person in the UI).
"""

import json
from datetime import timedelta
from pathlib import Path

import pytest
from datadog_checks.dev.utils import get_metadata_metrics

from datadog_checks.dora_incidents.reporting import Reporter
from loopback.intake import DEPLOYMENTS_PATH

from . import test_change_failures
from .common import ago, counted
from .test_change_failures import REPO, SHA, requests_to

ALREADY_MARKED = 'dora.check.change_failures.already_marked'
CHANGE_FAILURES = 'dora.change_failures.count'
RECOVERY_TIME = 'dora.failed_deployment_recovery_time'
REWORK = 'dora.deployments.rework'
DEPLOYMENTS = 'dora.deployments.count'
marking, incident = test_change_failures.marking, test_change_failures.incident  # the same fixtures
DASHBOARD = Path(__file__).resolve().parents[1] / 'assets/dashboards/dora_incidents_overview.json'


@pytest.fixture
def counting(instance, intake):
    return {**instance, 'deployment_metrics': True, 'datadog_app_key': intake.app_key}


def deploy(intake, now, version, hours_ago, service='checkout_api', env='prod', team='payments'):
    finished = ago(now, hours=hours_ago)
    git = {'commit_sha': SHA.get(version, SHA['v3']), 'repository_url': REPO}
    return intake.deploy(service, env, version, finished - timedelta(minutes=10), finished, git=git, team=team)


def points(aggregator, name):
    return [(metric.value, sorted(metric.tags)) for metric in aggregator.metrics(name)]


def total(aggregator, name):
    return sum(metric.value for metric in aggregator.metrics(name))


# -- 1. never overwrite a marking -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    'remediation', [None, {'id': 'sim-deployment-0003', 'type': 'rollforward'}], ids=['no remediation', 'remediated']
)
def test_a_deployment_datadog_already_marked_is_not_patched(
    aggregator, make_check, run, marking, intake, incident, now, remediation
):
    deploy(intake, now, 'v1', 30)
    failed = deploy(intake, now, 'v2', 3)
    deploy(intake, now, 'v3', 1.5)  # would remediate it
    intake.mark(failed, remediation=remediation)

    assert run(make_check(marking)) == []

    assert requests_to(intake, 'PATCH', DEPLOYMENTS_PATH) == []
    assert intake.deployments[failed]['remediation'] == remediation  # left as it is
    aggregator.assert_metric(ALREADY_MARKED, value=1, count=1)
    aggregator.assert_metric('dora.check.change_failures.marked', value=0)
    assert aggregator.metrics(CHANGE_FAILURES) == [] and aggregator.metrics(RECOVERY_TIME) == []
    assert aggregator.metrics(REWORK) == []
    assert intake.latest_by_id()[f'pagerduty:{incident}']['version'] == 'v2'  # still the failure's cause
    assert counted(aggregator) == 1


@pytest.mark.parametrize('change_failure', [False, None], ids=['false', 'null'])
def test_a_deployment_marked_false_or_null_is_marked(make_check, run, marking, intake, incident, now, change_failure):
    failed = deploy(intake, now, 'v2', 3)
    fix = deploy(intake, now, 'v3', 1.5)
    intake.mark(failed, change_failure=change_failure)

    run(make_check(marking))

    assert intake.markings() == {failed: {'change_failure': True, 'remediation': {'id': fix, 'type': 'rollforward'}}}


# -- 2. the DORA numbers as metrics ----------------------------------------------------------------------------
def test_a_marking_gives_its_change_failure_recovery_time_and_rework_once(
    aggregator, datadog_agent, make_check, run, marking, intake, incident, pagerduty, now
):
    deploy(intake, now, 'v1', 30)
    failed = deploy(intake, now, 'v2', 3)
    deploy(intake, now, 'v1', 1.5, team='other')  # the rollback: recovery runs from v2's finish to its finish

    run(make_check(marking))

    # No change related in PagerDuty: found by the time window.
    tags = [
        'attribution:window',
        'env:prod',
        'remediation_type:rollback',
        'service:checkout_api',
        'team:payments',
        'team_owner:sre',
    ]
    assert points(aggregator, CHANGE_FAILURES) == [(1, tags)]
    assert points(aggregator, RECOVERY_TIME) == [(1.5 * 3600, sorted([*tags, f'deployment_id:{failed}']))]
    assert points(aggregator, REWORK) == [
        (1, ['env:prod', 'remediation_type:rollback', 'service:checkout_api', 'team_owner:sre'])
    ]
    aggregator.assert_metrics_using_metadata(get_metadata_metrics(), check_submission_type=True)

    aggregator.reset()
    run(make_check(marking))  # an Agent restart
    datadog_agent._cache.clear()  # a cluster check re-dispatched: no cursor, recovered from Datadog
    run(make_check(marking))
    pagerduty.reopen(incident, ago(now, seconds=30))
    pagerduty.resolve(incident, ago(now, seconds=1))  # resolved again: its deployment is marked already
    run(make_check(marking))

    assert total(aggregator, CHANGE_FAILURES) == 0 and aggregator.metrics(RECOVERY_TIME) == []
    assert total(aggregator, REWORK) == 0
    assert len(requests_to(intake, 'PATCH', DEPLOYMENTS_PATH)) == 1


def test_a_marking_without_remediation_has_no_recovery_time(
    aggregator, make_check, run, marking, intake, incident, now
):
    deploy(intake, now, 'v2', 3, team=None)

    run(make_check({**marking, 'metric_namespace': 'dora_incidents'}))

    # The deployment names no team: the incident's (Checkout API's PagerDuty team) stands in.
    assert points(aggregator, 'dora_incidents.change_failures.count') == [
        (
            1,
            [
                'attribution:window',
                'env:prod',
                'remediation_type:none',
                'service:checkout_api',
                'team:payments_team',
                'team_owner:sre',
            ],
        )
    ]
    assert aggregator.metrics('dora_incidents.failed_deployment_recovery_time') == []
    assert aggregator.metrics('dora_incidents.deployments.rework') == []
    assert aggregator.metrics(CHANGE_FAILURES) == []


def test_two_markings_in_one_run_are_two_recovery_points(aggregator, make_check, run, marking, intake, pagerduty, now):
    for service, hours in (('PCHKOUT', 0), ('PSEARCH', 1)):
        incident = pagerduty.trigger(service, ago(now, hours=2 + hours))
        pagerduty.resolve(incident, ago(now, hours=1))
    failed = [deploy(intake, now, 'v2', 3), deploy(intake, now, 's2', 4, service='search')]
    deploy(intake, now, 'v3', 1.5)
    deploy(intake, now, 's3', 1.5, service='search')

    run(make_check(marking))

    recoveries = {
        tag: value for value, tags in points(aggregator, RECOVERY_TIME) for tag in tags if 'deployment_id' in tag
    }
    assert recoveries == {f'deployment_id:{failed[0]}': 1.5 * 3600, f'deployment_id:{failed[1]}': 2.5 * 3600}
    assert total(aggregator, CHANGE_FAILURES) == 2 and total(aggregator, REWORK) == 2


def test_a_remediation_found_later_in_the_run_is_counted_with_the_one_marking(
    aggregator, make_check, run, marking, intake, pagerduty, now
):
    failed = deploy(intake, now, 'v2', 5)
    fix = deploy(intake, now, 'v3', 2.5)
    early = pagerduty.trigger('PCHKOUT', ago(now, hours=4))  # over before v3: no remediation
    pagerduty.resolve(early, ago(now, hours=3.5))
    late = pagerduty.trigger('PCHKOUT', ago(now, hours=3))  # v3 during it: the remediation
    pagerduty.resolve(late, ago(now, hours=2))

    run(make_check(marking))

    assert intake.markings() == {failed: {'change_failure': True, 'remediation': {'id': fix, 'type': 'rollforward'}}}
    [(value, tags)] = points(aggregator, CHANGE_FAILURES)
    assert value == 1 and 'remediation_type:rollforward' in tags
    assert [value for value, _ in points(aggregator, RECOVERY_TIME)] == [2.5 * 3600]
    assert total(aggregator, REWORK) == 1


# -- 3. deployment frequency -------------------------------------------------------------------------------------
def deployments_listed(intake):
    return len(requests_to(intake, 'POST', DEPLOYMENTS_PATH))


def test_deployments_are_counted_exactly_once_across_runs_and_restarts(
    aggregator, make_check, run, counting, intake, now
):
    deploy(intake, now, 'v1', 0.5)  # before the first run: the check cannot know whether it counted it elsewhere
    check = make_check(counting)
    run(check)
    assert aggregator.metrics(DEPLOYMENTS) == [] and deployments_listed(intake) == 1

    deploy(intake, now, 'v2', 0.2)  # finished before the run, reached Datadog after it
    deploy(intake, now, 's1', 0.1, service='search', env='staging', team=None)
    run(check)
    run(check)
    run(make_check(counting))  # an Agent restart

    assert sorted(points(aggregator, DEPLOYMENTS)) == [
        (1, ['env:prod', 'service:checkout_api', 'team:payments', 'team_owner:sre']),
        (1, ['env:staging', 'service:search', 'team_owner:sre']),
    ]
    assert deployments_listed(intake) == 4  # one list request per run in steady state
    aggregator.assert_metrics_using_metadata(get_metadata_metrics(), check_submission_type=True)


class Killed(BaseException):
    """The Agent's process dying mid-run: nothing of the run is committed (not an Exception the check catches)."""


def test_a_run_killed_before_its_metrics_were_committed_counts_its_deployments_again(
    aggregator, make_check, run, counting, intake, now, monkeypatch
):
    run(make_check(counting))  # the first run: what is listed now counts as known
    deploy(intake, now, 'v2', 0.2)
    dying = make_check(counting)

    def killed(*_):
        raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(Reporter, 'commit', killed)  # dies once the run's emission is complete, before it returns
        with pytest.raises(Killed):
            dying.run()
    aggregator.reset()  # the Agent never committed what that run submitted
    run(make_check(counting))  # restarted

    assert [value for value, _ in points(aggregator, DEPLOYMENTS)] == [1]


def test_deployments_are_paged_past_1000(aggregator, make_check, run, counting, intake, now):
    check = make_check(counting)
    run(check)
    for n in range(2_500):
        started = ago(now, minutes=90, seconds=-2 * n)
        intake.deploy('checkout_api', 'prod', f'v{n}', started, started + timedelta(seconds=1))

    run(check)
    run(check)

    assert total(aggregator, DEPLOYMENTS) == 2_500
    assert intake.listed_deployments >= 2 * 2_500  # both runs read every page: the second counted none again


def test_deployments_are_not_counted_without_the_option(aggregator, make_check, run, instance, intake, now):
    deploy(intake, now, 'v1', 0.5)
    check = make_check({**instance, 'datadog_app_key': intake.app_key})
    run(check)
    deploy(intake, now, 'v2', 0.1)
    run(check)

    assert aggregator.metrics(DEPLOYMENTS) == [] and deployments_listed(intake) == 0


def test_deployment_metrics_without_an_application_key_is_a_configuration_error(make_check, instance, intake):
    error = make_check({**instance, 'deployment_metrics': True}).run()

    assert 'ConfigurationError' in error and 'datadog_app_key' in error and 'deployment_metrics' in error
    assert deployments_listed(intake) == 0


# -- the dashboard -----------------------------------------------------------------------------------------------
def test_the_dashboards_dora_numbers_are_metrics_the_check_emits(
    aggregator, make_check, run, marking, intake, incident, now
):
    deploy(intake, now, 'v1', 30)
    deploy(intake, now, 'v2', 3)
    deploy(intake, now, 'v1', 1.5)
    check = make_check({**marking, 'deployment_metrics': True})
    run(check)
    deploy(intake, now, 'v3', 0.1)
    run(check)

    queried = json.dumps(json.loads(DASHBOARD.read_text()))
    emitted = set(aggregator.metric_names)
    for name in (CHANGE_FAILURES, RECOVERY_TIME, REWORK, DEPLOYMENTS, 'dora.incidents.count'):
        assert f'{name}{{' in queried, f'{name} is not on the dashboard'
        assert name in emitted, f'the dashboard graphs {name}, which the check did not emit'
