"""Change attribution by the incident tool's evidence (issue 23): the deployment the tool names, else the window.

Over HTTP against the four tools' simulators, which relate changes to incidents the way each tool records them
(`relate_change`), and the loopback Datadog intake, which holds deployments with their version, commit and
custom tags. Every deployment here carries all three, so that each tool's evidence can name it in its own terms.
"""

import json
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from datadog_checks.dev.utils import get_metadata_metrics

from datadog_checks.dora_incidents.evidence import Change, change, evidence
from loopback import demo
from loopback.intake import DEPLOYMENTS_PATH
from loopback.server import Fault
from loopback.simulators import make_simulator

from .common import ago, counted, reporting_instance, restores

RELATED = '/related_change_events'
TOOLS = ['pagerduty', 'firehydrant', 'servicenow', 'jira']
UNMATCHED = 'dora.check.change_failures.unmatched'
CHANGE_FAILURES = 'dora.change_failures.count'
RECOVERY = 'dora.failed_deployment_recovery_time'
REPO = 'https://github.com/acme/checkout'
UNKNOWN = 99  # a change no deployment shipped


def sha(n: int) -> str:
    return f'{n:02d}' * 20


def version(n: int) -> str:
    return f'v1.{n}'


def change_number(n: int) -> str:
    return f'CHG00300{n:02d}'


@pytest.fixture(params=TOOLS)
def tool(request):
    simulator = make_simulator(request.param)
    with simulator:
        yield simulator
    assert simulator.spec_violations == [], 'the check sent requests (or got answers) the API description rejects'


@pytest.fixture
def env(tool):
    """The env of the tool's incidents: FireHydrant names its own, the others take the instance's `env: prod`."""
    return tool.expected_tags.get('env', 'prod')


@pytest.fixture
def settings(tool, intake):
    return reporting_instance(tool, intake, datadog_app_key=intake.app_key, mark_change_failures=True)


@pytest.fixture
def deploy(intake, env, now):
    """Deployment `n` of checkout_api: ten minutes long, finished `hours` ago, with version, commit and change tag."""

    def deploy_one(n: int, hours: float, service='checkout_api', deploy_env=None):
        finished = ago(now, hours=hours)
        git = {'commit_sha': sha(n), 'repository_url': REPO}
        tags = [f'change_request:{change_number(n)}', 'team_owner:sre']
        return intake.deploy(
            service, deploy_env or env, version(n), finished - timedelta(minutes=10), finished, git, None, tags
        )

    return deploy_one


@pytest.fixture
def incident(tool, now):
    """Started 2 hours ago, resolved 1 hour ago (resolved once its evidence is related: `resolve`)."""
    return tool.open(ago(now, hours=2))


def resolve(tool, incident_id, now, hours=1.0):
    tool.resolve(incident_id, ago(now, hours=hours))


def name_cause(tool, incident_id, n: int) -> None:
    """The tool records change `n` as the incident's cause, in its own terms (PagerDuty as Ansible's
    pagerduty_change sends it: `revision` is the SHA)."""
    assert demo.name_cause(tool, incident_id, version(n), sha(n), change_number(n))


def name_nothing(tool, incident_id) -> None:
    """The tool relates changes that identify none (or, for ServiceNow and Jira, leaves the field empty)."""
    source = tool.source
    if source == 'pagerduty':  # PagerDuty's GitHub Action: compare and PR links, a build number, no SHA
        tool.relate_change(
            incident_id,
            custom_details={'build_number': '42', 'sha': sha(1)[:7]},
            links=[f'{REPO}/compare/{sha(1)}...{sha(2)}', f'{REPO}/pull/7'],
        )
    elif source == 'firehydrant':  # a suspect and a dismissed change name commits; the cause names none
        tool.relate_change(incident_id, 'suspect', identities=[('commit_sha', sha(1))])
        tool.relate_change(incident_id, 'dismissed', identities=[('commit_sha', sha(1))])
        tool.relate_change(incident_id, 'caused', labels={'build': '42'})


def requests_to(server, method, path):
    return [r for r in server.requests if r.method == method and r.path.startswith(path)]


def evidence_reads(tool) -> int:
    return sum(r.path.endswith('/related_change_events') for r in tool.requests)


def tagged(aggregator, name, tag) -> float:
    return sum(m.value for m in aggregator.metrics(name) if tag in m.tags)


# -- the outcomes, for each tool ----------------------------------------------------------------------------
def test_evidence_marks_the_deployment_the_tool_names_whatever_the_window_would_pick(
    aggregator, make_check, run, tool, settings, intake, deploy, incident, now
):
    named = deploy(1, 5)  # within the window, but not the latest before the start
    deploy(2, 3)  # what the window would pick
    fix = deploy(3, 1.5)  # the first later deployment during the incident
    deploy(4, 0.5, service='search')
    name_cause(tool, incident, 1)
    resolve(tool, incident, now)

    assert run(make_check(settings)) == []

    assert intake.markings() == {named: {'change_failure': True, 'remediation': {'id': fix, 'type': 'rollforward'}}}
    assert counted(aggregator) == 1 and set(restores(aggregator)) == {incident}
    assert tagged(aggregator, CHANGE_FAILURES, 'attribution:evidence') == 1
    assert tagged(aggregator, CHANGE_FAILURES, 'attribution:window') == 0
    [recovery] = aggregator.metrics(RECOVERY)
    assert 'attribution:evidence' in recovery.tags and recovery.value == 3.5 * 3600
    assert tagged(aggregator, UNMATCHED, 'reason:evidence_not_found') == 0
    [failure] = intake.latest_by_id().values()
    assert failure['version'] == version(1) and failure['git']['commit_sha'] == sha(1)
    assert evidence_reads(tool) == (1 if tool.source in ('pagerduty', 'firehydrant') else 0)
    # ServiceNow and Jira: the evidence field is asked for in the list the check makes anyway.
    asked = {'servicenow': 'caused_by', 'jira': '"versions"'}.get(tool.source)
    assert not asked or any(asked in json.dumps(r.query) + r.body.decode() for r in tool.requests)
    aggregator.assert_metrics_using_metadata(get_metadata_metrics())


def test_evidence_naming_only_unknown_changes_marks_nothing(
    aggregator, make_check, run, tool, settings, intake, deploy, incident, now
):
    deploy(1, 5)
    deploy(2, 3)  # the window's pick: never marked instead
    deploy(UNKNOWN, 3, service='search')  # the change exists, but for another service
    name_cause(tool, incident, UNKNOWN)
    resolve(tool, incident, now)

    assert run(make_check(settings)) == []

    assert intake.markings() == {} and requests_to(intake, 'PATCH', DEPLOYMENTS_PATH) == []
    assert tagged(aggregator, UNMATCHED, 'reason:evidence_not_found') == 1
    assert tagged(aggregator, UNMATCHED, 'reason:no_deployment') == 0
    assert aggregator.metrics(CHANGE_FAILURES) == []
    # The incident itself is reported, without a deployment's version.
    assert counted(aggregator) == 1 and set(restores(aggregator)) == {incident}
    [failure] = intake.latest_by_id().values()
    assert 'version' not in failure


def test_no_evidence_falls_back_to_the_window(
    aggregator, make_check, run, tool, settings, intake, deploy, incident, now
):
    deploy(1, 5)
    window_pick = deploy(2, 3)
    name_nothing(tool, incident)
    resolve(tool, incident, now)

    assert run(make_check(settings)) == []

    assert intake.markings() == {window_pick: {'change_failure': True}}
    assert tagged(aggregator, CHANGE_FAILURES, 'attribution:window') == 1
    assert tagged(aggregator, CHANGE_FAILURES, 'attribution:evidence') == 0
    assert tagged(aggregator, UNMATCHED, 'reason:evidence_not_found') == 0


def test_no_evidence_and_no_deployment_in_the_window(
    aggregator, make_check, run, tool, settings, intake, deploy, incident, now
):
    deploy(1, 30)  # before the window
    resolve(tool, incident, now)

    assert run(make_check(settings)) == []

    assert intake.markings() == {}
    assert tagged(aggregator, UNMATCHED, 'reason:no_deployment') == 1
    assert tagged(aggregator, UNMATCHED, 'reason:evidence_not_found') == 0
    assert counted(aggregator) == 1


def test_evidence_older_than_the_window_is_still_found(
    aggregator, make_check, run, tool, settings, intake, deploy, incident, now
):
    named = deploy(1, 24 * 5)  # five days before: a change can fail long after it shipped
    deploy(2, 3)
    name_cause(tool, incident, 1)
    resolve(tool, incident, now)

    run(make_check(settings))

    assert intake.markings() == {named: {'change_failure': True}}
    assert tagged(aggregator, CHANGE_FAILURES, 'attribution:evidence') == 1


def test_a_deployment_already_marked_is_never_patched_again(
    aggregator, make_check, run, tool, settings, intake, deploy, incident, now
):
    named = deploy(1, 5)
    intake.mark(named)  # by Datadog's rollback detection, or a person
    name_cause(tool, incident, 1)
    resolve(tool, incident, now)

    run(make_check(settings))

    assert requests_to(intake, 'PATCH', DEPLOYMENTS_PATH) == []
    aggregator.assert_metric('dora.check.change_failures.already_marked', value=1)
    assert aggregator.metrics(CHANGE_FAILURES) == []


def test_two_incidents_of_one_cause_are_one_patch_and_one_count_also_across_runs(
    aggregator, make_check, run, tool, settings, intake, deploy, now
):
    named = deploy(1, 5)
    deploy(2, 3)
    first, second = tool.open(ago(now, hours=2)), tool.open(ago(now, hours=2, minutes=10))
    for incident in (first, second):
        name_cause(tool, incident, 1)
        resolve(tool, incident, now)
    check = make_check(settings)

    run(check)

    assert [r.path for r in requests_to(intake, 'PATCH', DEPLOYMENTS_PATH)] == [f'{DEPLOYMENTS_PATH}/{named}']
    assert tagged(aggregator, CHANGE_FAILURES, 'attribution:evidence') == 1

    # A third incident of the same cause, resolved later: the next run finds the deployment marked.
    third = tool.open(ago(now, hours=1))
    name_cause(tool, third, 1)
    tool.resolve(third, datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1))  # after the last run read
    assert run(check) == []
    run(make_check(settings))  # and after an Agent restart

    assert counted(aggregator) == 3
    assert len(requests_to(intake, 'PATCH', DEPLOYMENTS_PATH)) == 1
    assert sum(m.value for m in aggregator.metrics(CHANGE_FAILURES)) == 1


def test_window_attribution_reads_no_evidence(
    aggregator, make_check, run, tool, settings, intake, deploy, incident, now
):
    deploy(1, 5)
    window_pick = deploy(2, 3)
    name_cause(tool, incident, 1)
    resolve(tool, incident, now)

    run(make_check({**settings, 'change_attribution': 'window'}))

    assert intake.markings() == {window_pick: {'change_failure': True}}
    assert tagged(aggregator, CHANGE_FAILURES, 'attribution:window') == 1
    assert evidence_reads(tool) == 0
    assert not any('caused_by' in json.dumps(r.query) + r.body.decode() for r in tool.requests)
    assert not any('"versions"' in r.body.decode() for r in tool.requests)


def test_without_marking_no_evidence_is_asked_for(make_check, run, tool, settings, intake, incident, now):
    name_cause(tool, incident, 1)
    resolve(tool, incident, now)

    run(make_check({**settings, 'mark_change_failures': False}))

    assert evidence_reads(tool) == 0
    assert not any('caused_by' in json.dumps(r.query) for r in tool.requests)
    assert not any('"versions"' in r.body.decode() for r in tool.requests)


# -- each tool's own evidence -------------------------------------------------------------------------------
@pytest.fixture
def pagerduty_tool(tool):
    if tool.source != 'pagerduty':
        pytest.skip('PagerDuty only')
    return tool


def test_pagerduty_changes_of_another_service_are_not_evidence(
    aggregator, make_check, run, pagerduty_tool, settings, intake, deploy, incident, now
):
    tool = pagerduty_tool
    deploy(1, 5)
    window_pick = deploy(2, 3)
    tool.add_service('PSEARCH', 'Search')
    tool.relate_change(incident, custom_details={'commit_sha': sha(1)}, service_id='PSEARCH', reason='related_service')
    resolve(tool, incident, now)

    run(make_check(settings))

    assert intake.markings() == {window_pick: {'change_failure': True}}
    assert tagged(aggregator, CHANGE_FAILURES, 'attribution:window') == 1


def test_pagerduty_a_commit_link_is_evidence(
    aggregator, make_check, run, pagerduty_tool, settings, intake, deploy, incident, now
):
    named = deploy(1, 5)
    deploy(2, 3)
    pagerduty_tool.relate_change(incident, links=[f'{REPO}/commit/{sha(1).upper()}'], reason='intelligent')
    resolve(pagerduty_tool, incident, now)

    run(make_check(settings))

    assert intake.markings() == {named: {'change_failure': True}}


@pytest.fixture
def firehydrant_tool(tool):
    if tool.source != 'firehydrant':
        pytest.skip('FireHydrant only')
    return tool


def test_firehydrant_the_fixed_change_is_the_remediation(
    aggregator, make_check, run, firehydrant_tool, settings, intake, deploy, incident, now
):
    tool = firehydrant_tool
    named = deploy(1, 5)
    deploy(3, 1.5)  # the first later deployment: not the fix FireHydrant names
    fix = deploy(4, 0.5)
    tool.relate_change(incident, 'caused', labels={'version': version(1)})
    tool.relate_change(incident, 'fixed', links=[f'{REPO}/commit/{sha(4)}'])
    resolve(tool, incident, now)

    run(make_check(settings))

    assert intake.markings() == {named: {'change_failure': True, 'remediation': {'id': fix, 'type': 'rollforward'}}}
    [read] = [r for r in tool.requests if r.path.endswith('/related_change_events')]
    assert dict(read.query) == {'page': '1', 'per_page': '200'}  # one page, the largest


@pytest.fixture
def servicenow_tool(tool):
    if tool.source != 'servicenow':
        pytest.skip('ServiceNow only')
    return tool


def test_servicenow_change_tag_names_the_deployments_tag(
    aggregator, make_check, run, servicenow_tool, settings, intake, env, incident, now
):
    finished = ago(now, hours=5)
    tagged_deployment = intake.deploy(
        'checkout_api', env, 'build-7', finished, finished, None, None, ['snow_change:chg0030042']
    )
    intake.deploy('checkout_api', env, 'build-8', ago(now, hours=3), ago(now, hours=3))
    servicenow_tool.relate_change(incident, 'CHG0030042')
    resolve(servicenow_tool, incident, now)

    run(make_check({**settings, 'change_tag': 'snow_change'}))

    assert intake.markings() == {tagged_deployment: {'change_failure': True}}
    [listing] = [r for r in servicenow_tool.requests if r.path.endswith('/incident')][:1]
    assert 'caused_by' in dict(listing.query)['sysparm_fields'].split(',')


@pytest.mark.parametrize(
    'fault',
    [
        Fault(status=500, times=10),
        Fault(status=429, headers={'retry-after': '3600'}, times=10),
        Fault(status=200, body=b'{"change_events": "none", "data": {"x": 1}}', times=10),
        Fault(status=200, body=b'<html>proxy</html>', times=10),
    ],
    ids=['5xx', 'rate limited for an hour', 'malformed', 'not JSON'],
)
def test_an_evidence_read_that_fails_falls_back_to_the_window_and_says_so(
    aggregator, make_check, run, tool, settings, intake, deploy, incident, now, fault
):
    if tool.source not in ('pagerduty', 'firehydrant'):
        pytest.skip('ServiceNow and Jira evidence comes in the incident record')
    deploy(1, 5)
    window_pick = deploy(2, 3)
    name_cause(tool, incident, 1)
    resolve(tool, incident, now)
    path = (f'/incidents/{incident}' if tool.source == 'pagerduty' else f'/v1/incidents/{incident}') + RELATED
    tool.inject(replace(fault, path=path))

    warnings = run(make_check(settings))

    assert intake.markings() == {window_pick: {'change_failure': True}}
    assert tagged(aggregator, CHANGE_FAILURES, 'attribution:window') == 1
    assert counted(aggregator) == 1 and set(restores(aggregator)) == {incident}
    [warning] = [w for w in warnings if 'found by the time window instead' in w]
    assert tool.token not in warning and 'Traceback' not in warning


def test_malformed_evidence_fields_never_lose_the_incident(
    aggregator, make_check, run, tool, settings, intake, deploy, incident, now
):
    if tool.source not in ('servicenow', 'jira'):
        pytest.skip('the evidence of ServiceNow and Jira comes in the incident record')
    window_pick = deploy(2, 3)
    name_cause(tool, incident, 1)
    resolve(tool, incident, now)
    field = 'caused_by' if tool.source == 'servicenow' else 'versions'
    tool.serve_as(incident, **{field: {'unexpected': ['shape']} if tool.source == 'jira' else 42})

    assert run(make_check(settings)) == []

    assert counted(aggregator) == 1
    assert intake.markings() == {window_pick: {'change_failure': True}}
    # The simulator saw itself serve what the description forbids: the point of this test.
    assert all(field in violation for violation in tool.spec_violations)
    tool.spec_violations.clear()


# -- the budget ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize('source', ['pagerduty', 'firehydrant'])
def test_evidence_reads_stay_within_the_budget(aggregator, make_check, run, intake, now, source):
    tool = make_simulator(source)
    with tool:
        settings = tool.instance(
            datadog_api_url=intake.url,
            datadog_api_key=intake.api_key,
            datadog_app_key=intake.app_key,
            env='prod',
            mark_change_failures=True,
            max_run_time=60,
        )
        env = tool.expected_tags.get('env', 'prod')
        finished = ago(now, hours=5)
        named = intake.deploy(
            'checkout_api', env, version(1), finished, finished, {'commit_sha': sha(1), 'repository_url': REPO}
        )
        window_pick = intake.deploy('checkout_api', env, version(2), ago(now, hours=3), ago(now, hours=3))
        incidents = [tool.open(ago(now, hours=2, minutes=n)) for n in range(3)]
        for incident in incidents:
            name_cause(tool, incident, 1)
            resolve(tool, incident, now)
        check = make_check(settings)
        # The run's time is up once the first evidence has been read: a virtual clock, whatever the machine.
        origin = time.monotonic()
        check.monotonic = lambda: origin if evidence_reads(tool) == 0 else origin + 1e9

        warnings = run(check)

        assert evidence_reads(tool) == 1  # never a request past the budget
        assert counted(aggregator) == 3  # every incident still reported
        assert any('found by the time window instead' in w for w in warnings)
        assert tagged(aggregator, CHANGE_FAILURES, 'attribution:evidence') == 1
        assert tagged(aggregator, CHANGE_FAILURES, 'attribution:window') == 1
        assert set(intake.markings()) == {named, window_pick}
    assert tool.spec_violations == []


def test_one_evidence_read_per_incident(aggregator, make_check, run, intake, now):
    tool = make_simulator('pagerduty')
    with tool:
        settings = tool.instance(
            datadog_api_url=intake.url,
            datadog_api_key=intake.api_key,
            datadog_app_key=intake.app_key,
            env='prod',
            mark_change_failures=True,
        )
        incidents = [tool.open(ago(now, hours=2, minutes=n)) for n in range(4)]
        for incident in incidents:
            resolve(tool, incident, now)

        run(make_check(settings))

        assert counted(aggregator) == 4 and evidence_reads(tool) == 4


# -- configuration ------------------------------------------------------------------------------------------
@pytest.mark.parametrize('value', ['time', 'Evidence', ''])
def test_another_change_attribution_is_a_configuration_error(make_check, settings, value):
    error = make_check({**settings, 'change_attribution': value}).run()

    assert 'ConfigurationError' in error and 'change_attribution' in error


def test_change_attribution_without_marking_is_a_configuration_error(make_check, settings):
    error = make_check({**settings, 'mark_change_failures': False, 'change_attribution': 'window'}).run()

    assert 'change_attribution' in error and 'mark_change_failures' in error


def test_change_tag_is_servicenows(make_check, settings, tool):
    error = make_check({**settings, 'change_tag': 'change_request'}).run()

    assert (error == '') == (tool.source == 'servicenow')
    if tool.source != 'servicenow':
        assert '`change_tag` is an option of servicenow' in error


# -- identities, without HTTP -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    'pairs, links, expected',
    [
        ({'Commit': 'A' * 40}, (), Change(commits=frozenset({'a' * 40}))),
        ({'git_sha': 'b' * 40, 'version': '2.3.1'}, (), Change(frozenset({'b' * 40}), frozenset({'2.3.1'}))),
        ({'revision': 'c' * 40}, (), Change(commits=frozenset({'c' * 40}))),
        ({'revision': '1432'}, (), Change(versions=frozenset({'1432'}))),  # a revision that is not a SHA
        ({'sha': 'abc1234', 'build_number': '7', 'commit': 'main'}, (), Change()),  # short SHA, build, branch
        ({}, ['https://github.com/a/b/commit/' + 'd' * 40 + '?diff=split'], Change(commits=frozenset({'d' * 40}))),
        ({}, ['https://github.com/a/b/compare/' + 'e' * 40 + '...' + 'f' * 40], Change()),
        ({}, ['https://github.com/a/b/commit/' + 'd' * 41], Change()),  # not 40 hex digits
        ({'version': 7, 'sha': None}, [None, 3], Change()),  # not strings
    ],
)
def test_what_identifies_a_change(pairs, links, expected):
    assert change(pairs.items(), links) == expected


def test_related_changes_that_identify_nothing_are_no_evidence():
    assert evidence([change({'build': '1'}.items())]) is None
    assert evidence([], [change({'sha': 'a' * 40}.items())]) is None  # a fix without a cause: the window decides
    found = evidence([change({'sha': 'a' * 40}.items()), Change()])
    assert found.causes == (Change(commits=frozenset({'a' * 40})),)
