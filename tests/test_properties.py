"""Property-based: whatever PagerDuty sends, a bad incident is skipped by name and never stalls the others."""

from datetime import datetime, timedelta, timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datadog_checks.dora_incidents.sources.pagerduty import PagerDutySource, is_incident_id
from datadog_checks.dora_incidents.sources.reader import Reader
from loopback.harness import instance_for, new_check
from loopback.intake import DatadogIntake
from loopback.pagerduty import PagerDutySimulator, iso

from .common import instance_config

NOW = datetime.now(timezone.utc).replace(microsecond=0)
FIELDS = [
    'id', 'status', 'created_at', 'resolved_at', 'service', 'teams', 'priority', 'urgency', 'title',
    'html_url', 'incident_number', 'resolve_reason',
]  # fmt: skip

timestamps = st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1))
anything = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)  # JSON carries neither
    | st.text(max_size=50)
    | st.text(min_size=5_000, max_size=20_000)
    | timestamps.map(lambda t: t.isoformat())  # no zone
    | timestamps.map(lambda t: t.replace(tzinfo=timezone.utc).isoformat())
    | st.sampled_from(['resolved', 'triggered', 'acknowledged', 'snoozed', 'RESOLVED', '']),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3),
    max_leaves=8,
)
mutations = st.dictionaries(st.sampled_from(FIELDS), anything | st.just(KeyError), max_size=4)


def valid_incident(n: int) -> dict:
    return {
        'id': f'PINC{n:05d}',
        'type': 'incident',
        'status': 'resolved',
        'incident_number': n,
        'title': 'Disk full',
        'html_url': f'https://acme.pagerduty.com/incidents/PINC{n:05d}',
        'created_at': iso(NOW - timedelta(hours=2)),
        'resolved_at': iso(NOW - timedelta(hours=1)),
        'urgency': 'high',
        'service': {'id': 'PSVC', 'summary': 'Checkout'},
        'teams': [{'id': 'PTEAM', 'summary': 'Payments'}],
        'priority': {'summary': 'P1'},
        'resolve_reason': None,
    }


def mutate(incident: dict, changes: dict) -> dict:
    for field, value in changes.items():
        if value is KeyError:
            incident.pop(field, None)
        else:
            incident[field] = value
    return incident


def source(**filters):
    config = instance_config(source='pagerduty', api_url='http://127.0.0.1:9', api_token='t', **filters)
    return PagerDutySource(config, None, config.api_url)


@settings(max_examples=300, deadline=None)
@given(st.lists(mutations, min_size=1, max_size=6))
def test_every_resolve_entry_becomes_an_incident_or_a_named_skip_or_is_not_reportable(changes):
    raw = [mutate(valid_incident(n), change) for n, change in enumerate(changes)]
    entries = [{'id': f'R{n}', 'type': 'resolve_log_entry', 'incident': incident} for n, incident in enumerate(raw)]
    entries.insert(0, {'id': 'R-good', 'type': 'resolve_log_entry', 'incident': valid_incident(99)})

    reader = Reader(source())
    batch = reader._batch(list(map(reader._read, entries)), NOW, NOW)

    assert 'PINC00099' in {incident.id for incident in batch.incidents}  # a bad neighbour never hides a good one
    for incident in batch.incidents:
        assert incident.started_at.tzinfo and incident.resolved_at.tzinfo
        assert incident.started_at <= incident.resolved_at <= NOW + timedelta(hours=1)
        assert len(incident.title) <= 500 and len(incident.id) <= 128
    for skipped in batch.skipped:
        assert skipped.reason and skipped.id
    reported = {i.id for i in batch.incidents} | {s.id for s in batch.skipped}
    for entry, incident in zip(entries[1:], raw):
        if not not_reportable(incident):
            has_id = isinstance(incident.get('id'), str) and incident['id']
            named = incident['id'][:64] if has_id else f'log entry {entry["id"]}'
            assert named in reported, f'{named} vanished without a warning'


def not_reportable(incident: dict) -> bool:
    """Still open (reopened), or merged into another: legitimately nothing to report or warn about."""
    reason = incident.get('resolve_reason')
    merged = isinstance(reason, dict) and reason.get('type') == 'merge_resolve_reason'
    valid_id = is_incident_id(incident.get('id'))  # the same rule the source applies
    return valid_id and (incident.get('status') in ('triggered', 'acknowledged') or merged)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(mutations, min_size=1, max_size=4))
def test_the_check_skips_bad_incidents_by_name_and_reports_the_rest(datadog_agent, changes):
    datadog_agent.reset()  # hypothesis runs many examples inside one test: each starts without a cursor
    with PagerDutySimulator() as pagerduty, DatadogIntake() as intake:
        pagerduty.add_service('PSVC', 'Checkout', teams=[('PTEAM', 'Payments')])
        good = pagerduty.trigger('PSVC', NOW - timedelta(hours=3))
        pagerduty.resolve(good, NOW - timedelta(hours=2))
        bad = []
        for change in changes:
            incident = pagerduty.trigger('PSVC', NOW - timedelta(hours=3))
            pagerduty.resolve(incident, NOW - timedelta(hours=2))
            pagerduty.corrupt(incident, **{k: v for k, v in change.items() if v is not KeyError and k != 'id'})
            bad.append(incident)
        check = new_check(instance_for(pagerduty, intake))

        assert check.run() == ''

        sent = {body['data']['attributes']['id'] for body in intake.failures}
        assert f'pagerduty:{good}' in sent
        for incident in bad:
            warned = any(incident in warning for warning in check.warnings)
            assert f'pagerduty:{incident}' in sent or warned or not_reportable(pagerduty.incidents[incident])
        assert intake.problems == []
