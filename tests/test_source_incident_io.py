"""The incident.io source against the incident.io simulator, over real HTTP: what is specific to this tool."""

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from datadog_checks.base.utils.http import RequestsWrapper

from datadog_checks.dora_incidents.incident import Named, Skipped
from datadog_checks.dora_incidents.sources import incident_io
from datadog_checks.dora_incidents.sources.http import CredentialsRejected, SourceError
from datadog_checks.dora_incidents.sources.incident_io import IncidentIoSource
from loopback.driver import ENVIRONMENT, SERVICE, SEVERITY, TEAM, TITLE
from loopback.incident_io import IncidentIoSimulator
from loopback.server import Fault

from .common import TIMEOUT, instance_config, later, read_within


@pytest.fixture
def now():
    return datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def sim():
    with IncidentIoSimulator() as simulator:
        yield simulator
    assert simulator.spec_violations == [], 'requests or answers the incident.io API description rejects'


def make_source(sim, **options):
    config = {'api_token': sim.token, 'api_url': sim.url, 'restored_at': 'resolved', 'team_field': 'Team', **options}
    return IncidentIoSource(
        instance_config(source='incident_io', **config), RequestsWrapper({'timeout': TIMEOUT}, {}), sim.url
    )


def read(source, since, until, left=None):
    return read_within(source, since, until, left)


def reported(batches):
    return [incident for batch in batches for incident in batch.incidents]


def skipped(batches):
    return [skip for batch in batches for skip in batch.skipped]


# -- the mapping -------------------------------------------------------------------------------------
def test_an_incident_in_its_own_terms(sim, now):
    incident_id = sim.open(now - timedelta(hours=3))
    sim.resolve(incident_id, now - timedelta(hours=1))

    [incident] = reported(read(make_source(sim, environment_field='Environment'), now - timedelta(days=1), now))

    assert incident.source == 'incident_io' and incident.id == incident_id
    assert incident.number == 'INC-1' and incident.title == TITLE
    assert incident.url == 'https://app.incident.io/acme/incidents/1'
    assert incident.started_at == now - timedelta(hours=3)
    assert incident.restored_at == incident.resolved_at == now - timedelta(hours=1)
    assert [s.name for s in incident.services] == [SERVICE] and incident.services[0].id  # a catalog entry
    assert [t.name for t in incident.teams] == [TEAM] and incident.teams[0].id
    assert [e.name for e in incident.environments] == [ENVIRONMENT] and incident.environments[0].id  # an option
    assert incident.severity == SEVERITY


def test_fields_that_are_not_configured_or_not_set_give_nothing(sim, now):
    incident_id = sim.open(now - timedelta(hours=3), team='', severity='')
    sim.resolve(incident_id, now - timedelta(hours=1))

    [incident] = reported(read(make_source(sim, team_field=None), now - timedelta(days=1), now))
    assert incident.teams == () and incident.environments == () and incident.severity is None
    [incident] = reported(read(make_source(sim), now - timedelta(days=1), now))
    assert incident.teams == ()  # the field is there, with no value


def test_a_text_field_names_a_service_and_fields_are_found_by_id_too(sim, now):
    incident_id = sim.open(now - timedelta(hours=3))
    entries = sim.incidents[incident_id]['custom_field_entries']
    entries[0] = {**entries[0], 'values': [{'value_text': 'Search'}]}
    sim.resolve(incident_id, now - timedelta(hours=1))

    field_id = entries[0]['custom_field']['id']
    [incident] = reported(read(make_source(sim, service_field=field_id), now - timedelta(days=1), now))
    assert incident.services == (Named(None, 'Search'),)


def test_impact_start_missing_starts_at_reported_at(sim, now):
    incident_id = sim.open(now - timedelta(hours=3))
    sim.set_timestamp(incident_id, 'Impact started', None)
    sim.set_timestamp(incident_id, 'Reported at', now - timedelta(hours=2))
    sim.resolve(incident_id, now - timedelta(minutes=30))

    [incident] = reported(read(make_source(sim), now - timedelta(days=1), now))
    assert incident.started_at == now - timedelta(hours=2)  # "Reported at": every incident has one


def test_restored_at_mitigated_uses_fixed_at_else_the_resolution(sim, now):
    fixed = sim.open(now - timedelta(hours=3))
    sim.move(fixed, 'Monitoring', now - timedelta(hours=2))
    sim.set_timestamp(fixed, 'Fixed at', now - timedelta(hours=2), touch=False)
    sim.resolve(fixed, now - timedelta(hours=1))
    unfixed = sim.open(now - timedelta(hours=3))
    sim.resolve(unfixed, now - timedelta(minutes=50))
    sim.set_timestamp(unfixed, 'Fixed at', None, touch=False)

    by_id = {i.id: i for i in reported(read(make_source(sim, restored_at='mitigated'), now - timedelta(days=1), now))}
    assert by_id[fixed].restored_at == now - timedelta(hours=2)
    assert by_id[fixed].resolved_at == now - timedelta(hours=1)
    assert by_id[unfixed].restored_at == by_id[unfixed].resolved_at == now - timedelta(minutes=50)


def test_timestamp_names_match_exactly_else_loosely(sim, now):
    incident_id = sim.open(now - timedelta(hours=3))
    sim.resolve(incident_id, now - timedelta(hours=1))
    sim.set_timestamp(incident_id, 'Closed at', now - timedelta(minutes=10), touch=False)

    [incident] = reported(read(make_source(sim, resolved_timestamp='closed AT'), now - timedelta(days=1), now))
    assert incident.resolved_at == now - timedelta(minutes=10)


def test_a_timestamp_the_account_does_not_have_is_a_clear_error(sim, now):
    with pytest.raises(
        SourceError, match=r"no incident timestamp named 'Restored' \(`resolved_timestamp`\).*'Resolved at'"
    ):
        read(make_source(sim, resolved_timestamp='Restored'), now - timedelta(days=1), now)
    with pytest.raises(SourceError, match='`mitigated_timestamp`'):
        read(make_source(sim, restored_at='mitigated', mitigated_timestamp='Nope'), now - timedelta(days=1), now)
    # Without `restored_at: mitigated`, nor for the impact start, a missing timestamp is no error.
    read(make_source(sim, mitigated_timestamp='Nope', started_timestamp='Nope'), now - timedelta(days=1), now)


# -- what is a resolution --------------------------------------------------------------------------
def test_non_failures_are_not_reported(sim, now):
    ids = sim.open_non_failures(now - timedelta(hours=3), now - timedelta(hours=1))
    live = sim.open(now - timedelta(hours=2))
    sim.move(live, 'Fixing', now - timedelta(minutes=30))
    paused = sim.open(now - timedelta(hours=2))
    sim.move(paused, 'Paused', now - timedelta(minutes=30))

    batches = read(make_source(sim), now - timedelta(days=1), now)
    assert len(ids) == 6 and reported(batches) == [] and skipped(batches) == []


@pytest.mark.parametrize('mode', ['test', 'tutorial'])
@pytest.mark.parametrize('category', ['triage', 'declined', 'canceled', 'merged', 'live', 'paused'])
def test_non_failures_are_dropped_even_if_the_api_returned_them(mode, category):
    assert incident_io._resolved_category({'mode': mode, 'incident_status': {'category': 'closed'}}) is None
    assert incident_io._resolved_category({'mode': 'standard', 'incident_status': {'category': category}}) is None
    for kept in ('learning', 'closed'):
        assert incident_io._resolved_category({'mode': 'retrospective', 'incident_status': {'category': kept}}) == kept


def test_post_incident_is_resolved_and_closing_it_later_is_not_a_new_resolution(sim, now):
    incident_id = sim.open(now - timedelta(hours=5))
    sim.resolve(incident_id, now - timedelta(hours=4))  # to Documenting (post-incident)
    source = make_source(sim)
    [first] = reported(read(source, now - timedelta(days=1), now))
    sim.close(incident_id, now - timedelta(minutes=5))
    [again] = reported(read(source, now - timedelta(days=1), now))
    assert first.resolved_at == again.resolved_at == now - timedelta(hours=4)


def test_closed_without_a_resolution_time_is_resolved_at_closed_at(sim, now):
    closed = sim.open(now - timedelta(hours=5))
    sim.close(closed, now - timedelta(hours=2))  # straight to Closed: no "Resolved at"
    waiting = sim.open(now - timedelta(hours=5))
    sim.move(waiting, 'Documenting', now - timedelta(hours=2))  # post-incident, "Resolved at" unset

    [incident] = reported(read(make_source(sim), now - timedelta(days=1), now))
    assert incident.id == closed and incident.resolved_at == now - timedelta(hours=2)


def test_a_retrospective_incident_is_listed_when_it_is_entered_with_its_own_times(sim, now):
    incident_id = sim.open(now - timedelta(minutes=10), mode='retrospective')
    sim.set_timestamp(incident_id, 'Impact started', now - timedelta(days=3), touch=False)
    sim.resolve(incident_id, now - timedelta(days=2, hours=20))
    sim.close(incident_id, now - timedelta(minutes=10))

    [incident] = reported(read(make_source(sim), now - timedelta(hours=1), now))
    assert incident.resolved_at == now - timedelta(days=2, hours=20)  # the cursor decides if it is too late
    assert incident.restored_at - incident.started_at == timedelta(hours=4)


def test_a_retrospective_incident_without_impact_started_starts_at_reported_at(sim, now):
    incident_id = sim.enter_resolved(now - timedelta(hours=5), now - timedelta(hours=3))

    [incident] = reported(read(make_source(sim), now - timedelta(hours=1), later()))
    assert (incident.started_at, incident.resolved_at) == (now - timedelta(hours=5), now - timedelta(hours=3))
    assert incident.id == incident_id


def test_a_closed_incident_edited_later_keeps_its_closed_at(sim, now):
    closed = sim.open(now - timedelta(hours=5))
    sim.close(closed, now - timedelta(hours=2))  # straight to Closed: no "Resolved at"
    source = make_source(sim)
    [first] = reported(read(source, now - timedelta(days=1), now))
    sim.set_severity(closed, 'SEV2', now - timedelta(minutes=5))  # an edit two hours later

    [second] = reported(read(source, now - timedelta(days=1), now))
    assert first.resolved_at == second.resolved_at == first.restored_at == second.restored_at


def test_a_reopened_incident_resolved_again_is_a_new_resolution(sim, now):
    incident_id = sim.open(now - timedelta(hours=5))
    sim.resolve(incident_id, now - timedelta(hours=4))
    sim.reopen(incident_id, now - timedelta(hours=3))
    source = make_source(sim)
    assert reported(read(source, now - timedelta(days=1), now)) == []
    sim.resolve(incident_id, now - timedelta(hours=2))
    [incident] = reported(read(source, now - timedelta(days=1), now))
    assert incident.id == incident_id and incident.resolved_at == now - timedelta(hours=2)


def test_a_late_resolution_keeps_its_time(sim, now):
    incident_id = sim.open(now - timedelta(hours=5))
    sim.resolve(incident_id, now - timedelta(minutes=3), hidden=True)
    source = make_source(sim)
    assert reported(read(source, now - timedelta(minutes=10), now)) == []
    sim.reveal(incident_id)
    [incident] = reported(read(source, now - timedelta(minutes=10), later()))
    assert incident.resolved_at == now - timedelta(minutes=3)


# -- reading the list ------------------------------------------------------------------------------
def test_the_list_filters_on_update_time_and_resolved_categories(sim, now):
    incident_id = sim.open(now - timedelta(days=3))
    sim.resolve(incident_id, now - timedelta(hours=1))
    since = now - timedelta(hours=1)
    read(make_source(sim), since, now)

    [request] = [r for r in sim.requests if r.path == '/v2/incidents']
    assert request.headers['authorization'] == f'Bearer {sim.token}'
    assert sorted(request.query) == sorted(
        [
            ('page_size', '250'),
            ('updated_at[gte]', (since - timedelta(days=1)).date().isoformat()),  # a day early: any time zone
            ('updated_at[lte]', (now + timedelta(days=1)).date().isoformat()),
            ('status_category[one_of]', 'learning'),
            ('status_category[one_of]', 'closed'),
        ]
    )


def test_paging_follows_the_after_cursor(sim, now):
    ids = []
    for n in range(5):
        ids.append(sim.open(now - timedelta(hours=10 - n)))
        sim.resolve(ids[-1], now - timedelta(hours=5 - n))
    source = make_source(sim)
    source.page_size = 2

    batches = read(source, now - timedelta(days=1), now)
    assert [i.id for i in reported(batches)] == ids  # oldest resolution first
    afters = [dict(r.query).get('after') for r in sim.requests if r.path == '/v2/incidents']
    # Newest first, two a page: the third page holds the last one and no cursor.
    assert afters == [None, ids[3], ids[1]]


def test_a_long_lookback_is_read_in_windows_oldest_first(sim, now):
    old = sim.open(now - timedelta(days=70))
    sim.resolve(old, now - timedelta(days=65))
    recent = sim.open(now - timedelta(days=41))  # created long ago, resolved now
    sim.resolve(recent, now - timedelta(minutes=1))

    batches = read(make_source(sim), now - timedelta(days=70), now)
    assert [b.through for b in batches] == [now - timedelta(days=40), now - timedelta(days=10), now]
    assert [[i.id for i in b.incidents] for b in batches] == [[old], [], [recent]]
    gte = [dict(r.query)['updated_at[gte]'] for r in sim.requests if r.path == '/v2/incidents']
    assert gte == [(now - timedelta(days=d + 1)).date().isoformat() for d in (70, 40, 10)]


def test_a_window_with_more_than_a_batch_is_read_a_batch_at_a_time(sim, now, monkeypatch):
    """The date filter cannot narrow a window's pages: a full batch is handed over and the window goes on
    from the next page (the cursor keeps where), instead of being halved and read again."""
    monkeypatch.setattr(
        incident_io.IncidentIoSource, 'reading', replace(incident_io.IncidentIoSource.reading, max_per_batch=2)
    )
    ids = []
    for n in range(5):
        ids.append(sim.open(now - timedelta(hours=10)))
        sim.resolve(ids[-1], now - timedelta(hours=5 - n))
    source = make_source(sim)
    source.page_size = 2

    batches = read(source, now - timedelta(hours=8), now)
    assert [len(b.incidents) for b in batches] == [2, 2, 1]
    assert sorted(i.id for i in reported(batches)) == sorted(ids)
    assert [b.through for b in batches] == [now - timedelta(hours=8)] * 2 + [now]
    assert [b.resume is not None for b in batches] == [True, True, False]
    assert len([r for r in sim.requests if r.path == '/v2/incidents']) == 3  # nothing read twice


def test_a_rate_limit_is_waited_out(sim, now):
    incident_id = sim.open(now - timedelta(hours=3))
    sim.resolve(incident_id, now - timedelta(hours=1))
    sim.inject(sim.rate_limited(1))
    started = time.monotonic()
    assert [i.id for i in reported(read(make_source(sim), now - timedelta(days=1), now))] == [incident_id]
    assert time.monotonic() - started >= 0.9


def test_the_token_bucket_is_waited_out(sim, now):
    ids = []
    for n in range(4):
        ids.append(sim.open(now - timedelta(hours=3)))
        sim.resolve(ids[-1], now - timedelta(hours=2, minutes=n))
    sim.rate_limit = (3, 2.0)  # a bucket of 3 requests, refilled at 2 a second
    source = make_source(sim)
    source.page_size = 1

    assert sorted(i.id for i in reported(read(source, now - timedelta(days=1), now))) == sorted(ids)
    assert len(sim.requests) > 1 + 5  # the timestamps and five pages (the last one empty), and the 429s


# -- bad data and errors ---------------------------------------------------------------------------
def test_a_malformed_record_is_skipped_by_id_and_the_others_reported(sim, now):
    good = sim.open(now - timedelta(hours=3))
    sim.resolve(good, now - timedelta(hours=1))
    bad = sim.open(now - timedelta(hours=3))
    sim.resolve(bad, now - timedelta(hours=1))
    for name in ('Impact started', 'Reported at'):  # so that the start is `created_at`
        sim.set_timestamp(bad, name, None, touch=False)
    sim.mangle(bad, created_at='last Tuesday')
    nonsense = sim.open(now - timedelta(hours=3))
    sim.resolve(nonsense, now - timedelta(hours=1))
    sim.corrupt(nonsense)  # the driver's corruption: impact started a century later

    batches = read(make_source(sim), now - timedelta(days=40), now)  # two windows, each re-reading both
    assert [i.id for i in reported(batches)] == [good]
    by_id = {skip.id: skip for skip in skipped(batches)}
    assert sorted(by_id) == sorted([bad, nonsense])  # each window names them; the cursor counts them once
    assert by_id[bad] == Skipped('incident_io', bad, "`created_at` is not an ISO 8601 timestamp: 'last Tuesday'")
    assert 'before it started' in by_id[nonsense].reason and 'Impact started' in by_id[nonsense].reason
    assert sim.spec_violations and all('created_at' in v for v in sim.spec_violations)  # `mangle` breaks it
    sim.spec_violations.clear()


@pytest.mark.parametrize(
    'body, message',
    [
        (b'{"data": []}', 'without an `incidents` list'),
        (b'{"incidents": [], "pagination_meta": []}', '`pagination_meta` that is not an object'),
        (b'{"incidents": [{}], "pagination_meta": {"page_size": 25, "after": 7}}', '`pagination_meta.after`'),
        (b'<html>502 Bad Gateway</html>', 'not JSON'),
        (b'[]', 'not an object'),
    ],
)
def test_a_malformed_page_is_a_source_error(sim, now, body, message):
    sim.inject(Fault(status=200, body=body, path='/v2/incidents'))
    with pytest.raises(SourceError, match=message) as raised:
        read(make_source(sim), now - timedelta(days=1), now)
    assert '/v2/incidents' in str(raised.value)


def test_a_cursor_handed_out_twice_is_a_source_error(sim, now):
    page = b'{"incidents": [], "pagination_meta": {"page_size": 1, "after": "01JDX"}}'
    sim.inject(Fault(status=200, body=page.replace(b'[]', b'[{"id": "x"}]'), path='/v2/incidents', times=2))
    with pytest.raises(SourceError, match='twice'):
        read(make_source(sim), now - timedelta(days=1), now)


def test_a_rejected_key_names_the_option_and_not_the_key(sim, now):
    source = make_source(sim, api_token='inc_wrong_key_0123456789')
    with pytest.raises(CredentialsRejected) as raised:
        read(source, now - timedelta(days=1), now)
    message = str(raised.value)
    assert '`api_token`' in message and 'View data' in message and 'HTTP 401' in message
    assert 'inc_wrong_key_0123456789' not in message and sim.token not in message


def test_forbidden_names_the_role_needed(sim, now):
    sim.inject(Fault(status=403, body=b'{"type": "authorization_error", "status": 403, "errors": []}'))
    with pytest.raises(CredentialsRejected, match='`api_token` needs the "View data" role'):
        read(make_source(sim), now - timedelta(days=1), now)


# -- the simulator ---------------------------------------------------------------------------------
def test_the_simulator_rejects_what_incident_io_rejects(sim):
    import requests

    def get(query, token=sim.token):
        return requests.get(
            f'{sim.url}/v2/incidents', params=query, headers={'Authorization': f'Bearer {token}'}, timeout=TIMEOUT
        )

    assert get([('page_size', '251')]).status_code == 422  # the documented maximum is 250
    assert get([('updated_at[gt]', '2026-01-01')]).json()['errors'][0]['source'] == {'field': 'updated_at[gt]'}
    assert get([('status_categroy[one_of]', 'closed')]).status_code == 422
    assert get([]).status_code == 200 and get([], token='nope').json()['type'] == 'authentication_error'
    assert sim.spec_violations == []
    assert get([('page_size', 'many')]).status_code == 422  # the description itself rejects this one
    assert len(sim.spec_violations) == 1
    sim.spec_violations.clear()


def test_the_driver_interface(sim, now):
    assert (sim.source, sim.list_path, sim.max_page_size) == ('incident_io', '/v2/incidents', 250)
    assert sim.instance(initial_lookback=60) == {
        'source': 'incident_io',
        'api_token': sim.token,
        'api_url': sim.url,
        'team_field': 'Team',
        'initial_lookback': 60,
    }
    assert set(sim.expected_tags) == {'service', 'team', 'severity'}
    source = make_source(sim)
    since = now - timedelta(days=1)  # until `later()` at each read: a reveal, a reopening is stamped when made

    first = sim.open(now - timedelta(hours=2))
    sim.resolve(first, now - timedelta(minutes=2), hidden=True)
    assert reported(read(source, since, later())) == []
    sim.reveal(first)
    assert [i.resolved_at for i in reported(read(source, since, later()))] == [now - timedelta(minutes=2)]
    sim.reopen(first, now - timedelta(minutes=1))
    assert reported(read(source, since, later())) == []
    sim.resolve(first, now)
    assert [i.resolved_at for i in reported(read(source, since, later()))] == [now]

    second = sim.open(now - timedelta(hours=1))
    sim.resolve(second, now - timedelta(minutes=1))
    sim.corrupt(second)
    assert sim.open_non_failures(now - timedelta(hours=1), now - timedelta(minutes=1))
    batches = read(source, since, later())
    assert [i.id for i in reported(batches)] == [first] and [s.id for s in skipped(batches)] == [second]

    fault = sim.rate_limited(2)
    assert (fault.status, fault.path, fault.headers['Retry-After']) == (429, '/v2/incidents', '2')
    sim.inject(fault)
    with pytest.raises(SourceError, match='rate limit'):
        read(source, since, later(), left=0.5)  # a wait longer than the run may take ends the run
