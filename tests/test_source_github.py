"""What is specific to GitHub issues: the source read over real HTTP from the loopback GitHub (`loopback/github.py`)."""

from datetime import UTC, datetime, timedelta

import pytest
import requests
from datadog_checks.base import ConfigurationError
from datadog_checks.base.utils.http import RequestsWrapper

from datadog_checks.dora_incidents.incident import Named
from datadog_checks.dora_incidents.sources.github import GitHubSource
from datadog_checks.dora_incidents.sources.http import CredentialsRejected, SourceError
from loopback.github import GitHubSimulator
from loopback.server import Fault

from .common import (
    MAX_RUN_TIME,
    NO_DEADLINE,
    TIMEOUT,
    ago,
    counted,
    dora_ids,
    instance_config,
    reporting_instance,
    restores,
)

NOW = datetime.now(UTC).replace(microsecond=0)
HOUR = timedelta(hours=1)


@pytest.fixture
def sim():
    with GitHubSimulator() as simulator:
        yield simulator
        assert simulator.spec_violations == []


def source(sim, **options) -> GitHubSource:
    settings = {'api_token': sim.token, 'api_url': sim.url + sim.prefix, 'repositories': ['acme/checkout'], **options}
    config = instance_config(source='github', **settings)
    return GitHubSource(config, RequestsWrapper({'timeout': TIMEOUT}, {}), config.api_url)


def read(sim, since=NOW - 24 * HOUR, until=None, **options):
    batches = source(sim, **options).resolved(since, until or NOW + timedelta(seconds=1), NO_DEADLINE)
    return [incident for batch in batches for incident in batch.incidents]


def list_requests(sim):
    return [request for request in sim.requests if request.path.endswith('/issues')]


def closed(sim, repository='acme/checkout', created=NOW - 3 * HOUR, at=NOW - HOUR, labels=('incident',), **options):
    issue = sim.create(repository, created, labels=list(labels), **options)
    sim.close(issue, at)
    return issue


# -- fields -----------------------------------------------------------------------------------------------


def test_labels_name_services_team_and_severity(sim):
    labels = ('incident', 'Service: Checkout API', 'service:Payments API', 'team:Payments', 'team:SRE', 'severity:SEV2')
    issue = closed(sim, labels=labels, title='Checkout is down')

    [incident] = read(sim)

    assert incident.id == issue and incident.number == 'acme/checkout#1' and incident.title == 'Checkout is down'
    assert incident.services == (Named(None, 'Checkout API'), Named(None, 'Payments API'))
    assert incident.teams == (Named(None, 'Payments'),) and incident.severity == 'SEV2'
    assert (incident.started_at, incident.restored_at, incident.resolved_at) == (NOW - 3 * HOUR, NOW - HOUR, NOW - HOUR)
    assert incident.url == 'https://github.com/acme/checkout/issues/1'


def test_without_a_service_label_the_service_is_the_repository_name(sim):
    closed(sim, repository='acme/search')

    [incident] = read(sim, repositories=['acme/search'])

    assert incident.services == (Named(None, 'search'),) and incident.teams == () and incident.severity is None


def test_pull_requests_and_issues_closed_as_not_planned_or_duplicate_are_not_failures(sim):
    for reason in ('not_planned', 'duplicate'):
        issue = sim.create('acme/checkout', NOW - 3 * HOUR, labels=['incident'])
        sim.close(issue, NOW - HOUR, reason=reason)
    pull = sim.create('acme/checkout', NOW - 3 * HOUR, labels=['incident'], pull=True)
    sim.close(pull, NOW - HOUR)
    restored = closed(sim)

    assert [incident.id for incident in read(sim)] == [restored]


def test_the_label_is_configurable_and_matched_ignoring_case(sim):
    wanted = closed(sim, labels=('Outage',))
    closed(sim)  # `incident`, not `outage`

    assert [incident.id for incident in read(sim, label='outage')] == [wanted]
    assert dict(list_requests(sim)[0].query)['labels'] == 'outage'


# -- how the list is read ---------------------------------------------------------------------------------


def test_the_list_asks_for_closed_labelled_issues_updated_since_the_window_oldest_first(sim):
    read(sim, since=NOW - 2 * HOUR)

    [request] = list_requests(sim)
    assert request.path == '/repos/acme/checkout/issues'
    assert dict(request.query) == {
        'state': 'closed',
        'labels': 'incident',
        'since': (NOW - 2 * HOUR).strftime('%Y-%m-%dT%H:%M:%SZ'),
        'sort': 'updated',
        'direction': 'asc',
        'per_page': '100',
        'page': '1',
    }
    assert request.headers['authorization'] == f'Bearer {sim.token}'


def test_since_is_the_update_time_so_the_close_time_decides_the_window(sim):
    old = closed(sim, created=NOW - 10 * HOUR, at=NOW - 9 * HOUR)
    sim.label(old, 'severity:SEV3', NOW - HOUR)  # updated within the window, closed long before it
    recent = closed(sim)

    found = read(sim, since=NOW - 2 * HOUR)

    # Both are listed; the reader keeps what was *updated* in the window, and the cursor decides by close
    # time (the old closure is behind the late-change horizon of a real run, see the check test below).
    assert {incident.id for incident in found} == {old, recent}
    assert {incident.id: incident.resolved_at for incident in found}[old] == NOW - 9 * HOUR


def test_link_paging_over_several_repositories_reads_each_issue_once(sim):
    checkout = [closed(sim, at=NOW - HOUR + timedelta(seconds=n)) for n in range(150)]
    search = [closed(sim, repository='acme/search', at=NOW - HOUR + timedelta(seconds=n)) for n in range(3)]

    found = read(sim, repositories=['acme/checkout', 'acme/search'])

    assert sorted(incident.id for incident in found) == sorted(checkout + search)
    paths = [request.path for request in list_requests(sim)]
    assert paths == ['/repos/acme/checkout/issues'] * 2 + ['/repos/acme/search/issues']


def test_a_page_of_issues_updated_in_one_second_goes_on_by_page_number(sim):
    same_second = [closed(sim, at=NOW - HOUR) for _ in range(230)]

    found = read(sim)

    assert sorted(incident.id for incident in found) == sorted(same_second)
    pages = [dict(request.query) for request in list_requests(sim)]
    assert [(page['since'], page['page']) for page in pages[1:]] == [(pages[1]['since'], '2'), (pages[1]['since'], '3')]


class ShiftingGitHub(GitHubSimulator):
    """Updates the first issue listed right after serving the first page: offsets shift under the reader."""

    def handle(self, request):
        response = super().handle(request)
        if request.path.endswith('/issues') and dict(request.query).get('page') == '1' and not self.shifted:
            self.shifted = True
            first = min(self.issues, key=lambda issue: self.issues[issue]['updated_at'])
            self.issues[first]['updated_at'] = NOW
        return response

    shifted = False


def test_an_issue_updated_while_the_list_is_paged_hides_no_other():
    with ShiftingGitHub() as sim:
        issues = [closed(sim, at=NOW - HOUR + timedelta(seconds=n)) for n in range(150)]

        found = read(sim, until=NOW + timedelta(seconds=2))

        assert sim.shifted and sorted({incident.id for incident in found}) == sorted(issues)


def test_github_enterprise_server_is_read_under_its_api_prefix():
    with GitHubSimulator(prefix='/api/v3') as sim:
        issue = closed(sim)

        assert [incident.id for incident in read(sim)] == [issue]
        assert list_requests(sim)[0].path == '/api/v3/repos/acme/checkout/issues'


# -- rate limits and errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize('status', [403, 429])
def test_a_secondary_rate_limit_is_waited_out_per_retry_after(sim, status):
    issue = closed(sim)
    sim.inject(sim.secondary_rate_limited(seconds=1, status=status))

    assert [incident.id for incident in read(sim)] == [issue]
    assert len(list_requests(sim)) == 2


def test_a_spent_primary_rate_limit_answered_403_is_waited_out_until_its_reset(sim):
    issue = closed(sim)
    sim.inject(sim.rate_limited(seconds=1))

    assert [incident.id for incident in read(sim)] == [issue]


def test_a_rate_limit_reset_beyond_the_run_is_an_error_for_this_run_not_a_refused_token(sim):
    closed(sim)
    sim.inject(sim.rate_limited(seconds=600))

    with pytest.raises(SourceError) as raised:
        read(sim)

    assert not isinstance(raised.value, CredentialsRejected) and 'rate limit' in str(raised.value)


def test_nothing_is_sent_again_before_a_rate_limit_reset_beyond_the_run(sim):
    closed(sim)
    sim.inject(sim.rate_limited(seconds=600))
    reader = source(sim)
    with pytest.raises(SourceError):
        list(reader.resolved(NOW - 24 * HOUR, NOW + timedelta(seconds=1), NO_DEADLINE))
    sent = len(sim.requests)

    with pytest.raises(SourceError, match='rate limit'):  # the next run, 600 s early
        list(reader.resolved(NOW - 24 * HOUR, NOW + timedelta(seconds=1), NO_DEADLINE))

    assert len(sim.requests) == sent


def test_a_403_that_is_no_rate_limit_is_a_refused_token_naming_the_option(sim):
    body = b'{"message": "Resource not accessible by personal access token", "status": "403"}'
    sim.inject(Fault(status=403, body=body, path=sim.list_path))

    with pytest.raises(CredentialsRejected) as raised:
        read(sim)

    assert '`api_token`' in str(raised.value) and 'Issues: Read-only' in str(raised.value)


def test_a_repository_the_token_cannot_see_is_named(sim):
    with pytest.raises(SourceError) as raised:
        read(sim, repositories=['acme/secret'])

    assert 'acme/secret' in str(raised.value) and '`repositories`' in str(raised.value)


@pytest.mark.parametrize(
    'repositories, wanted',
    [(None, 'is required'), ([], 'is required'), (['checkout'], "'checkout'"), (['acme/a b'], "'acme/a b'")],
)
def test_repositories_must_be_owner_slash_name(sim, repositories, wanted):
    with pytest.raises(ConfigurationError) as raised:
        source(sim, repositories=repositories)

    assert '`repositories`' in str(raised.value) and wanted in str(raised.value)


def test_the_simulator_answers_like_github():
    """The traps the source is built around: pull requests listed as issues, `Link` on another path, 403 for
    a spent limit, 401 for a bad token, 404 for a repository out of reach."""
    with GitHubSimulator() as sim:
        for n in range(3):
            closed(sim, at=NOW - HOUR + timedelta(seconds=n))
        pull = sim.create('acme/checkout', NOW - 3 * HOUR, labels=['incident'], pull=True)
        headers = {'Authorization': f'Bearer {sim.token}'}

        answer = requests.get(sim.url + sim.list_path, params={'state': 'closed', 'per_page': 2}, headers=headers)
        assert answer.status_code == 200 and len(answer.json()) == 2
        assert '/repositories/1000/issues?' in answer.links['next']['url'] and 'last' in answer.links
        assert int(answer.headers['x-ratelimit-remaining']) == 4999
        every = requests.get(sim.url + sim.list_path, params={'state': 'all'}, headers=headers).json()
        assert [issue['id'] for issue in every if 'pull_request' in issue] == [int(pull)]

        assert requests.get(sim.url + sim.list_path).status_code == 401
        assert requests.get(sim.url + '/repos/acme/secret/issues', headers=headers).status_code == 404
        sim.rate_limit = (0, 3600)
        limited = requests.get(sim.url + sim.list_path, headers=headers)
        assert limited.status_code == 403 and limited.headers['x-ratelimit-remaining'] == '0'
        assert sim.spec_violations == []


# -- through the check --------------------------------------------------------------------------------------


@pytest.fixture
def settings(sim, intake):
    return reporting_instance(sim, intake, max_run_time=MAX_RUN_TIME)


def test_an_issue_labelled_an_incident_after_it_was_closed_is_reported_once_with_its_own_times(
    aggregator, make_check, run, sim, settings, intake, now
):
    issue = sim.create('acme/checkout', ago(now, hours=5), labels=['bug'])
    sim.close(issue, ago(now, hours=3))
    check = make_check(settings)
    run(check)
    sim.label(issue, 'incident', ago(now, minutes=1))  # a late resolution: only `updated_at` moves

    run(check)
    run(check)

    assert restores(aggregator) == {issue: [2 * 3600]} and counted(aggregator) == 1
    assert dora_ids(intake) == [f'github:{issue}']


def test_an_issue_reopened_and_closed_again_is_sent_again_not_counted_again(
    aggregator, make_check, run, sim, settings, intake, now
):
    issue = closed(sim, created=ago(now, hours=5), at=ago(now, hours=3))
    check = make_check(settings)
    run(check)
    # GitHub stamps what happens with the time it happens: since the first run, within its overlap.
    sim.reopen(issue, ago(now, minutes=2))
    sim.close(issue, ago(now, minutes=1))

    run(check)

    assert counted(aggregator) == 1 and dora_ids(intake) == [f'github:{issue}'] * 2
    assert intake.latest_by_id()[f'github:{issue}']['finished_at'] == int(ago(now, minutes=1).timestamp()) * 10**9


def test_a_steady_run_costs_one_request_per_repository(make_check, run, sim, settings, now):
    check = make_check({**settings, 'repositories': ['acme/checkout', 'acme/search']})
    sim.add_repository('acme/search')
    run(check)
    before = len(list_requests(sim))

    run(check)

    assert len(list_requests(sim)) - before == 2


def test_the_repositories_and_the_label_scope_the_cursor(make_check, settings):
    def cache_id(**override):
        check = make_check({**settings, **override})
        check.load_configuration_models()
        return check.persistent_cache_id()

    base = cache_id()
    assert cache_id(repositories=['acme/checkout']) == base and cache_id(label='incident') == base
    assert cache_id(repositories=['acme/checkout', 'acme/search']) != base
    assert len({base, cache_id(label='outage'), cache_id(label='incidnet')}) == 3  # a label is not its letters
