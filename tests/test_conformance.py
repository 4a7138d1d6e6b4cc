"""What every source must do, proven over HTTP against each tool's simulator (loopback/driver.py).

Parametrised from the check's registry (`SOURCES`): a tool added there runs these scenarios unchanged against
its simulator, `loopback/<source>.py`, and fails them loudly while it has none.
"""

import logging
import math
import time
from datetime import datetime, timedelta, timezone

import pytest

from datadog_checks.dora_incidents.sources import SOURCES, make_source, source_class
from datadog_checks.dora_incidents.sources.base import UPDATED
from loopback.server import Fault
from loopback.simulators import make_simulator, simulator_class
from loopback.spec import SPECS

from .common import (
    INCIDENTS_COUNT,
    LATENCY,
    MAX_RUN_TIME,
    NO_DEADLINE,
    TIME_TO_RESTORE,
    ago,
    counted,
    dora_ids,
    reporting_instance,
    restores,
    run_on_virtual_clock,
    secrets,
)

# The tools whose API lists by update time: they read late and corrected resolutions.
BY_UPDATE_TIME = sorted(name for name in SOURCES if source_class(name).reading.listing == UPDATED)


def running(name):
    simulator = make_simulator(name)
    with simulator:
        yield simulator
    assert simulator.spec_violations == [], 'the check sent requests (or got answers) the API description rejects'


@pytest.mark.parametrize('name', sorted(SOURCES))
def test_every_registered_tool_has_its_simulator_and_api_description(name):
    simulator = simulator_class(name)  # LookupError naming the missing `loopback/<name>.py`
    assert simulator.source == name and simulator.__module__ == f'loopback.{name}'
    assert (SPECS / f'{name}.json').is_file(), f'no API description loopback/specs/{name}.json'
    assert len(simulator.not_failures) >= 1 and simulator.expected_tags


@pytest.fixture(params=sorted(SOURCES))
def tool(request):
    yield from running(request.param)


@pytest.fixture(params=BY_UPDATE_TIME)
def late_tool(request):
    yield from running(request.param)


def settings_for(tool, intake):
    # DORA failures on for every tool (`datadog_incidents` sends none by default): the suite checks them too.
    # Neither the HTTP timeout nor the run's budget binds unless a test sets it (tests/common.py).
    return reporting_instance(tool, intake, send_dora_failures=True, max_run_time=MAX_RUN_TIME)


@pytest.fixture
def settings(tool, intake):
    return settings_for(tool, intake)


def reopening(tool):
    # A tool that never reopens a resolved incident (Splunk On-Call: a new alert opens a new one, which its own
    # tests prove) has no reopen scenario.
    if not tool.reopens:
        pytest.skip(f'{tool.source} never reopens a resolved incident')


def expected_tags(tool):
    tags = {'env': 'prod', **tool.expected_tags, 'source': tool.source}
    return sorted(f'{name}:{value}' for name, value in tags.items())


def resolved_incidents(tool, now, count, **open_options):
    incidents = []
    for n in range(count):
        incident = tool.open(ago(now, hours=3, seconds=n), **open_options)
        tool.resolve(incident, ago(now, hours=1, seconds=n))
        incidents.append(incident)
    return incidents


def test_first_run_reads_the_lookback_including_an_incident_created_40_days_ago(
    aggregator, make_check, run, tool, settings, intake, now
):
    old = tool.open(ago(now, days=40))
    tool.resolve(old, ago(now, seconds=1))
    outside = tool.open(ago(now, days=3))
    tool.resolve(outside, ago(now, days=2))  # before the 1-day initial lookback
    tool.open(ago(now, hours=2))  # still open

    assert run(make_check(settings)) == []

    assert restores(aggregator) == {old: [40 * 86400 - 1]}
    [point] = aggregator.metrics(TIME_TO_RESTORE)
    assert sorted(tag for tag in point.tags if not tag.startswith('incident_id:')) == expected_tags(tool)
    aggregator.assert_metric(INCIDENTS_COUNT, value=1, count=1)
    assert dora_ids(intake) == [f'{tool.source}:{old}']
    attributes = intake.failures[0]['data']['attributes']
    assert attributes['services'] == [tool.expected_tags['service']]
    assert attributes['severity'] == tool.expected_tags['severity']


def test_each_resolution_counts_once_across_runs_and_restarts(aggregator, make_check, run, tool, settings, intake, now):
    incidents = resolved_incidents(tool, now, 3)
    check = make_check(settings)
    run(check)
    run(check)
    later = tool.open(ago(now, hours=2))
    tool.resolve(later, ago(now, minutes=1))  # behind the watermark, within the overlap
    run(make_check(settings))  # the Agent restarted

    assert counted(aggregator) == 4
    assert {incident: len(values) for incident, values in restores(aggregator).items()} == dict.fromkeys(
        [*incidents, later], 1
    )
    assert sorted(dora_ids(intake)) == sorted(f'{tool.source}:{i}' for i in [*incidents, later])


def test_a_resolution_that_shows_up_late_is_still_reported_once(aggregator, make_check, run, tool, settings, now):
    incident = tool.open(ago(now, hours=1))
    tool.resolve(incident, ago(now, minutes=2), hidden=True)
    check = make_check(settings)
    run(check)
    assert restores(aggregator) == {}

    tool.reveal(incident)
    run(check)
    run(check)

    assert set(restores(aggregator)) == {incident} and counted(aggregator) == 1


@pytest.mark.parametrize('days_before', [0, 40], ids=['hours later', '40 days later'])
def test_a_reopened_incident_updates_its_failure_and_is_not_counted_again(
    aggregator, make_check, run, tool, settings, intake, now, days_before
):
    reopening(tool)
    incident = tool.open(ago(now, days=days_before, hours=3))
    tool.resolve(incident, ago(now, days=days_before, hours=2))
    check = make_check({**settings, 'initial_lookback': (days_before + 1) * 86400})
    run(check)
    tool.reopen(incident, ago(now, minutes=3))
    tool.resolve(incident, ago(now, minutes=1))  # within the overlap behind the watermark

    run(check)

    assert counted(aggregator) == 1
    assert len(restores(aggregator)[incident]) == 2
    [latest] = intake.latest_by_id().values()
    assert latest['finished_at'] == int(ago(now, minutes=1).timestamp()) * 10**9


def test_incidents_that_are_not_failures_are_not_reported(aggregator, make_check, run, tool, settings, intake, now):
    tool.open_non_failures(ago(now, hours=3), ago(now, hours=1))

    assert run(make_check(settings)) == []  # not a warning either: none of them is malformed

    assert restores(aggregator) == {} and intake.failures == []
    aggregator.assert_metric('dora.check.incidents.skipped', value=0)


def test_reading_past_one_page_with_a_rate_limit_in_the_middle(
    aggregator, make_check, run, tool, settings, intake, now
):
    incidents = resolved_incidents(tool, now, tool.max_page_size + 5)
    rate_limit = tool.rate_limited(seconds=1)
    rate_limit.skip = 1
    tool.inject(rate_limit)

    assert run(make_check(settings)) == []

    assert sorted(restores(aggregator)) == sorted(incidents) and counted(aggregator) == len(incidents)
    assert len([r for r in tool.requests if r.path == tool.list_path]) >= 3  # two pages and the retried one


@pytest.mark.parametrize(
    'fault',
    [
        {'status': 500, 'times': 3},
        {'status': 503, 'times': 3},
        {'truncate': True},
        {'reset': True},
        {'status': 200, 'body': b'<html>proxy error</html>', 'headers': {'Content-Type': 'text/html'}},
    ],
    ids=['500', '503', 'truncated', 'reset', 'html'],
)
def test_a_broken_answer_warns_loses_nothing_and_leaks_no_secret(
    aggregator, make_check, run, tool, settings, intake, now, caplog, fault
):
    caplog.set_level(logging.DEBUG)
    incidents = resolved_incidents(tool, now, 2)
    tool.inject(Fault(**fault, path=tool.list_path))
    check = make_check({**settings, 'log_requests': True})

    warnings = run(check)
    assert len(warnings) == 1 and 'Could not read' in warnings[0]
    aggregator.assert_metric('dora.check.source.can_connect', value=0)
    run(check)

    assert sorted(restores(aggregator)) == sorted(incidents) and counted(aggregator) == 2
    output = caplog.text + ''.join(warnings)
    assert [secret for secret in secrets(tool, intake) if secret in output] == []


def test_a_malformed_record_is_skipped_by_name_once(aggregator, make_check, run, tool, settings, now):
    bad, good = resolved_incidents(tool, now, 2)
    tool.corrupt(bad)
    check = make_check(settings)

    warnings = run(check)
    assert len(warnings) == 1 and bad in warnings[0]
    assert set(restores(aggregator)) == {good}
    aggregator.assert_metric('dora.check.incidents.skipped', value=1)
    aggregator.reset()

    assert run(check) == []  # re-read in the overlap: not warned about or counted again
    aggregator.assert_metric('dora.check.incidents.skipped', value=0)


def test_a_rejected_token_is_an_error_naming_the_option_not_the_token(aggregator, make_check, tool, settings, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = 'wrong-token-0123456789'

    credential = getattr(tool, 'credential', 'api_token')  # the option holding what the tool checks

    error = make_check({**settings, credential: wrong}).run()

    assert credential in error and wrong not in error + caplog.text
    aggregator.assert_metric('dora.check.source.can_connect', value=0)


def test_a_run_out_of_time_stops_after_a_batch_and_the_next_run_goes_on(
    aggregator, make_check, run, tool, settings, now
):
    old = tool.open(ago(now, days=70))
    tool.resolve(old, ago(now, days=65))  # the first 30-day window of a 70-day lookback
    recent = resolved_incidents(tool, now, 1)
    check = make_check({**settings, 'initial_lookback': 70 * 86400, 'max_run_time': 1})
    # On the check's own clock, whatever this machine's speed: each list request of the first run takes 1.2 s, past
    # the budget; then time stands still, and the next run's budget never ends.
    start, first_run = time.monotonic(), [math.inf]

    def lists():
        return sum(request.path == tool.list_path for request in tool.requests)

    before = lists()
    check.monotonic = lambda: start + 1.2 * min(lists() - before, first_run[0])

    warnings = run(check)

    assert any('Stopped after `max_run_time`' in warning for warning in warnings)
    assert set(restores(aggregator)) == {old}
    first_run[0] = lists() - before
    run(check)
    assert sorted(restores(aggregator)) == sorted([old, *recent]) and counted(aggregator) == 2


def test_resolutions_around_a_window_cut_are_each_reported_once(aggregator, make_check, run, tool, settings):
    from datetime import datetime, timezone

    moment = datetime.now(timezone.utc)  # with its microseconds: the cursor must still cut on whole seconds
    cut = moment - timedelta(days=10)  # where a 40-day lookback's first 30-day window ends
    incidents = []
    for offset in (-1.7, -0.3, 0.3, 1.7):
        incident = tool.open(cut - timedelta(hours=1))
        tool.resolve(incident, cut + timedelta(seconds=offset))
        incidents.append(incident)

    run(make_check({**settings, 'initial_lookback': 40 * 86400}))

    assert sorted(restores(aggregator)) == sorted(incidents) and counted(aggregator) == 4


def test_resolutions_at_a_window_cut_land_in_exactly_one_batch(make_check, tool, settings):
    check = make_check({**settings, 'initial_lookback': 40 * 86400})
    check.load_configuration_models()
    source = make_source(check.config, set(check.instance), check.http)
    until = datetime.now(timezone.utc).replace(microsecond=0)
    cut = until - timedelta(days=10)  # where the first 30-day window of [until - 40 days, until) ends
    incidents = []
    for offset in (-1.5, -0.5, 0, 0.5, 1.5):
        incident = tool.open(cut - timedelta(hours=1))
        tool.resolve(incident, cut + timedelta(seconds=offset))
        incidents.append(incident)

    batches = list(source.resolved(until - timedelta(days=40), until, NO_DEADLINE))

    assert len(batches) == 2 and batches[0].through == cut
    listed = [incident.id for batch in batches for incident in batch.incidents]
    assert sorted(listed) == sorted(incidents)  # each once: none in both batches, none in neither


def test_an_incident_reopened_after_its_resolution_is_not_a_failure_yet_nor_malformed(
    aggregator, make_check, run, tool, settings, now
):
    reopening(tool)
    incident = tool.open(ago(now, hours=3))
    tool.resolve(incident, ago(now, hours=2))
    tool.reopen(incident, ago(now, hours=1))
    check = make_check(settings)

    assert run(check) == []
    assert restores(aggregator) == {}
    aggregator.assert_metric('dora.check.incidents.skipped', value=0)
    tool.resolve(incident, ago(now, minutes=1))
    run(check)
    assert set(restores(aggregator)) == {incident} and counted(aggregator) == 1


def test_late_resolutions_count_once_and_corrections_update_without_counting(
    aggregator, make_check, run, late_tool, intake, now
):
    tool = late_tool
    settings = settings_for(tool, intake)
    # GitHub stamps a closure when it happens and lets nobody edit it: its only late resolutions are late labels.
    edits_times = tool.edits_times
    corrected = tool.open(ago(now, hours=4))
    tool.resolve(corrected, ago(now, hours=1))
    check = make_check(settings)
    run(check)
    assert counted(aggregator) == 1

    # After that run, entered now with times behind the cursor:
    retrospective = tool.enter_resolved(ago(now, hours=5), ago(now, hours=3))  # an incident already over
    backdated = tool.open(ago(now, hours=6))
    tool.resolve_backdated(backdated, ago(now, hours=2))  # resolved now, its resolve time set 2 h back
    if edits_times:
        tool.correct(corrected, resolved_at=ago(now, hours=1, minutes=30))  # the review moves it 30 min earlier
    too_late = tool.enter_resolved(ago(now, days=3), ago(now, days=2))  # behind the late-change horizon
    aggregator.reset()
    requests_before = len(tool.requests)
    run(check)
    run(check)  # nothing new: read again, recognised

    late = {retrospective: [2 * 3600], backdated: [4 * 3600]}
    assert (counted(aggregator), restores(aggregator)) == (
        2,
        {**late, corrected: [2.5 * 3600]} if edits_times else late,
    ), [retrospective, backdated, corrected]
    assert too_late not in dora_ids(intake)
    latest = intake.latest_by_id()[f'{tool.source}:{corrected}']
    resolved_at = ago(now, hours=1, minutes=30) if edits_times else ago(now, hours=1)
    assert latest['finished_at'] == int(resolved_at.timestamp()) * 10**9
    events = [e for e in aggregator.events if e['aggregation_key'] == f'dora_incidents:{tool.source}:{corrected}']
    assert [('corrected' in event['msg_title']) for event in events] == ([True] if edits_times else [])
    list_requests = [r for r in tool.requests[requests_before:] if r.path == tool.list_path]
    assert len(list_requests) == 2  # steady state: one request a run, nothing re-read from history


def test_a_backlog_with_latency_spreads_over_runs_within_the_budget(aggregator, make_check, run, tool, settings, now):
    """200 ms per request on a virtual clock (tests/common.py), so a 1-second budget allows 5 requests: a
    backlog of 11 pages, opened in one instant, takes several runs."""
    incidents = []
    count = 10 * tool.max_page_size + 5
    for n in range(count):
        incident = tool.open(ago(now, hours=21))
        tool.resolve(incident, ago(now, hours=20, seconds=-n * (18 * 3600 // count)))  # over 18 hours
        incidents.append(incident)
    settings = {**settings, 'max_run_time': 1, 'send_events': False, 'send_dora_failures': False}

    per_run, stopped = run_on_virtual_clock(make_check, run, tool, settings, aggregator, count)

    # The budget ended runs (GitHub reads this backlog in 7 requests: once at least; incident.io and Datadog
    # read their whole listing every run, so they may stop on the budget even once caught up).
    assert stopped >= 1, f'the backlog fit in one run: the budget was never exercised ({per_run})'
    # A request started before the deadline may end after it: one request of slack, never more.
    assert max(per_run) * LATENCY <= 1 + LATENCY, per_run
    assert sorted(restores(aggregator)) == sorted(incidents)
    assert all(len(values) == 1 for values in restores(aggregator).values())
    assert counted(aggregator) == count
